//! Attachment blobs: opaque sealed bytes under a random id, uploaded in
//! order and resumable, visible only once complete.
//!
//! [`BlobStore`] is what the server needs; [`FsBlobStore`] keeps blobs as
//! files under a directory (the embedded default, in the server's data
//! directory). A blob is known by its random 16-byte id and guarded by the
//! SHA-256 of a write token only its uploader holds (to go on uploading or
//! to delete it); anyone with the id may read it once complete. Nothing
//! else is kept: no name, type, sender or recipient; its size is the sealed,
//! padded size the client declared; its day is the day it was created, for
//! expiry.
//!
//! On disk: `partial/<id>` (the bytes so far) and `partial/<id>.meta` while
//! uploading; at the last byte the data is synced and both move to
//! `done/`, the data last, so a crash leaves a blob either still partial
//! (its upload resumes) or complete, never half-visible. A file's length is
//! what was received: a process killed mid-write loses at most the write in
//! progress, and the uploader resumes from the length it is told.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Day, StoreError};

/// A blob's random id.
pub type BlobId = [u8; 16];

/// What the server keeps of a blob besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its full (sealed, padded) size.
    pub size: u64,
    /// SHA-256 of its write token.
    pub write_hash: [u8; 32],
    /// The day it was created.
    pub day: Day,
}

/// Where a blob stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Uploading: this many bytes received.
    Partial(u64),
    /// Complete and readable.
    Complete,
}

/// Blob storage the server writes through.
pub trait BlobStore: Send + Sync {
    /// Starts a blob. [`StoreError::IdCollision`] if the id is taken.
    fn create(&self, id: &BlobId, meta: BlobMeta) -> Result<(), StoreError>;

    /// Where the upload of `id` stands, for its uploader.
    fn state(&self, id: &BlobId, write_token: &[u8]) -> Result<BlobState, StoreError>;

