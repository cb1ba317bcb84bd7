//! A fast keyed hasher for the maps looked up on every relayed packet (allocations by
//! client 5-tuple and by relayed address, permissions, channels).
//!
//! The standard library's SipHash costs more than the rest of a ChannelData lookup. This
//! is a folded-multiply hash (the construction of foldhash and wyhash): each written word
//! is XORed into the state and mixed by a 64×64→128-bit multiply whose halves are folded
//! together. Both keys are secret (derived from random bytes the caller supplies), so an
//! attacker who picks client addresses cannot precompute colliding ones; it is not a
//! cryptographic hash and is used for nothing but hash tables.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A [`HashMap`] with the keyed fast hasher.
pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;

/// Builds [`KeyedHasher`]s; carries the two secret keys. Deliberately not `Default`: a
/// fixed key would defeat the point.
#[derive(Clone, Copy)]
pub struct KeyedState {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("KeyedState").finish_non_exhaustive()
    }
}

impl KeyedState {
    /// Keys from 16 random bytes.
    pub fn new(key: [u8; 16]) -> KeyedState {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&key[..8]);
        b.copy_from_slice(&key[8..]);
        // The multiplier: odd, and never a low-entropy pattern such as all-ones bytes
        // (the constant has its bits spread; XOR with a random key stays random).
        KeyedState {
            k0: u64::from_le_bytes(a),
            k1: (u64::from_le_bytes(b) ^ SPREAD) | 1,
        }
    }

    /// An empty map using these keys.
    pub fn map<K, V>(&self) -> KeyedMap<K, V> {
        HashMap::with_hasher(*self)
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            state: self.k0,
            k1: self.k1,
        }
    }
}

/// One hashing run of [`KeyedState`].
#[derive(Clone, Copy)]
pub struct KeyedHasher {
    state: u64,
    k1: u64,
}

const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;
const FINAL: u64 = 0x2D35_8DCC_AA6C_78A5;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyedHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.state = fold(self.state ^ word, self.k1).rotate_left(23) ^ SPREAD;
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        // The length goes into the top byte so "ab" and "ab\0" differ.
        self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state ^ FINAL, self.k1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    #[test]
    fn keyed_and_spread() {
        let a = KeyedState::new([1; 16]);
        let b = KeyedState::new([2; 16]);
        let x: SocketAddr = "192.0.2.1:5000".parse().expect("literal");
        assert_eq!(a.hash_one(x), a.hash_one(x));
        assert_ne!(a.hash_one(x), b.hash_one(x));
        // Neighbouring ports and addresses land on distinct hashes and spread over the
        // low bits (hashbrown's bucket index), whatever the key.
        let keys = [[0u8; 16], [1; 16], [0xff; 16], *b"0123456789abcdef"];
        for k in keys {
            let st = KeyedState::new(k);
            let mut full = HashSet::new();
            let mut low = HashSet::new();
            for port in 40000..41024u16 {
                let h = st.hash_one(SocketAddr::from(([192, 0, 2, 1], port)));
                full.insert(h);
                low.insert(h & 1023);
            }
            for last in 0..=255u8 {
                for third in 0..4u8 {
                    full.insert(st.hash_one(SocketAddr::from(([10, 0, third, last], 3478))));
                }
            }
            assert_eq!(full.len(), 1024 + 1024, "collisions with key {k:?}");
            assert!(
                low.len() > 580,
                "poor spread in the low bits: {}",
                low.len()
            );
        }
        let mut m = a.map();
        m.insert(x, 1);
        assert_eq!(m.get(&x), Some(&1));
    }
}
