//! Masks that hide the shape of a byte stream from whoever watches it,
//! without I/O.
//!
//! A mask XORs bytes with a ChaCha20 keystream under a key that is unique
//! to one connection, the direction choosing the stream (its nonce). Two
//! uses:
//!
//! - On a proxy's plain ports, after the WebSocket upgrade
//!   ([`crate::upgrade`]), client and proxy mask what would otherwise be
//!   recognisable: toward the messaging server the first Noise message of
//!   each direction (its length prefix and its ephemeral key, which as a
//!   raw X25519 point is not uniformly random), after which the Noise
//!   stream hides its own framing; toward the call relay, whose TURN
//!   framing is in clear, every byte. The keys come from the link's secret
//!   and the connection's nonce ([`Mask::proxied`]). A fronting port
//!   ([`crate::front`]) masks the payloads of its records the same way.
//! - Inside every Noise channel, each transport message's two-byte length
//!   prefix (see [`crate::noise`]), under keys from the handshake hash.
//!
//! A mask only hides: integrity comes from Noise (or, for TURN, from the
//! relay's own message integrity), and a changed byte under a mask is
//! caught there.

// The original ChaCha20 (64-bit nonce, 64-bit block counter): a relay
// stream masked for its whole life never reaches the end of its keystream,
// as it would at 256 GiB with the IETF variant's 32-bit counter.
use chacha20::ChaCha20Legacy as ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::proxy::Target;

/// HMAC-SHA256 of `parts` under `key` (a PRF: derives keys, tags and
/// seeds from a proxy's secret or a handshake hash).
pub fn prf(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    Prf::new(key).eval(parts)
}

/// [`prf`] under one key, its key schedule done once: each use then costs
/// only its own blocks (a proxy's admission and masks use one per
/// connection, several times).
#[derive(Clone)]
pub struct Prf(Hmac<Sha256>);

impl Prf {
    /// The PRF under `key`.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length.
        #[allow(clippy::unwrap_used)]
        Self(Hmac::<Sha256>::new_from_slice(key).unwrap())
    }

    /// HMAC-SHA256 of `parts`.
    pub fn eval(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prf")
    }
}

/// A proxied connection's mask key.
fn proxied_key(secret: &Prf, nonce: &[u8; 16]) -> [u8; 32] {
    secret.eval(&[b"umbra-proxy-v2 mask", nonce])
}

/// A ChaCha20 keystream under a key used for nothing else (or, with
/// `stream`, one of several streams under one key).
pub(crate) fn keystream(key: &[u8; 32], stream: u8) -> ChaCha20 {
    let mut nonce = [0u8; 8];
    nonce[0] = stream;
    ChaCha20::new(key.into(), &nonce.into())
}

/// Which way bytes travel on a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to proxy (and on to the upstream).
    Up,
    /// Upstream to proxy to client.
    Down,
}

/// Whether this end writes the bytes (and sees them before masking) or
/// reads them (and sees them after unmasking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Masks plaintext about to be sent.
    Sender,
    /// Unmasks bytes just received.
    Receiver,
}

#[derive(Debug, Clone, Copy)]
enum Extent {
    /// Every byte, for the life of the connection.
    Forever,
    /// The first length-prefixed message: `seen` bytes of it so far, its
    /// prefix collected in `prefix`.
    FirstMessage { seen: usize, prefix: [u8; 2] },
    /// Nothing more to mask.
    Done,
}

