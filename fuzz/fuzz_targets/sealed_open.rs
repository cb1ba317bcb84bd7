//! `umbra_crypto::seal::open` with a fixed recipient key on arbitrary bytes: never panics,
//! refuses anything it did not seal (the fuzzer cannot forge the AEAD tag), and opens what
//! `seal` produced for the same plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umbra_crypto::seal;
use x25519_dalek::{PublicKey, StaticSecret};

fuzz_target!(|data: &[u8]| {
    let secret = StaticSecret::from([0x42; 32]);
    if let Ok(plain) = seal::open(&secret, data) {
        // Only a genuine envelope opens; its plaintext is exactly OVERHEAD shorter.
        assert_eq!(plain.len() + seal::OVERHEAD, data.len());
    }

    // The fuzz input as a plaintext: seal then open must round-trip, and any single-bit
    // change (chosen by the input) must be refused.
    if data.len() <= 4096 {
        let public = PublicKey::from(&secret);
        let sealed = seal::seal(public.as_bytes(), data).expect("seal to a valid key");
        assert_eq!(sealed.len(), data.len() + seal::OVERHEAD);
        assert_eq!(seal::open(&secret, &sealed).expect("opens"), data);
        let bit = data.iter().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(usize::from(*b)));
        let mut bad = sealed.clone();
        let i = bit % (bad.len() * 8);
        bad[i / 8] ^= 1 << (i % 8);
        assert!(seal::open(&secret, &bad).is_err(), "a flipped bit still opened");
    }
});
