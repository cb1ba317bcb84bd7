//! A profile's key, and what keeps it.
//!
//! `DIR/profile.db` is encrypted as a whole (SQLCipher: every page, the WAL's
//! included) under a random 32-byte data key. `DIR/profile.key` keeps that
//! key: sealed with ChaCha20-Poly1305 under a key derived from the user's
//! passphrase by Argon2id (salt and cost written beside it), or, when the
//! owner chose no passphrase, as it is. Changing the passphrase reseals the
//! data key and never touches the database, so it is quick, and safe while
//! other `umbra` commands use the profile. A profile made before profiles were
//! encrypted has no key file and opens as it is (unencrypted).

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ClientError;

/// The key file's name in a profile directory.
pub const KEY_FILE: &str = "profile.key";

/// Argon2id's memory for a new passphrase, in KiB (64 MiB).
const MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id's passes over that memory.
const PASSES: u32 = 3;
/// Argon2id's lanes: one, as a command derives on one thread.
const LANES: u32 = 1;
/// The most memory a key file may ask for (1 GiB), so a planted file cannot
/// make a command exhaust the machine.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes a key file may ask for.
const MAX_PASSES: u32 = 64;
/// What the seal is bound to, besides the cost and salt.
const CONTEXT: &[u8] = b"umbra-profile-key-v1";

/// The database's key (zeroed when dropped; never printed).
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// The statements that open the database with this key: a raw key
    /// (SQLCipher derives nothing more from it), and pages authenticated with
    /// HMAC-SHA256 instead of SQLCipher 4's default HMAC-SHA512, which was
    /// a fifth of the business host's sending thread (SHA-256 has CPU
    /// instructions on current x86 and ARM machines; SHA-512 does not).
    /// Every connection must say the same: it is part of the file's format.
    pub(crate) fn pragmas(&self) -> Zeroizing<String> {
        let hex = Zeroizing::new(hex::encode(&self.0[..]));
        Zeroizing::new(format!(
            "PRAGMA key = \"x'{}'\"; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;",
            hex.as_str()
        ))
    }
}

/// How a profile's data is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Encrypted; the key is sealed under a passphrase.
    Passphrase,
    /// Encrypted, but the key lies beside the data: anyone who copies the
    /// directory can read it.
    NoPassphrase,
    /// Made before profiles were encrypted: not encrypted at all.
    Unencrypted,
}

/// The key file as written.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Stored {
    /// The data key sealed under Argon2id(passphrase, salt).
    Passphrase {
        memory_kib: u32,
        passes: u32,
        lanes: u32,
        salt: String,
        nonce: String,
        sealed: String,
    },
    /// The data key as it is (no passphrase).
    Unprotected { key: String },
}

/// The key file of the profile in `dir`.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// How the profile in `dir` is protected, or `None` when there is no
/// profile there yet.
pub fn protection(dir: &Path) -> Result<Option<Protection>, ClientError> {
    match read(dir)? {
        Some(Stored::Passphrase { .. }) => Ok(Some(Protection::Passphrase)),
        Some(Stored::Unprotected { .. }) => Ok(Some(Protection::NoPassphrase)),
        None if dir.join("profile.db").exists() => Ok(Some(Protection::Unencrypted)),
        None => Ok(None),
    }
}

/// The data key of the profile in `dir`, or `None` for a profile made
/// before profiles were encrypted. A profile with a passphrase needs it:
/// without it [`ClientError::PassphraseNeeded`], and a wrong one
/// [`ClientError::WrongPassphrase`]; neither changes anything.
pub fn unlock(dir: &Path, passphrase: Option<&str>) -> Result<Option<DataKey>, ClientError> {
    let Some(stored) = read(dir)? else {
        return Ok(None);
    };
    match stored {
        Stored::Unprotected { key } => Ok(Some(key_from_hex(dir, &key)?)),
        Stored::Passphrase {
            memory_kib,
            passes,
            lanes,
            salt,
            nonce,
            sealed,
        } => {
            let Some(passphrase) = passphrase else {
                return Err(ClientError::PassphraseNeeded(dir.to_path_buf()));
            };
            let cost = Cost {
                memory_kib,
                passes,
                lanes,
            };
            let salt = bytes(dir, &salt)?;
            let nonce: [u8; 12] = bytes(dir, &nonce)?
                .try_into()
                .map_err(|_| corrupt(dir, "the nonce is not 12 bytes"))?;
            let kek = derive(dir, passphrase, &cost, &salt)?;
            let aad = context(&cost, &salt);
            let plain = Zeroizing::new(
                ChaCha20Poly1305::new((&*kek).into())
                    .decrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &bytes(dir, &sealed)?,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| ClientError::WrongPassphrase(dir.to_path_buf()))?,
            );
            let key: [u8; 32] = plain[..]
                .try_into()
                .map_err(|_| corrupt(dir, "the sealed key is not 32 bytes"))?;
            Ok(Some(DataKey(Zeroizing::new(key))))
        }
    }
}

/// Makes a key for a new profile in `dir` and keeps it under `passphrase`
/// (or with none). Refuses when the directory already has a key file.
pub fn create(dir: &Path, passphrase: Option<&str>) -> Result<DataKey, ClientError> {
    if key_path(dir).exists() {
        return Err(corrupt(dir, "a key file is already there"));
    }
    let key = DataKey::random();
    keep(dir, &key, passphrase)?;
    Ok(key)
}