/// One direction's mask on a proxied connection.
pub struct Mask {
    cipher: ChaCha20,
    extent: Extent,
    end: End,
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mask")
            .field("extent", &self.extent)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Mask {
    /// The mask of one direction of a proxied connection (a plain port's,
    /// or a fronting port's) admitted with `nonce` under the link's
    /// `secret`.
    pub fn proxied(
        secret: &[u8; 32],
        nonce: &[u8; 16],
        target: Target,
        way: Way,
        end: End,
    ) -> Self {
        Self::with_key(&proxied_key(&Prf::new(secret), nonce), target, way, end)
    }

    /// Both directions' masks of a proxied connection, `(up, down)`, for
    /// the end that is `up_end` of the upward direction (and so the other
    /// end of the downward one); `secret` is the link's, keyed once.
    pub fn pair(secret: &Prf, nonce: &[u8; 16], target: Target, up_end: End) -> (Self, Self) {
        let key = proxied_key(secret, nonce);
        let down_end = match up_end {
            End::Sender => End::Receiver,
            End::Receiver => End::Sender,
        };
        (
            Self::with_key(&key, target, Way::Up, up_end),
            Self::with_key(&key, target, Way::Down, down_end),
        )
    }

    fn with_key(key: &[u8; 32], target: Target, way: Way, end: End) -> Self {
        // One key per connection, one ChaCha20 stream (nonce) per way.
        let stream = match way {
            Way::Up => 0,
            Way::Down => 1,
        };
        let extent = match target {
            Target::Messaging => Extent::FirstMessage {
                seen: 0,
                prefix: [0; 2],
            },
            Target::Relay => Extent::Forever,
        };
        Self {
            cipher: keystream(key, stream),
            extent,
            end,
        }
    }

    /// Where the mask stands, to come back to with [`Mask::rewind`] (a
    /// writer that masked more than the socket took).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            pos: self.cipher.current_pos(),
            extent: self.extent,
        }
    }

    /// Goes back to `at`, as if nothing had been masked since.
    pub fn rewind(&mut self, at: Checkpoint) {
        self.cipher.seek(at.pos);
        self.extent = at.extent;
    }

    /// Whether every byte from now on passes unchanged.
    pub fn done(&self) -> bool {
        matches!(self.extent, Extent::Done)
    }

    /// Masks (or unmasks) the next bytes of the stream, in place: those
    /// within the mask's extent change, the rest pass as they are.
    pub fn apply(&mut self, buf: &mut [u8]) {
        match &mut self.extent {
            Extent::Done => {}
            Extent::Forever => self.cipher.apply_keystream(buf),
            Extent::FirstMessage { seen, prefix } => {
                let mut at = 0;
                // The two-byte length prefix, one byte at a time: the sender
                // reads each before masking it, the receiver after.
                while *seen < 2 && at < buf.len() {
                    let byte = &mut buf[at..at + 1];
                    if self.end == End::Sender {
                        prefix[*seen] = byte[0];
                    }
                    self.cipher.apply_keystream(byte);
                    if self.end == End::Receiver {
                        prefix[*seen] = byte[0];
                    }
                    *seen += 1;
                    at += 1;
                }
                if *seen < 2 {
                    return;
                }
                let total = 2 + usize::from(u16::from_be_bytes(*prefix));
                let take = (total - *seen).min(buf.len() - at);
                self.cipher.apply_keystream(&mut buf[at..at + take]);
                *seen += take;
                if *seen == total {
                    self.extent = Extent::Done;
                }
            }
        }
    }
}

/// A mask's position, from [`Mask::checkpoint`].
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    pos: u64,
    extent: Extent,
}

/// Masks the two-byte length prefix of every Noise transport message in one
/// direction of a channel.
pub(crate) struct LengthMask(ChaCha20);

impl LengthMask {
    /// The mask for the direction that `label` names, in the channel whose
    /// handshake hash is `handshake_hash`.
    pub fn new(handshake_hash: &[u8; 32], label: &[u8]) -> Self {
        Self(keystream(&prf(handshake_hash, &[label]), 0))
    }

    /// Masks (or unmasks: XOR is its own inverse) the next prefix.
    pub fn apply(&mut self, prefix: &mut [u8; 2]) {
        self.0.apply_keystream(prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(target: Target) -> (Mask, Mask) {
        let (s, n) = ([7; 32], [9; 16]);
        (
            Mask::proxied(&s, &n, target, Way::Up, End::Sender),
            Mask::proxied(&s, &n, target, Way::Up, End::Receiver),
        )
    }

    #[test]
    fn first_message_is_masked_then_bytes_pass_in_any_split() {
        let mut plain = vec![0u8, 5, 1, 2, 3, 4, 5];
        plain.extend_from_slice(b"after the first message");
        for split in 0..plain.len() {
            let (mut tx, mut rx) = pair(Target::Messaging);
            let mut wire = plain.clone();
            let (a, b) = wire.split_at_mut(split);
            tx.apply(a);
            tx.apply(b);
            assert!(tx.done());
            assert_ne!(wire[..7], plain[..7]);
            assert_eq!(wire[7..], plain[7..], "split {split}");
            let mut back = wire.clone();
            for chunk in back.chunks_mut(3) {
                rx.apply(chunk);
            }
            assert_eq!(back, plain, "split {split}");
            assert!(rx.done());
        }
    }

    #[test]
    fn relay_streams_are_masked_forever_and_directions_differ() {
        let (mut tx, mut rx) = pair(Target::Relay);
        let plain = vec![0x42u8; 5000];
        let mut wire = plain.clone();
        tx.apply(&mut wire);
        assert!(!tx.done());
        assert!(wire.iter().filter(|&&b| b == 0x42).count() < 100);
        rx.apply(&mut wire);
        assert_eq!(wire, plain);
        let at = tx.checkpoint();
        let (mut once, mut twice) = ([0u8; 10], [0u8; 10]);
        tx.apply(&mut once);
        tx.rewind(at);
        tx.apply(&mut twice);
        assert_eq!(once, twice);
        let mut up = Mask::proxied(&[1; 32], &[2; 16], Target::Relay, Way::Up, End::Sender);
        let mut down = Mask::proxied(&[1; 32], &[2; 16], Target::Relay, Way::Down, End::Sender);
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        up.apply(&mut a);
        down.apply(&mut b);
        assert_ne!(a, b);
    }
}