    /// Appends `data` at `offset`, which must be what was received so far
    /// (an upload goes in order; one resumed asks [`BlobStore::state`]
    /// first). Completes the blob at its last byte. Returns the state after.
    fn append(
        &self,
        id: &BlobId,
        write_token: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<BlobState, StoreError>;

    /// Up to `max` bytes of a complete blob from `offset`, with its size.
    fn read(&self, id: &BlobId, offset: u64, max: usize) -> Result<(u64, Vec<u8>), StoreError>;

    /// Deletes a blob, complete or not, for its uploader.
    fn delete(&self, id: &BlobId, write_token: &[u8]) -> Result<(), StoreError>;

    /// Deletes blobs created more than `max_age_days` before `today`;
    /// returns how many.
    fn expire(&self, today: Day, max_age_days: u32) -> Result<u64, StoreError>;
}

/// The length a blob holding `have` of its `size` bytes reaches with
/// `len` more at `offset`, or why they are refused: an upload goes in
/// order and never past the size it declared.
pub(crate) fn next_length(
    have: u64,
    size: u64,
    offset: u64,
    len: usize,
) -> Result<u64, StoreError> {
    if offset != have {
        return Err(StoreError::BlobOffset { expected: have });
    }
    let now = have + len as u64;
    if now > size {
        return Err(StoreError::BlobTooLong);
    }
    Ok(now)
}

/// Blobs as files under a directory.
pub struct FsBlobStore {
    root: PathBuf,
    /// One writer per blob at a time (two connections resuming the same
    /// upload take turns).
    writing: Mutex<HashMap<BlobId, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for FsBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlobStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

const META_LEN: usize = 8 + 32 + 4;

fn hex(id: &BlobId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl FsBlobStore {
    /// Opens (creating) the blob directory `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("partial")).map_err(io)?;
        fs::create_dir_all(root.join("done")).map_err(io)?;
        Ok(Self {
            root: root.to_path_buf(),
            writing: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, dir: &str, id: &BlobId, meta: bool) -> PathBuf {
        let name = if meta {
            format!("{}.meta", hex(id))
        } else {
            hex(id)
        };
        self.root.join(dir).join(name)
    }

    fn read_meta(&self, dir: &str, id: &BlobId) -> Result<Option<BlobMeta>, StoreError> {
        let bytes = match fs::read(self.path(dir, id, true)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if bytes.len() != META_LEN {
            return Err(StoreError::Corrupt("a blob's metadata file"));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[..8]);
        let mut write_hash = [0u8; 32];
        write_hash.copy_from_slice(&bytes[8..40]);
        let mut day = [0u8; 4];
        day.copy_from_slice(&bytes[40..]);
        Ok(Some(BlobMeta {
            size: u64::from_be_bytes(size),
            write_hash,
            day: Day(u32::from_be_bytes(day)),
        }))
    }

    /// The uploader's view of a blob: its metadata and whether complete;
    /// [`StoreError::UnknownBlob`] for anyone else.
    fn owned(&self, id: &BlobId, write_token: &[u8]) -> Result<(BlobMeta, bool), StoreError> {
        let meta = match self.read_meta("partial", id)? {
            Some(m) => m,
            None => self.read_meta("done", id)?.ok_or(StoreError::UnknownBlob)?,
        };
        if !bool::from(meta.write_hash.ct_eq(&token_hash(write_token))) {
            return Err(StoreError::UnknownBlob);
        }
        // Complete once its data is in `done/` (the last step); a crash
        // between the two moves leaves it partial, and its last write
        // finishes the move.
        if self.path("done", id, false).exists() {
            return Ok((meta, true));
        }
        if !self.path("partial", id, false).exists() {
            return Err(StoreError::UnknownBlob);
        }
        Ok((meta, false))
    }

    fn lock(&self, id: &BlobId) -> Arc<Mutex<()>> {
        let mut w = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.retain(|_, l| Arc::strong_count(l) > 1);
        w.entry(*id).or_default().clone()
    }

    fn sync_dir(&self, dir: &str) -> Result<(), StoreError> {
        File::open(self.root.join(dir))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Every blob id under `dir` with its metadata.
    fn each(&self, dir: &str) -> Result<Vec<(BlobId, Option<BlobMeta>)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(dir)).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(name) = name.to_str() else { continue };
            let stem = name.strip_suffix(".meta").unwrap_or(name);
            let Some(id) = parse_hex(stem) else { continue };
            if out.iter().any(|(i, _)| *i == id) {
                continue;
            }
            out.push((id, self.read_meta(dir, &id)?));
        }
        Ok(out)
    }
}

fn parse_hex(s: &str) -> Option<BlobId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

impl BlobStore for FsBlobStore {
    fn create(&self, id: &BlobId, meta: BlobMeta) -> Result<(), StoreError> {
        let lock = self.lock(id);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.path("partial", id, true).exists() || self.path("done", id, true).exists() {
            return Err(StoreError::IdCollision);
        }
        let mut bytes = Vec::with_capacity(META_LEN);
        bytes.extend_from_slice(&meta.size.to_be_bytes());
        bytes.extend_from_slice(&meta.write_hash);
        bytes.extend_from_slice(&meta.day.0.to_be_bytes());
        File::create(self.path("partial", id, false)).map_err(io)?;
        let tmp = self.root.join("partial").join(format!("{}.new", hex(id)));
        fs::write(&tmp, &bytes).map_err(io)?;
        fs::rename(&tmp, self.path("partial", id, true)).map_err(io)?;
        Ok(())
    }

    fn state(&self, id: &BlobId, write_token: &[u8]) -> Result<BlobState, StoreError> {
        let (_, done) = self.owned(id, write_token)?;
        if done {
            return Ok(BlobState::Complete);
        }
        let len = fs::metadata(self.path("partial", id, false))
            .map_err(io)?
            .len();
        Ok(BlobState::Partial(len))
    }

    fn append(
        &self,
        id: &BlobId,
        write_token: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<BlobState, StoreError> {
        let lock = self.lock(id);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (meta, done) = self.owned(id, write_token)?;
        if done {
            return Ok(BlobState::Complete);
        }
        let path = self.path("partial", id, false);
        let mut f = OpenOptions::new().write(true).open(&path).map_err(io)?;
        let have = f.seek(SeekFrom::End(0)).map_err(io)?;
        let now = next_length(have, meta.size, offset, data.len())?;
        f.write_all(data).map_err(io)?;
        if now < meta.size {
            return Ok(BlobState::Partial(now));
        }
        // Complete: on disk before it becomes visible.
        f.sync_all().map_err(io)?;
        drop(f);
        if self.path("partial", id, true).exists() {
            fs::rename(self.path("partial", id, true), self.path("done", id, true)).map_err(io)?;
        }
        fs::rename(&path, self.path("done", id, false)).map_err(io)?;
        self.sync_dir("done")?;
        Ok(BlobState::Complete)
    }

    fn read(&self, id: &BlobId, offset: u64, max: usize) -> Result<(u64, Vec<u8>), StoreError> {
        let mut f = match File::open(self.path("done", id, false)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::UnknownBlob);
            }
            Err(e) => return Err(io(e)),
        };
        let size = f.metadata().map_err(io)?.len();
        if offset > size {
            return Err(StoreError::BlobOffset { expected: size });
        }
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let want = (size - offset).min(max as u64) as usize;
        let mut buf = vec![0u8; want];
        f.read_exact(&mut buf).map_err(io)?;
        Ok((size, buf))
    }

    fn delete(&self, id: &BlobId, write_token: &[u8]) -> Result<(), StoreError> {
        let lock = self.lock(id);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, done) = self.owned(id, write_token)?;
        let dir = if done { "done" } else { "partial" };
        // The data first: a blob without its data is gone for readers.
        for meta in [false, true] {
            match fs::remove_file(self.path(dir, id, meta)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    fn expire(&self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        let mut n = 0;
        for dir in ["partial", "done"] {
            for (id, meta) in self.each(dir)? {
                // A data file whose metadata is gone (a crash between the
                // two renames, or a delete cut short) goes too.
                let old = meta.is_none_or(|m| m.day.0.saturating_add(max_age_days) < today.0);
                if !old {
                    continue;
                }
                let lock = self.lock(&id);
                let _held = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for meta in [false, true] {
                    match fs::remove_file(self.path(dir, &id, meta)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                n += 1;
            }
        }
        Ok(n)
    }
}

/// What every [`BlobStore`] must do, as tests check it on each one.
#[cfg(any(test, feature = "test-cluster"))]
pub mod contract {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A record as the server makes it.
    pub fn meta(size: u64, token: &[u8], day: u32) -> BlobMeta {
        BlobMeta {
            size,
            write_hash: token_hash(token),
            day: Day(day),
        }
    }

    /// Upload in order (a wrong token, offset or length refused, the blob
    /// unreadable until complete), read any range, delete; an empty blob.
    pub fn uploads_in_order_then_reads_and_deletes(s: &dyn BlobStore) {
        let id = [7u8; 16];
        s.create(&id, meta(10, b"tok", 100)).expect("create");
        assert!(matches!(
            s.create(&id, meta(10, b"x", 100)),
            Err(StoreError::IdCollision)
        ));
        // Not readable, and not even known to anyone without the token.
        assert!(matches!(s.read(&id, 0, 10), Err(StoreError::UnknownBlob)));
        assert!(matches!(s.state(&id, b"bad"), Err(StoreError::UnknownBlob)));
        assert!(matches!(
            s.append(&id, b"bad", 0, b"x"),
            Err(StoreError::UnknownBlob)
        ));
        assert_eq!(
            s.append(&id, b"tok", 0, b"hello").expect("a"),
            BlobState::Partial(5)
        );
        assert!(matches!(
            s.append(&id, b"tok", 3, b"xx"),
            Err(StoreError::BlobOffset { expected: 5 })
        ));
        assert!(matches!(
            s.append(&id, b"tok", 5, b"too long!!"),
            Err(StoreError::BlobTooLong)
        ));
        // A new connection resumes where the server says.
        assert_eq!(s.state(&id, b"tok").expect("state"), BlobState::Partial(5));
        assert!(matches!(s.read(&id, 0, 10), Err(StoreError::UnknownBlob)));
        assert_eq!(
            s.append(&id, b"tok", 5, b"world").expect("b"),
            BlobState::Complete
        );
        assert_eq!(
            s.read(&id, 0, 100).expect("read"),
            (10, b"helloworld".to_vec())
        );
        assert_eq!(s.read(&id, 7, 2).expect("read"), (10, b"rl".to_vec()));
        // Across the two pieces it was uploaded in.
        assert_eq!(s.read(&id, 3, 4).expect("read"), (10, b"lowo".to_vec()));
        assert_eq!(s.read(&id, 10, 2).expect("read"), (10, Vec::new()));
        assert!(matches!(
            s.delete(&id, b"bad"),
            Err(StoreError::UnknownBlob)
        ));
        s.delete(&id, b"tok").expect("delete");
        assert!(matches!(s.read(&id, 0, 10), Err(StoreError::UnknownBlob)));
        // An empty blob is complete at its first (empty) write.
        let e = [8u8; 16];
        s.create(&e, meta(0, b"t", 1)).expect("create");
        assert_eq!(s.append(&e, b"t", 0, b"").expect("a"), BlobState::Complete);
        assert_eq!(s.read(&e, 0, 10).expect("read"), (0, Vec::new()));
    }

    /// Blobs older than the limit go, complete or not; newer ones stay.
    pub fn old_blobs_expire(s: &dyn BlobStore) {
        s.create(&[1; 16], meta(1, b"t", 10)).expect("old partial");
        s.create(&[2; 16], meta(1, b"t", 10)).expect("old");
        s.append(&[2; 16], b"t", 0, b"x").expect("complete");
        s.create(&[3; 16], meta(1, b"t", 19)).expect("new");
        s.append(&[3; 16], b"t", 0, b"y").expect("complete");
        assert_eq!(s.expire(Day(20), 5).expect("expire"), 2);
        assert!(matches!(
            s.read(&[2; 16], 0, 1),
            Err(StoreError::UnknownBlob)
        ));
        assert!(matches!(
            s.state(&[1; 16], b"t"),
            Err(StoreError::UnknownBlob)
        ));
        assert_eq!(s.read(&[3; 16], 0, 1).expect("kept"), (1, b"y".to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_in_order_then_reads_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsBlobStore::open(dir.path()).expect("open");
        contract::uploads_in_order_then_reads_and_deletes(&s);
    }

    #[test]
    fn old_blobs_and_orphans_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsBlobStore::open(dir.path()).expect("open");
        contract::old_blobs_expire(&s);
        // A file without its record (a crash between the two renames).
        fs::write(dir.path().join("done").join(hex(&[4; 16])), b"orphan").expect("orphan");
        assert_eq!(s.expire(Day(20), 5).expect("expire"), 1);
        let left: Vec<_> = fs::read_dir(dir.path().join("partial"))
            .expect("dir")
            .collect();
        assert!(left.is_empty());
    }
}
