//! Attachment blobs in PostgreSQL, for several nodes: a blob uploaded
//! through one node is read through any other.
//!
//! `blobs` holds each blob's record (size, write-token hash, day, bytes
//! received, complete); `blob_pieces` its bytes, one row per piece as it
//! was uploaded, keyed by offset. A piece is added in one transaction that
//! locks the blob's row, checks the token and the offset, inserts the piece
//! and moves `received` on, so two nodes resuming one upload take turns and
//! the pieces never overlap or leave a gap; the last piece marks the blob
//! complete in the same commit, and a blob is readable only once complete
//! (`synchronous_commit` is on: what the uploader was told it holds is on
//! the database's disk). Sealed bytes do not compress, so pieces are stored
//! without trying (`STORAGE EXTERNAL`).
//!
//! Connections: a few kept for the blocking tasks the server runs blob
//! requests on; one that broke (the database restarted) is dropped and the
//! next request connects again.

use std::sync::Mutex;

use postgres::Client;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::blobs::{BlobId, BlobMeta, BlobState, BlobStore, next_length};
use crate::{Day, StoreError};

/// Connections kept idle between requests.
const KEEP: usize = 4;
/// The largest piece a node stores (a request's data is smaller).
const MAX_PIECE: i64 = 1 << 20;

/// Blobs in a PostgreSQL database (schema version 8 and later).
pub struct PgBlobStore {
    url: String,
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PgBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("PgBlobStore").finish_non_exhaustive()
    }
}

/// What a blob's row says.
struct Row {
    size: u64,
    write_hash: Vec<u8>,
    received: u64,
    complete: bool,
}

fn row(r: &postgres::Row) -> Row {
    Row {
        size: r.get::<_, i64>(0) as u64,
        write_hash: r.get(1),
        received: r.get::<_, i64>(2) as u64,
        complete: r.get(3),
    }
}

/// Whether `token` is the one the blob's row was made with; a wrong one is
/// answered as a blob that does not exist.
fn owned(r: &Row, token: &[u8]) -> Result<(), StoreError> {
    let hash: [u8; 32] = Sha256::digest(token).into();
    if bool::from(hash.ct_eq(r.write_hash.as_slice())) {
        Ok(())
    } else {
        Err(StoreError::UnknownBlob)
    }
}

const SELECT: &str = "SELECT size, write_hash, received, complete FROM blobs WHERE id = $1";

impl PgBlobStore {
    /// Blobs in the database at `url`, whose schema the caller has brought
    /// up to date ([`crate::PgStore::connect`]).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a connection (an idle one, or a new one); keeps the
    /// connection afterwards unless it broke.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut client = match taken {
            Some(c) if !c.is_closed() => c,
            _ => super::connect(&self.url)?,
        };
        let out = f(&mut client);
        if !client.is_closed() {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < KEEP {
                idle.push(client);
            }
        }
        out
    }
}

impl Drop for PgBlobStore {
    fn drop(&mut self) {
        // A synchronous client owns a runtime of its own, which may not be
        // dropped on an async task (where the server lets go of its store
        // at shutdown): the idle connections close on a thread of their own.
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl BlobStore for PgBlobStore {
    fn create(&self, id: &BlobId, meta: BlobMeta) -> Result<(), StoreError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO blobs (id, size, write_hash, created_day) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id.as_slice(),
                    &(meta.size as i64),
                    &meta.write_hash.as_slice(),
                    &(meta.day.0 as i32),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::IdCollision);
            }
            Ok(())
        })
    }

    fn state(&self, id: &BlobId, write_token: &[u8]) -> Result<BlobState, StoreError> {
        self.with(|c| {
            let r = c
                .query_opt(SELECT, &[&id.as_slice()])?
                .ok_or(StoreError::UnknownBlob)?;
            let r = row(&r);
            owned(&r, write_token)?;
            Ok(if r.complete {
                BlobState::Complete
            } else {
                BlobState::Partial(r.received)
            })
        })
    }

    fn append(
        &self,
        id: &BlobId,
        write_token: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<BlobState, StoreError> {
        if data.len() as i64 > MAX_PIECE {
            return Err(StoreError::BlobTooLong);
        }
        self.with(|c| {
            let mut tx = c.transaction()?;
            let r = tx
                .query_opt(&format!("{SELECT} FOR UPDATE"), &[&id.as_slice()])?
                .ok_or(StoreError::UnknownBlob)?;
            let r = row(&r);
            owned(&r, write_token)?;
            if r.complete {
                return Ok(BlobState::Complete);
            }
            let now = next_length(r.received, r.size, offset, data.len())?;
            if !data.is_empty() {
                tx.execute(
                    "INSERT INTO blob_pieces (blob_id, at, data) VALUES ($1, $2, $3)",
                    &[&id.as_slice(), &(offset as i64), &data],
                )?;
            }
            let complete = now == r.size;
            tx.execute(
                "UPDATE blobs SET received = $2, complete = $3 WHERE id = $1",
                &[&id.as_slice(), &(now as i64), &complete],
            )?;
            tx.commit()?;
            Ok(if complete {
                BlobState::Complete
            } else {
                BlobState::Partial(now)
            })
        })
    }

    fn read(&self, id: &BlobId, offset: u64, max: usize) -> Result<(u64, Vec<u8>), StoreError> {
        self.with(|c| {
            let r = c
                .query_opt(SELECT, &[&id.as_slice()])?
                .ok_or(StoreError::UnknownBlob)?;
            let r = row(&r);
            if !r.complete {
                return Err(StoreError::UnknownBlob);
            }
            if offset > r.size {
                return Err(StoreError::BlobOffset { expected: r.size });
            }
            let end = (offset + max as u64).min(r.size);
            let mut out = Vec::with_capacity((end - offset) as usize);
            if end == offset {
                return Ok((r.size, out));
            }
            // The pieces that overlap [offset, end): none starts more than
            // a piece's length before `offset`.
            let rows = c.query(
                "SELECT at, data FROM blob_pieces
                 WHERE blob_id = $1 AND at < $3 AND at > $2::BIGINT - $4::BIGINT ORDER BY at",
                &[&id.as_slice(), &(offset as i64), &(end as i64), &MAX_PIECE],
            )?;
            for p in rows {
                let at = p.get::<_, i64>(0) as u64;
                let data: &[u8] = p.get(1);
                let from = offset.max(at);
                let to = end.min(at + data.len() as u64);
                if from < to {
                    if from != offset + out.len() as u64 {
                        return Err(StoreError::Corrupt("a blob's pieces leave a gap"));
                    }
                    out.extend_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                }
            }
            if out.len() as u64 != end - offset {
                return Err(StoreError::Corrupt("a blob's pieces end short"));
            }
            Ok((r.size, out))
        })
    }

    fn delete(&self, id: &BlobId, write_token: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let r = tx
                .query_opt(&format!("{SELECT} FOR UPDATE"), &[&id.as_slice()])?
                .ok_or(StoreError::UnknownBlob)?;
            owned(&row(&r), write_token)?;
            tx.execute("DELETE FROM blobs WHERE id = $1", &[&id.as_slice()])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn expire(&self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        let cutoff = i64::from(today.0) - i64::from(max_age_days);
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM blobs WHERE created_day < $1",
                &[&(cutoff.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)],
            )?)
        })
    }
}
