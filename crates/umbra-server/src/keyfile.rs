//! The server's Noise static key, created on first start in `data_dir/server.key`
//! (hex of the private half, mode 0600) and reused afterwards.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use umbra_wire::noise::Keypair;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "server.key";

/// Loads the key from `data_dir`, creating it if it does not exist.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let private = hex::decode(text.trim())
                .with_context(|| format!("{} is not a hex-encoded key", path.display()))?;
            Keypair::from_private(&private)
                .with_context(|| format!("{} does not hold a 32-byte key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = Keypair::generate().context("generating the server key")?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(f, "{}", hex::encode(kp.private))?;
            f.sync_all()?;
            tracing::info!("created a new server key");
            Ok(kp)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).expect("load");
        assert_eq!(a.public, b.public);
    }
}
