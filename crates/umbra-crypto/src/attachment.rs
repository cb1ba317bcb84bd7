//! Attachments (files, photos, voice messages), encrypted on the sender's
//! device in chunks, so that no file ever has to sit whole in memory and a
//! download can resume at any chunk.
//!
//! Each file gets a fresh random [`AttachmentKey`]. Its bytes, padded with
//! zeros to a length from a small set ([`padded_len`], Padmé: at most 12%
//! more, and the length then says only about log log of the size), are cut
//! into [`CHUNK`]-byte pieces, each sealed with AES-256-GCM (ring's, which
//! uses the processor's AES and carry-less multiply) under a nonce of
//! its index and a flag for the last one (the STREAM construction): a chunk
//! moved, dropped, repeated or cut off, or a blob cut short, fails to open.
//! The key, the exact size and the digest of the sealed blob travel only in
//! the MLS message; the server stores the sealed blob and sees its padded
//! length.
//!
//! No I/O here: the caller reads and writes chunks where it likes.

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::CryptoError;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// What sealing adds to each chunk (the GCM tag).
pub const TAG: usize = 16;
/// The smallest padded length: files below it all look alike.
pub const MIN_PADDED: u64 = 4 * 1024;

/// A file's key: 32 random bytes, never reused.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentKey([u8; 32]);

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl Drop for AttachmentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl AttachmentKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// The key carried in a message; `None` unless 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw key, to put in the message.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> LessSafeKey {
        // 32 bytes is AES-256's key length: this cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, &self.0)
            .unwrap_or_else(|_| unreachable!("a 32-byte AES-256 key"));
        LessSafeKey::new(key)
    }
}

/// Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files
/// and Communication with PURBs"): `len` rounded up so that only its top
/// bits remain, at least [`MIN_PADDED`].
pub fn padded_len(len: u64) -> u64 {
    let l = len.max(MIN_PADDED);
    let e = 63 - u64::from(l.leading_zeros()); // floor(log2 l), >= 12
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let mask = (1u64 << (e - s)) - 1;
    (l + mask) & !mask
}

/// Chunks a padded stream of `padded` bytes is cut into (at least one).
pub fn chunk_count(padded: u64) -> u64 {
    padded.div_ceil(CHUNK as u64).max(1)
}

/// The sealed blob's length for a file of `len` bytes.
pub fn sealed_len(len: u64) -> u64 {
    let padded = padded_len(len);
    padded + chunk_count(padded) * TAG as u64
}

/// Where sealed chunk `index` starts in the blob.
pub fn sealed_offset(index: u64) -> u64 {
    index * (CHUNK + TAG) as u64
}

fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals chunk `index` of a padded stream: `plain` is its bytes (the
/// file's, then zeros past its end), `last` whether it ends the stream.
/// Sealing is deterministic for a key, so an upload that resumes seals a
/// chunk again rather than keeping it.
pub fn seal_chunk(
    key: &AttachmentKey,
    index: u64,
    plain: &[u8],
    last: bool,
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plain.len() + TAG);
    out.extend_from_slice(plain);
    key.cipher()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce(index, last)),
            Aad::empty(),
            &mut out,
        )
        .map_err(|_| CryptoError::Attachment("sealing failed"))?;
    Ok(out)
}

/// Seals a file chunk by chunk, padding it at the end.
pub struct Sealer {
    key: AttachmentKey,
    len: u64,
    padded: u64,
    taken: u64,
    index: u64,
    pending: Vec<u8>,
    digest: Sha256,
}

impl Sealer {
    /// Seals a file of exactly `len` bytes under `key`.
    pub fn new(key: &AttachmentKey, len: u64) -> Self {
        Self {
            key: key.clone(),
            len,
            padded: padded_len(len),
            taken: 0,
            index: 0,
            pending: Vec::with_capacity(CHUNK),
            digest: Sha256::new(),
        }
    }

    /// Takes the next bytes of the file; returns the sealed chunks they
    /// completed (append them to the blob in order). More bytes than the
    /// length given to [`Sealer::new`] is an error.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, CryptoError> {
        if self.taken + bytes.len() as u64 > self.len {
            return Err(CryptoError::Attachment("more bytes than the file's length"));
        }
        self.taken += bytes.len() as u64;
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let room = CHUNK - self.pending.len();
            let n = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            // A full chunk is sealed only once more follows, so the last one
            // is always sealed by `finish`, flagged as last.
            if self.pending.len() == CHUNK && self.sealed_through() + (CHUNK as u64) < self.padded {
                out.push(self.seal_pending(false)?);
            }
        }
        Ok(out)
    }

    fn sealed_through(&self) -> u64 {
        self.index * CHUNK as u64
    }

    fn seal_pending(&mut self, last: bool) -> Result<Vec<u8>, CryptoError> {
        let sealed = seal_chunk(&self.key, self.index, &self.pending, last)?;
        self.digest.update(&sealed);
        self.index += 1;
        self.pending.clear();
        Ok(sealed)
    }

    /// Pads what is left, seals the remaining chunks (the last one flagged),
    /// and returns them with the SHA-256 of the whole sealed blob. An error
    /// if fewer bytes came than the length given.
    pub fn finish(mut self) -> Result<(Vec<Vec<u8>>, [u8; 32]), CryptoError> {
        if self.taken != self.len {
            return Err(CryptoError::Attachment(
                "fewer bytes than the file's length",
            ));
        }
        let mut out = Vec::new();
        loop {
            let left = self.padded - self.sealed_through();
            let want = (left.min(CHUNK as u64)) as usize;
            self.pending.resize(want, 0);
            let last = left <= CHUNK as u64;
            out.push(self.seal_pending(last)?);
            if last {
                break;
            }
        }
        Ok((out, self.digest.finalize().into()))
    }
}

