//! Safety numbers: 60 digits two people compare to rule out a key swap.
//!
//! Each side's half is 30 digits derived from its username and identity key
//! by 5,200 rounds of SHA-512 (slow enough to make searching for a colliding
//! key expensive); the two halves are ordered so both people see the same
//! number.

use sha2::{Digest, Sha512};

const ITERATIONS: usize = 5200;
const VERSION: [u8; 2] = [0, 1];

fn half(username: &str, identity_key: &[u8]) -> String {
    let mut hash = {
        let mut h = Sha512::new();
        h.update(VERSION);
        h.update(identity_key);
        h.update(username.as_bytes());
        h.finalize()
    };
    for _ in 1..ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(identity_key);
        hash = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in hash.chunks(5).take(6) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

/// The safety number of the pair, as 12 groups of 5 digits separated by spaces.
pub fn safety_number(a_user: &str, a_key: &[u8], b_user: &str, b_key: &[u8]) -> String {
    let mut halves = [half(a_user, a_key), half(b_user, b_key)];
    halves.sort();
    let digits = halves.concat();
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_key_sensitive() {
        let ab = safety_number("alice", &[1; 32], "bob", &[2; 32]);
        let ba = safety_number("bob", &[2; 32], "alice", &[1; 32]);
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 60 + 11);
        assert!(ab.chars().all(|c| c.is_ascii_digit() || c == ' '));
        let swapped = safety_number("alice", &[1; 32], "bob", &[3; 32]);
        assert_ne!(ab, swapped);
    }
}