/// Keeps `key` under `passphrase` from now on (or with none), replacing the
/// key file in one step (a crash leaves the old file or the new one).
pub fn keep(dir: &Path, key: &DataKey, passphrase: Option<&str>) -> Result<(), ClientError> {
    let stored = match passphrase {
        None => Stored::Unprotected {
            key: hex::encode(&key.0[..]),
        },
        Some(passphrase) => {
            let cost = Cost {
                memory_kib: MEMORY_KIB,
                passes: PASSES,
                lanes: LANES,
            };
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let kek = derive(dir, passphrase, &cost, &salt)?;
            let sealed = ChaCha20Poly1305::new((&*kek).into())
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &key.0[..],
                        aad: &context(&cost, &salt),
                    },
                )
                .map_err(|_| corrupt(dir, "sealing failed"))?;
            Stored::Passphrase {
                memory_kib: cost.memory_kib,
                passes: cost.passes,
                lanes: cost.lanes,
                salt: hex::encode(salt),
                nonce: hex::encode(nonce),
                sealed: hex::encode(sealed),
            }
        }
    };
    let text = Zeroizing::new(
        serde_json::to_string_pretty(&stored).map_err(|e| corrupt(dir, &e.to_string()))? + "\n",
    );
    write_atomically(&key_path(dir), text.as_bytes())?;
    Ok(())
}

/// Argon2id's cost, as the key file states it.
struct Cost {
    memory_kib: u32,
    passes: u32,
    lanes: u32,
}

fn derive(
    dir: &Path,
    passphrase: &str,
    cost: &Cost,
    salt: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ClientError> {
    if cost.memory_kib > MAX_MEMORY_KIB || cost.passes > MAX_PASSES || cost.lanes > 16 {
        return Err(corrupt(dir, "it asks for more work than any umbra writes"));
    }
    let params = Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32))
        .map_err(|e| corrupt(dir, &format!("its cost is not valid ({e})")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut out[..])
        .map_err(|e| corrupt(dir, &format!("its salt is not valid ({e})")))?;
    Ok(out)
}

/// What the seal binds: a file whose cost or salt was changed does not open.
fn context(cost: &Cost, salt: &[u8]) -> Vec<u8> {
    let mut aad = CONTEXT.to_vec();
    for n in [cost.memory_kib, cost.passes, cost.lanes] {
        aad.extend_from_slice(&n.to_be_bytes());
    }
    aad.extend_from_slice(salt);
    aad
}

fn read(dir: &Path) -> Result<Option<Stored>, ClientError> {
    let text = match std::fs::read_to_string(key_path(dir)) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| corrupt(dir, &e.to_string()))
}

fn key_from_hex(dir: &Path, text: &str) -> Result<DataKey, ClientError> {
    let raw = Zeroizing::new(bytes(dir, text)?);
    let key: [u8; 32] = raw[..]
        .try_into()
        .map_err(|_| corrupt(dir, "the key is not 32 bytes"))?;
    Ok(DataKey(Zeroizing::new(key)))
}

fn bytes(dir: &Path, text: &str) -> Result<Vec<u8>, ClientError> {
    hex::decode(text).map_err(|_| corrupt(dir, "a field is not hex"))
}

fn corrupt(dir: &Path, why: &str) -> ClientError {
    ClientError::KeyFile {
        path: key_path(dir),
        why: why.to_string(),
    }
}

/// Writes `bytes` to `path` through a private temporary file, synced, then
/// renamed over it, and the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_opens_what_it_sealed_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let key = create(dir.path(), Some("correct horse")).unwrap();
        assert_eq!(
            protection(dir.path()).unwrap(),
            Some(Protection::Passphrase)
        );
        let again = unlock(dir.path(), Some("correct horse")).unwrap().unwrap();
        assert_eq!(key.0[..], again.0[..]);
        assert!(matches!(
            unlock(dir.path(), Some("correct horsE")),
            Err(ClientError::WrongPassphrase(_))
        ));
        assert!(matches!(
            unlock(dir.path(), None),
            Err(ClientError::PassphraseNeeded(_))
        ));
        let text = std::fs::read_to_string(key_path(dir.path())).unwrap();
        assert!(!text.contains(&hex::encode(&key.0[..])), "{text}");
    }

    #[test]
    fn a_new_passphrase_keeps_the_key_and_the_old_one_stops_working() {
        let dir = tempfile::tempdir().unwrap();
        let key = create(dir.path(), None).unwrap();
        assert_eq!(
            protection(dir.path()).unwrap(),
            Some(Protection::NoPassphrase)
        );
        keep(dir.path(), &key, Some("first")).unwrap();
        keep(dir.path(), &key, Some("second")).unwrap();
        assert!(matches!(
            unlock(dir.path(), Some("first")),
            Err(ClientError::WrongPassphrase(_))
        ));
        let again = unlock(dir.path(), Some("second")).unwrap().unwrap();
        assert_eq!(key.0[..], again.0[..]);
        assert!(!key_path(dir.path()).with_extension("key.tmp").exists());
    }

    #[test]
    fn a_key_file_whose_cost_or_salt_was_changed_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), Some("pass")).unwrap();
        let text = std::fs::read_to_string(key_path(dir.path())).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["passes"] = 2.into();
        std::fs::write(key_path(dir.path()), v.to_string()).unwrap();
        assert!(matches!(
            unlock(dir.path(), Some("pass")),
            Err(ClientError::WrongPassphrase(_))
        ));
        v["passes"] = 1_000_000.into();
        std::fs::write(key_path(dir.path()), v.to_string()).unwrap();
        let e = unlock(dir.path(), Some("pass")).unwrap_err();
        assert!(matches!(e, ClientError::KeyFile { .. }), "{e}");
        std::fs::write(key_path(dir.path()), "{").unwrap();
        let e = unlock(dir.path(), Some("pass")).unwrap_err();
        assert!(matches!(e, ClientError::KeyFile { .. }), "{e}");
    }
}
