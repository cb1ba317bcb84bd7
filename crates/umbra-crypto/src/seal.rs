//! Sealed envelopes: what the server stores and forwards.
//!
//! `0x01 || ephemeral X25519 public (32) || ChaCha20-Poly1305(key, nonce 0, plaintext)`
//! with `key = HKDF-SHA256(salt = eph_pub || recipient_pub, ikm = X25519(eph, recipient),
//! info = "umbra-seal-v1")`. A fresh ephemeral key per envelope means each key
//! encrypts exactly once, so the fixed nonce is safe. The sender's identity is
//! not part of the envelope: it travels inside, authenticated by MLS.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};

use crate::CryptoError;

const VERSION: u8 = 1;
const INFO: &[u8] = b"umbra-seal-v1";
/// Bytes a sealed envelope adds to its plaintext.
pub const OVERHEAD: usize = 1 + 32 + 16;

fn derive(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = [0u8; 32];
    // 32 bytes is a valid HKDF-SHA256 output length.
    #[allow(clippy::unwrap_used)]
    hk.expand(INFO, &mut key).unwrap();
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// Seals `plaintext` to the device whose sealing key is `recipient`.
pub fn seal(recipient: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let eph = EphemeralSecret::random_from_rng(OsRng);
    let eph_pub = PublicKey::from(&eph);
    let recipient_pk = PublicKey::from(*recipient);
    let shared = eph.diffie_hellman(&recipient_pk);
    if !shared.was_contributory() {
        return Err(CryptoError::InvalidKey);
    }
    let cipher = derive(shared.as_bytes(), eph_pub.as_bytes(), recipient);
    let ct = cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), plaintext)
        .map_err(|_| CryptoError::SealFormat("plaintext too large"))?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(eph_pub.as_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens an envelope sealed to `secret`.
pub fn open(secret: &StaticSecret, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < OVERHEAD {
        return Err(CryptoError::SealFormat("too short"));
    }
    if sealed[0] != VERSION {
        return Err(CryptoError::SealFormat("unknown format version"));
    }
    let mut eph = [0u8; 32];
    eph.copy_from_slice(&sealed[1..33]);
    let shared = secret.diffie_hellman(&PublicKey::from(eph));
    if !shared.was_contributory() {
        return Err(CryptoError::SealOpen);
    }
    let recipient = PublicKey::from(secret);
    let cipher = derive(shared.as_bytes(), &eph, recipient.as_bytes());
    cipher
        .decrypt(Nonce::from_slice(&[0u8; 12]), &sealed[33..])
        .map_err(|_| CryptoError::SealOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let sk = StaticSecret::random_from_rng(OsRng);
        let pk = PublicKey::from(&sk).to_bytes();
        let sealed = seal(&pk, b"hello bob").expect("seal");
        assert_eq!(sealed.len(), OVERHEAD + 9);
        assert_eq!(open(&sk, &sealed).expect("open"), b"hello bob");
        // Two seals of the same plaintext differ (fresh ephemeral key).
        assert_ne!(seal(&pk, b"hello bob").expect("seal"), sealed);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&sk, &bad).is_err(), "tampered byte {i} accepted");
        }
        let other = StaticSecret::random_from_rng(OsRng);
        assert!(matches!(open(&other, &sealed), Err(CryptoError::SealOpen)));
        assert!(matches!(
            open(&sk, &sealed[..10]),
            Err(CryptoError::SealFormat(_))
        ));
    }

    #[test]
    fn low_order_recipient_key_is_refused() {
        assert!(matches!(
            seal(&[0u8; 32], b"x"),
            Err(CryptoError::InvalidKey)
        ));
    }
}
