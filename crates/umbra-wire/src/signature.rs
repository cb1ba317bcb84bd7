//! Checking plain Ed25519 signatures: a device's (logins, registrations, a
//! business's card) and the server's signing key's (its verifications). The
//! server and the clients check them with this one function.

use ed25519_dalek::{Signature, VerifyingKey};

/// Whether `signature` is `key`'s over `message` (strict: no malleable or
/// small-order signatures).
pub fn verify(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let pk = k.verifying_key().to_bytes();
        let sig = k.sign(b"card").to_bytes();
        assert!(verify(&pk, b"card", &sig));
        assert!(!verify(&pk, b"card!", &sig));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert!(!verify(&other, b"card", &sig));
        assert!(!verify(&pk[..31], b"card", &sig));
        assert!(!verify(&pk, b"card", &sig[..63]));
    }
}
