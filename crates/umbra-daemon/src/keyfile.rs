//! A daemon's long-lived private key in a file: 32 bytes as hex, mode 0600,
//! created on first start and reused afterwards (the messaging server's
//! Noise key, the forwarding unit's).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the key could not be had.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or creating the file failed.
    #[error("cannot use key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds something other than 64 hex digits.
    #[error("{path} does not hold a 32-byte hex key (delete it to make a new one)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// Loads the key at `path`, or creates it with `generate` if there is no
/// file. The flag says whether it was created.
pub fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> [u8; 32],
) -> Result<([u8; 32], bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = hex::decode(text.trim())
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| KeyFileError::Malformed {
                    path: path.to_path_buf(),
                })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            writeln!(f, "{}", hex::encode(key)).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok((key, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("some.key");
        let (a, created) = load_or_create(&path, || [7; 32]).expect("create");
        assert!(created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = load_or_create(&path, || [8; 32]).expect("load");
        assert!(!created);
        assert_eq!(a, b);
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("some.key");
        std::fs::write(&path, "not hex\n").expect("write");
        let err = load_or_create(&path, || [7; 32]).expect_err("damaged");
        assert!(matches!(err, KeyFileError::Malformed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "not hex\n");
    }
}
