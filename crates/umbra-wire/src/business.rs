//! Business cards: the bytes each signature covers, and the shape rules a
//! profile must follow. The signatures themselves are checked by the server
//! (the business's, when the card is set) and by clients (both).

use crate::proto::{BusinessProfile, Verification};

/// What the business's signature covers: this, then the encoded profile.
pub const PROFILE_CONTEXT: &[u8] = b"umbra-business-profile-v1";
/// What the server's signature covers: this, then the encoded verification.
pub const VERIFICATION_CONTEXT: &[u8] = b"umbra-business-verified-v1";

/// How long a verification the server lists holds. The server signs it
/// afresh at each listing, so one the operator took back stops being shown
/// within this; a business's device fetches a fresh one before half of it
/// has gone.
pub const VERIFICATION_VALIDITY_SECS: u64 = 7 * 24 * 3600;

/// Most fields on a card.
pub const MAX_FIELDS: usize = 16;

/// The bytes signed for `encoded`, under `context`.
pub fn signed_bytes(context: &[u8], encoded: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + encoded.len());
    m.extend_from_slice(context);
    m.extend_from_slice(encoded);
    m
}

/// Why a profile is not a valid card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The display name is empty, too long or has control characters.
    #[error("a business's display name has 1 to 64 characters and no control characters")]
    DisplayName,
    /// Too many fields, or one is empty, too long or has control characters.
    #[error(
        "a business card has at most 16 fields, each a name of 1 to 32 characters and a value of up to 256"
    )]
    Fields,
    /// The identity key is not 32 bytes.
    #[error("the business card's identity key is not 32 bytes")]
    Key,
}

fn clean(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Checks the shape of a profile (not its signature).
pub fn check_profile(p: &BusinessProfile) -> Result<(), ProfileError> {
    let n = p.display_name.chars().count();
    if !(1..=64).contains(&n) || !clean(&p.display_name) || p.display_name.trim().is_empty() {
        return Err(ProfileError::DisplayName);
    }
    if p.fields.len() > MAX_FIELDS
        || p.fields.iter().any(|f| {
            !(1..=32).contains(&f.name.chars().count())
                || f.value.chars().count() > 256
                || !clean(&f.name)
                || !clean(&f.value)
        })
    {
        return Err(ProfileError::Fields);
    }
    if p.identity_key.len() != 32 {
        return Err(ProfileError::Key);
    }
    Ok(())
}

/// Whether `v` is a statement about exactly this profile (same account,
/// name and key).
pub fn verification_matches(v: &Verification, p: &BusinessProfile) -> bool {
    v.username == p.username && v.display_name == p.display_name && v.identity_key == p.identity_key
}

/// Whether `v` still holds at `now_unix` (it was not issued in the future,
/// beyond a day's clock skew, and has not run out).
pub fn verification_current(v: &Verification, now_unix: u64) -> bool {
    v.verified_unix <= now_unix.saturating_add(24 * 3600) && now_unix < v.expires_unix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::BusinessField;

    fn profile() -> BusinessProfile {
        BusinessProfile {
            username: "acme".into(),
            display_name: "Acme Shop".into(),
            identity_key: vec![1; 32],
            fields: vec![BusinessField {
                name: "website".into(),
                value: "https://acme.example".into(),
            }],
            updated_unix: 1,
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(check_profile(&profile()), Ok(()));
        for bad in ["", " ", "a\nb", &"x".repeat(65)] {
            let p = BusinessProfile {
                display_name: bad.into(),
                ..profile()
            };
            assert_eq!(check_profile(&p), Err(ProfileError::DisplayName), "{bad:?}");
        }
        let mut p = profile();
        p.fields[0].value = "x".repeat(257);
        assert_eq!(check_profile(&p), Err(ProfileError::Fields));
        let mut p = profile();
        p.identity_key.pop();
        assert_eq!(check_profile(&p), Err(ProfileError::Key));
    }

    #[test]
    fn a_verification_is_about_one_name_and_key() {
        let p = profile();
        let v = Verification {
            username: "acme".into(),
            display_name: "Acme Shop".into(),
            identity_key: vec![1; 32],
            verified_unix: 5,
            expires_unix: 100,
        };
        assert!(verification_matches(&v, &p));
        assert!(verification_current(&v, 50));
        assert!(!verification_current(&v, 100), "run out");
        let renamed = BusinessProfile {
            display_name: "Acme Bank".into(),
            ..p.clone()
        };
        assert!(!verification_matches(&v, &renamed));
        let rekeyed = BusinessProfile {
            identity_key: vec![2; 32],
            ..p
        };
        assert!(!verification_matches(&v, &rekeyed));
    }
}
