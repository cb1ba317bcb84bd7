//! Long-term credentials (RFC 8489 §9.2): key derivation for the MD5 and SHA-256 password
//! algorithms, USERHASH, and the TURN REST "use-auth-secret" scheme, where the username is
//! `"<unix-expiry>:<token>"` and the password is `base64(HMAC-SHA1(secret, username))`.
//!
//! Strings are used as given: OpaqueString/SASLprep preparation (RFC 8265) is the
//! caller's job (for ASCII credentials, which the REST scheme produces, it is a no-op).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use thiserror::Error;

use crate::attribute::PasswordAlgorithm;

/// A long-term credential key: MD5 (16 bytes) or SHA-256 (32 bytes) of
/// `username ":" realm ":" password`. Used as the HMAC key of MESSAGE-INTEGRITY(-SHA256).
#[derive(Clone, PartialEq, Eq)]
pub struct LongTermKey {
    algorithm: PasswordAlgorithm,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("LongTermKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl LongTermKey {
    /// Derives the key; `None` for an algorithm this crate does not implement.
    pub fn derive(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Option<LongTermKey> {
        let parts: [&[u8]; 5] = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        let bytes = match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            PasswordAlgorithm::Other(_) => return None,
        };
        Some(LongTermKey { algorithm, bytes })
    }

    /// A key from raw bytes (e.g. stored pre-hashed, as coturn's `turnadmin` does).
    pub fn from_bytes(algorithm: PasswordAlgorithm, bytes: Vec<u8>) -> LongTermKey {
        LongTermKey { algorithm, bytes }
    }

    /// The algorithm the key was derived with.
    pub fn algorithm(&self) -> PasswordAlgorithm {
        self.algorithm
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// USERHASH = SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// Why a TURN REST username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RestError {
    /// The username is not `"<unix-expiry>:<token>"`.
    #[error("malformed time-limited username")]
    Malformed,
    /// The expiry time has passed.
    #[error("time-limited credentials expired")]
    Expired,
}

/// The TURN REST (coturn `use-auth-secret`) time-limited credential scheme.
pub mod rest {
    use super::*;

    /// Builds the username `"<expiry_unix>:<token>"`.
    pub fn username(expiry_unix: u64, token: &str) -> String {
        format!("{expiry_unix}:{token}")
    }

    /// The password for `username`: `base64(HMAC-SHA1(secret, username))`.
    pub fn password(secret: &[u8], username: &str) -> String {
        STANDARD.encode(crate::integrity::hmac_sha1(secret, &[username.as_bytes()]))
    }

    /// Username and password valid until `expiry_unix`.
    pub fn credentials(secret: &[u8], expiry_unix: u64, token: &str) -> (String, String) {
        let user = username(expiry_unix, token);
        let pass = password(secret, &user);
        (user, pass)
    }

    /// Checks the expiry embedded in `username` against `now_unix` (seconds since the Unix
    /// epoch, supplied by the caller). Returns the expiry.
    pub fn check_username(username: &str, now_unix: u64) -> Result<u64, RestError> {
        let (expiry, _token) = username.split_once(':').unwrap_or((username, ""));
        let expiry: u64 = expiry.parse().map_err(|_| RestError::Malformed)?;
        if expiry <= now_unix {
            return Err(RestError::Expired);
        }
        Ok(expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_known_value() {
        // MD5("user:realm:pass")
        let k = LongTermKey::derive(PasswordAlgorithm::Md5, "user", "realm", "pass").expect("md5");
        assert_eq!(k.as_bytes().len(), 16);
        let k2 = LongTermKey::derive(PasswordAlgorithm::Sha256, "user", "realm", "pass")
            .expect("sha256");
        assert_eq!(k2.as_bytes().len(), 32);
        assert!(LongTermKey::derive(PasswordAlgorithm::Other(9), "u", "r", "p").is_none());
        assert!(
            !format!("{k:?}").contains(&format!("{}", k.as_bytes()[0]))
                || format!("{k:?}").len() < 60
        );
    }

    #[test]
    fn rest_scheme() {
        let (u, p) = rest::credentials(b"north", 1_700_000_000, "alice");
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, rest::password(b"north", "1700000000:alice"));
        assert_eq!(rest::check_username(&u, 1_600_000_000), Ok(1_700_000_000));
        assert_eq!(
            rest::check_username(&u, 1_700_000_000),
            Err(RestError::Expired)
        );
        assert_eq!(rest::check_username("alice", 0), Err(RestError::Malformed));
        assert_eq!(rest::check_username("17:", 3), Ok(17));
    }
}
