//! The Noise channels' ChaCha20-Poly1305, from `ring`.
//!
//! snow's built-in cipher (RustCrypto's portable and AVX2 code) spent a
//! third of a busy server's time on the short messages a channel carries;
//! ring's assembly does the same work in a fraction of it (see
//! docs/BENCHMARKS.md, issue 12). The rest of the Noise suite (X25519,
//! BLAKE2s, the random source) stays snow's own.
//!
//! Each direction keeps only its 32-byte key. ring's key object is made
//! for each message (it copies the key; ChaCha20 has no schedule to
//! expand), because it is sized for AES's key schedule and an idle
//! connection must stay small.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// snow's resolver, with ring's ChaCha20-Poly1305 in place of its own.
pub(crate) fn resolver() -> BoxedCryptoResolver {
    Box::new(FallbackResolver::new(
        Box::new(RingAead),
        Box::new(DefaultResolver),
    ))
}

/// Resolves the cipher only; everything else falls back to snow's.
struct RingAead;

impl CryptoResolver for RingAead {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        None
    }

    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        None
    }

    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::new(ChaChaPoly { key: [0; KEY_LEN] })),
            _ => None,
        }
    }
}

/// One direction's key.
struct ChaChaPoly {
    key: [u8; KEY_LEN],
}

impl Drop for ChaChaPoly {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ChaChaPoly {
    fn sealing_key(&self) -> LessSafeKey {
        // The key is KEY_LEN bytes by its type: the only way `new` fails
        // is a wrong length.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte key");
        LessSafeKey::new(key)
    }
}

/// Noise's ChaChaPoly nonce: 32 zero bits, then the counter little-endian.
fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key = *key;
    }

    fn encrypt(&self, n: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        // snow sizes `out` for the plaintext and its tag.
        let len = plaintext.len();
        out[..len].copy_from_slice(plaintext);
        let sealed = self.sealing_key().seal_in_place_separate_tag(
            nonce(n),
            Aad::from(authtext),
            &mut out[..len],
        );
        match sealed {
            Ok(tag) => {
                out[len..len + TAG_LEN].copy_from_slice(tag.as_ref());
                len + TAG_LEN
            }
            // ring refuses only a message longer than ChaCha20's 256 GiB
            // counter space; a Noise message is at most 64 KiB. Should it
            // ever happen, nothing readable goes out: an empty message
            // fails the peer's check and closes the channel.
            Err(_) => {
                out[..len].fill(0);
                0
            }
        }
    }

    fn decrypt(
        &self,
        n: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let Some(len) = ciphertext.len().checked_sub(TAG_LEN) else {
            return Err(snow::Error::Decrypt);
        };
        let Some(out) = out.get_mut(..len) else {
            return Err(snow::Error::Decrypt);
        };
        out.copy_from_slice(&ciphertext[..len]);
        let tag = Tag::try_from(&ciphertext[len..]).map_err(|_| snow::Error::Decrypt)?;
        let opened = self.sealing_key().open_in_place_separate_tag(
            nonce(n),
            Aad::from(authtext),
            tag,
            out,
            0..,
        );
        match opened {
            Ok(plain) => Ok(plain.len()),
            Err(_) => {
                out.fill(0);
                Err(snow::Error::Decrypt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};

    /// Byte for byte what RustCrypto's ChaCha20-Poly1305 (snow's own, which
    /// earlier versions used) makes with Noise's nonce layout, so old and
    /// new peers understand each other.
    #[test]
    fn agrees_with_snows_own_cipher_both_ways() {
        let key = [0x42u8; KEY_LEN];
        let mut ours = ChaChaPoly { key: [0; KEY_LEN] };
        ours.set(&key);
        let reference = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        for (n, len) in [(0u64, 0usize), (1, 1), (7, 255), (u64::MAX - 1, 4096)] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ad = b"handshake hash";
            let mut sealed = vec![0u8; len + TAG_LEN];
            assert_eq!(ours.encrypt(n, ad, &plain, &mut sealed), len + TAG_LEN);

            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            let mut theirs = plain.clone();
            let tag = reference
                .encrypt_in_place_detached(&nonce.into(), ad, &mut theirs)
                .expect("seal");
            assert_eq!(&sealed[..len], &theirs[..]);
            assert_eq!(&sealed[len..], tag.as_slice());

            let mut opened = vec![0u8; len];
            assert_eq!(ours.decrypt(n, ad, &sealed, &mut opened).ok(), Some(len));
            assert_eq!(opened, plain);
        }
    }

    #[test]
    fn a_changed_byte_wrong_nonce_or_short_input_is_refused() {
        let mut c = ChaChaPoly { key: [0; KEY_LEN] };
        c.set(&[9; KEY_LEN]);
        let mut sealed = vec![0u8; 20 + TAG_LEN];
        c.encrypt(5, b"", &[1; 20], &mut sealed);
        let mut out = vec![0u8; 20];
        assert!(c.decrypt(6, b"", &sealed, &mut out).is_err(), "wrong nonce");
        assert!(c.decrypt(5, b"x", &sealed, &mut out).is_err(), "wrong data");
        for i in [0, 19, 20, 35] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(c.decrypt(5, b"", &bad, &mut out).is_err(), "byte {i}");
            assert_eq!(out, [0; 20], "nothing of a forgery is left readable");
        }
        assert!(c.decrypt(5, b"", &sealed[..15], &mut out).is_err(), "short");
        assert!(
            c.decrypt(5, b"", &sealed, &mut [0; 3]).is_err(),
            "small out"
        );
        assert_eq!(c.decrypt(5, b"", &sealed, &mut out).ok(), Some(20));
    }
}
