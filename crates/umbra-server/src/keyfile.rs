//! The server's Noise static key, created on first start in `data_dir/server.key`
//! (hex of the private half, mode 0600) and reused afterwards.

use std::path::Path;

use anyhow::Context;
use umbra_wire::noise::Keypair;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "server.key";

/// Loads the key from `data_dir`, creating it if it does not exist.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join(KEY_FILE);
    // Any 32 random bytes are an X25519 private key (clamped where used).
    let (private, created) = umbra_daemon::keyfile::load_or_create(&path, || {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        k
    })?;
    if created {
        tracing::info!("created a new server key");
    }
    Keypair::from_private(&private)
        .with_context(|| format!("{} does not hold a usable key", path.display()))
}
