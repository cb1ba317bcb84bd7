//! Checks on what clients send: usernames and Ed25519 signatures.

/// Domain separator of registration signatures.
pub const REGISTER_CONTEXT: &[u8] = b"umbra-register-v1";
/// Domain separator of login signatures.
pub const LOGIN_CONTEXT: &[u8] = b"umbra-login-v1";

/// `^[a-z][a-z0-9_.-]{2,31}$`
pub fn valid_username(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..].iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// Verifies `signature` by `key` over the concatenation of `parts`
/// (strict verification: no malleable or small-order signatures).
pub fn verify(key: &[u8], parts: &[&[u8]], signature: &[u8]) -> bool {
    umbra_wire::signature::verify(key, &parts.concat(), signature)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "alice_1.x-y", "a2345678901234567890123456789012"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "Alice",
            "a b c",
            "",
            "a23456789012345678901234567890123",
            "ab\u{e9}",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn signatures() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let pk = sk.verifying_key().to_bytes();
        let sig = sk.sign(b"hello world").to_bytes();
        assert!(verify(&pk, &[b"hello ", b"world"], &sig));
        assert!(!verify(&pk, &[b"hello"], &sig));
        assert!(!verify(&pk[..31], &[b"hello world"], &sig));
        assert!(!verify(&pk, &[b"hello world"], &sig[..63]));
    }
}
