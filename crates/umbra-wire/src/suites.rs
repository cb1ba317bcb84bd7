//! The MLS ciphersuites of Umbra conversations, by code point: what a key
//! package upload and a claim name (`UploadKeyPackages.suite`,
//! `FetchDevices.suites`). The server stores and counts packages per suite
//! without opening them, and takes only these, so no device can spread its
//! packages over thousands of made-up suites past the per-suite cap.

/// `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519`: every
/// conversation before post-quantum ones, and large groups since. An older
/// client, which names no suite (0), means this one.
pub const CLASSICAL: u16 = 0x0003;

/// `MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519`: X-Wing (ML-KEM-768
/// with X25519) as the group's KEM, Ed25519 signatures.
pub const POST_QUANTUM: u16 = 0x004F;

/// Every suite the server keeps packages of.
pub const ALL: [u16; 2] = [CLASSICAL, POST_QUANTUM];

/// The suite a request names: 0 (unset, from an older client) is
/// [`CLASSICAL`]; `None` for one not in [`ALL`].
pub fn named(code: u32) -> Option<u16> {
    match code {
        0 => Some(CLASSICAL),
        c => u16::try_from(c).ok().filter(|c| ALL.contains(c)),
    }
}

/// What a user is told a suite is.
pub fn describe(code: u16) -> String {
    match code {
        CLASSICAL => "classical (X25519)".into(),
        POST_QUANTUM => "post-quantum (X-Wing: ML-KEM-768 + X25519)".into(),
        other => format!("unknown ciphersuite 0x{other:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_classical_and_strangers_are_refused() {
        assert_eq!(named(0), Some(CLASSICAL));
        assert_eq!(named(3), Some(CLASSICAL));
        assert_eq!(named(0x4F), Some(POST_QUANTUM));
        assert_eq!(named(0x4E), None);
        assert_eq!(named(0x1_0003), None);
    }
}