/// Opens a sealed blob chunk by chunk, in any order (a resumed download
/// starts where it stopped).
pub struct Opener {
    cipher: LessSafeKey,
    len: u64,
    chunks: u64,
}

impl Opener {
    /// Opens the blob of a file of `len` bytes (the size the message
    /// gives).
    pub fn new(key: &AttachmentKey, len: u64) -> Self {
        Self {
            cipher: key.cipher(),
            len,
            chunks: chunk_count(padded_len(len)),
        }
    }

    /// Chunks in the blob.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The sealed length of chunk `index`.
    pub fn sealed_chunk_len(&self, index: u64) -> usize {
        let padded = padded_len(self.len);
        let start = index * CHUNK as u64;
        (padded.saturating_sub(start).min(CHUNK as u64)) as usize + TAG
    }

    /// Opens chunk `index` and returns the file's bytes in it (the padding
    /// dropped). Refused if it was altered, moved, or is not the chunk the
    /// blob ends with when it claims to be, or the padding is not zeros.
    pub fn open(&self, index: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if index >= self.chunks || sealed.len() != self.sealed_chunk_len(index) {
            return Err(CryptoError::Attachment(
                "a chunk of the attachment is missing or cut short",
            ));
        }
        let last = index + 1 == self.chunks;
        let mut plain = sealed.to_vec();
        let opened = self
            .cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(index, last)),
                Aad::empty(),
                &mut plain,
            )
            .map_err(|_| {
                CryptoError::Attachment(
                    "the attachment was altered or is not the one the message names",
                )
            })?
            .len();
        plain.truncate(opened);
        let start = index * CHUNK as u64;
        let keep = self.len.saturating_sub(start).min(plain.len() as u64) as usize;
        if plain[keep..].iter().any(|b| *b != 0) {
            return Err(CryptoError::Attachment(
                "the attachment's padding is not empty",
            ));
        }
        plain.truncate(keep);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_standard_aes_256_gcm() {
        // McGrew and Viega's GCM test case 14: a zero key, a zero IV (chunk
        // 0, not the last) and 16 zero bytes.
        let sealed = seal_chunk(&AttachmentKey([0; 32]), 0, &[0; 16], false).expect("seal");
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
    }

    fn seal_all(key: &AttachmentKey, data: &[u8], piece: usize) -> (Vec<Vec<u8>>, [u8; 32]) {
        let mut s = Sealer::new(key, data.len() as u64);
        let mut chunks = Vec::new();
        for p in data.chunks(piece.max(1)) {
            chunks.extend(s.push(p).expect("push"));
        }
        let (rest, digest) = s.finish().expect("finish");
        chunks.extend(rest);
        (chunks, digest)
    }

    fn open_all(key: &AttachmentKey, len: u64, chunks: &[Vec<u8>]) -> Result<Vec<u8>, CryptoError> {
        let o = Opener::new(key, len);
        if chunks.len() as u64 != o.chunks() {
            return Err(CryptoError::Attachment("count"));
        }
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(o.open(i as u64, c)?);
        }
        Ok(out)
    }

    #[test]
    fn padme_keeps_few_lengths_and_little_overhead() {
        assert_eq!(padded_len(0), MIN_PADDED);
        assert_eq!(padded_len(1), MIN_PADDED);
        assert_eq!(padded_len(MIN_PADDED), MIN_PADDED);
        for len in [5_000u64, 65_537, 1 << 20, 3_000_001, 200 << 20, 2 << 30] {
            let p = padded_len(len);
            assert!(p >= len);
            assert!((p - len) as f64 <= len as f64 * 0.12, "{len} -> {p}");
        }
        // Sizes near one another share a length.
        assert_eq!(padded_len(1_000_001), padded_len(1_000_100));
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let key = AttachmentKey::generate();
        for len in [
            0usize,
            1,
            4095,
            4096,
            4097,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 5,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for piece in [1000, CHUNK, 3 * CHUNK] {
                let (chunks, digest) = seal_all(&key, &data, piece);
                let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                assert_eq!(total, sealed_len(len as u64), "len {len}");
                let mut h = Sha256::new();
                for c in &chunks {
                    h.update(c);
                }
                assert_eq!(<[u8; 32]>::from(h.finalize()), digest);
                assert_eq!(open_all(&key, len as u64, &chunks).expect("open"), data);
            }
        }
    }

    #[test]
    fn altered_moved_cut_or_wrong_key_is_refused() {
        let key = AttachmentKey::generate();
        let data = vec![9u8; 3 * CHUNK + 100];
        let (chunks, _) = seal_all(&key, &data, CHUNK);
        let len = data.len() as u64;
        let mut flipped = chunks.clone();
        flipped[1][10] ^= 1;
        assert!(open_all(&key, len, &flipped).is_err());
        let mut swapped = chunks.clone();
        swapped.swap(0, 1);
        assert!(open_all(&key, len, &swapped).is_err());
        // Cut after a full chunk: the one that would now end the blob was
        // not sealed as the last.
        let o = Opener::new(&key, len);
        let fewer = Opener::new(&key, 2 * CHUNK as u64);
        assert!(fewer.open(1, &chunks[1]).is_err());
        assert!(o.open(o.chunks(), &chunks[0]).is_err());
        assert!(open_all(&AttachmentKey::generate(), len, &chunks).is_err());
        // More or fewer bytes than promised.
        let mut s = Sealer::new(&key, 3);
        assert!(s.push(b"four").is_err());
        let s = Sealer::new(&key, 3);
        assert!(s.finish().is_err());
    }
}
