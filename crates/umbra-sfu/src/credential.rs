//! Checking a join's credential: the relay credentials the messaging server
//! hands a logged-in member (the TURN REST scheme, `<unix expiry>:<random
//! token>` and `base64(HMAC-SHA1(secret, username))`), so the unit learns
//! neither the account nor the group, only that the server vouched for
//! the holder until the expiry.

use subtle::ConstantTimeEq;
use thiserror::Error;
use umbra_turn::credentials::{RestError, rest};

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not a credential this unit's server made (or a wrong password).
    #[error("the call credential is not valid here (ask the server for a fresh one)")]
    Invalid,
    /// It was, but its time is over.
    #[error("the call credential has expired (ask the server for a fresh one)")]
    Expired,
}

/// Checks `username` / `password` against `secret` at `now_unix`.
pub fn check(
    secret: &[u8],
    username: &str,
    password: &str,
    now_unix: u64,
) -> Result<(), CredentialError> {
    let expected = rest::password(secret, username);
    if !bool::from(expected.as_bytes().ct_eq(password.as_bytes())) {
        return Err(CredentialError::Invalid);
    }
    match rest::check_username(username, now_unix) {
        Ok(_) => Ok(()),
        Err(RestError::Expired) => Err(CredentialError::Expired),
        Err(_) => Err(CredentialError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_unexpired_credentials_pass() {
        let (user, pass) = rest::credentials(b"secret", 2_000, "tok");
        assert_eq!(check(b"secret", &user, &pass, 1_000), Ok(()));
        assert_eq!(
            check(b"secret", &user, &pass, 2_000),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            check(b"other", &user, &pass, 1_000),
            Err(CredentialError::Invalid)
        );
        // A later expiry written into the username breaks the password.
        let forged = user.replace("2000", "9000");
        assert_eq!(
            check(b"secret", &forged, &pass, 1_000),
            Err(CredentialError::Invalid)
        );
    }
}
