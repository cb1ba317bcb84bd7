//! The cryptographic checks carried inside a STUN message: MESSAGE-INTEGRITY (HMAC-SHA1),
//! MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256) and FINGERPRINT (CRC-32 XOR 0x5354554E).
//!
//! All three cover the message up to (not including) their own attribute, with the
//! header's length field rewritten as if the message ended right after that attribute
//! (RFC 8489 §14.5–14.7). [`covered`] produces exactly those bytes.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The constant XOR-ed into the CRC-32 to form FINGERPRINT.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Which integrity attribute protects (or should protect) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY, HMAC-SHA1, 20 bytes.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256, 32 bytes (may be truncated to 16 on the wire).
    Sha256,
}

/// The three slices covered by a check whose attribute starts at `attr_offset` and whose
/// value is `value_len` bytes: patched header start, patched length, and the rest.
pub(crate) fn covered(
    msg: &[u8],
    attr_offset: usize,
    value_len: usize,
) -> Option<([u8; 4], &[u8])> {
    let body_len = attr_offset.checked_sub(crate::header::HEADER_LEN)? + 4 + value_len;
    let len = u16::try_from(body_len).ok()?;
    let head = msg.get(..4)?;
    let rest = msg.get(4..attr_offset)?;
    let l = len.to_be_bytes();
    Some(([head[0], head[1], l[0], l[1]], rest))
}

/// HMAC-SHA1 over `parts`.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match <Hmac<Sha1> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 20],
    };
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

/// FINGERPRINT value over `parts`.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    parts.iter().for_each(|p| h.update(p));
    h.finalize() ^ FINGERPRINT_XOR
}
