//! Attachment blobs over the protocol: anonymous create, in-order and
//! resumable upload, download by id, delete by the uploader.
//!
//! Nothing here learns who uploads or for whom: requests need no login, and
//! a blob is an id, a size and the hash of its uploader's write token. What
//! keeps anonymous uploads from filling the disk is this node's budget of
//! bytes per hour (reserved in full when a blob is created), the largest
//! size, and expiry. The storage work runs on blocking threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use umbra_store::{BlobId, BlobMeta, BlobState, BlobStore, Day, StoreError};
use umbra_wire::proto::{self, server_frame::Body as Resp};

use crate::connection::Conn;
use crate::error::RequestError;
use crate::metrics::inc;

/// The most a download answer carries (well inside the smallest frame
/// limit a server may set).
pub const MAX_READ: usize = 128 * 1024;

/// Where this node keeps blobs: files in its data directory, or, for
/// nodes sharing a PostgreSQL database, that database, so that a blob
/// uploaded through one node is fetched through any other.
pub fn open_store(config: &crate::config::ServerConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    use anyhow::Context;
    Ok(match &config.database {
        Some(url) => Arc::new(umbra_store::PgBlobStore::new(&url.0)),
        None => Arc::new(
            umbra_store::FsBlobStore::open(&config.data_dir.join("blobs"))
                .context("opening the attachment store")?,
        ),
    })
}

/// The blob store of this node with its limits.
pub struct Blobs {
    /// Where blobs live.
    pub store: Arc<dyn BlobStore>,
    /// Largest blob.
    pub max_bytes: u64,
    /// Bytes taken this hour.
    pub budget: ByteBudget,
}

/// Bytes accepted per hour on this node, from everyone together.
pub struct ByteBudget {
    per_hour: u64,
    window: Mutex<Option<(Instant, u64)>>,
}

impl ByteBudget {
    /// A budget of `per_hour` bytes.
    pub fn new(per_hour: u64) -> Self {
        Self {
            per_hour,
            window: Mutex::new(None),
        }
    }

    /// Reserves `bytes` from this hour's budget at `now`.
    pub fn take(&self, bytes: u64, now: Instant) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        let (start, used) = match *w {
            Some((start, used)) if now.duration_since(start) < Duration::from_secs(3600) => {
                (start, used)
            }
            _ => (now, 0),
        };
        if used.saturating_add(bytes) > self.per_hour {
            *w = Some((start, used));
            return false;
        }
        *w = Some((start, used + bytes));
        true
    }
}

fn blob_id(bytes: &[u8]) -> Result<BlobId, RequestError> {
    BlobId::try_from(bytes).map_err(|_| RequestError::InvalidArgument("blob id must be 16 bytes"))
}

fn store_error(e: StoreError) -> RequestError {
    match e {
        StoreError::UnknownBlob => RequestError::NoSuchBlob,
        StoreError::BlobOffset { expected } => RequestError::BlobOffset { expected },
        StoreError::BlobTooLong => RequestError::InvalidArgument("more bytes than the blob's size"),
        e => {
            tracing::error!(error = %e, "blob storage failed");
            RequestError::Internal
        }
    }
}

fn state(s: BlobState, size: u64) -> Resp {
    match s {
        BlobState::Partial(received) => Resp::BlobState(proto::BlobState {
            received,
            complete: false,
        }),
        BlobState::Complete => Resp::BlobState(proto::BlobState {
            received: size,
            complete: true,
        }),
    }
}

/// Runs blob file work off the connection's task.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| RequestError::Internal)?
        .map_err(store_error)
}

impl Conn {
    fn blobs(&self) -> &Blobs {
        &self.ctx.shared.blobs
    }

    pub(crate) async fn create_blob(&mut self, c: proto::CreateBlob) -> Result<Resp, RequestError> {
        let write_hash = <[u8; 32]>::try_from(c.write_hash.as_slice())
            .map_err(|_| RequestError::InvalidArgument("write hash must be 32 bytes"))?;
        let max = self.blobs().max_bytes;
        if c.size > max {
            return Err(RequestError::BlobTooLarge { max });
        }
        if !self.blobs().budget.take(c.size, Instant::now()) {
            return Err(RequestError::Busy(
                "this server takes no more attachments this hour",
            ));
        }
        let store = self.blobs().store.clone();
        let meta = BlobMeta {
            size: c.size,
            write_hash,
            day: Day::from_unix_seconds(crate::storage::unix_now()),
        };
        let id = blocking(move || {
            // A fresh random id; a collision (never, in practice) draws again.
            loop {
                let mut id = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut id);
                match store.create(&id, meta) {
                    Err(StoreError::IdCollision) => continue,
                    r => return r.map(|()| id),
                }
            }
        })
        .await?;
        inc(&self.ctx.shared.metrics.blobs_created);
        Ok(Resp::BlobCreated(proto::BlobCreated {
            blob_id: id.to_vec(),
        }))
    }

    pub(crate) async fn put_blob(&mut self, p: proto::PutBlob) -> Result<Resp, RequestError> {
        let id = blob_id(&p.blob_id)?;
        let store = self.blobs().store.clone();
        let len = p.data.len() as u64;
        let metrics = self.ctx.shared.metrics.clone();
        let (s, size) = blocking(move || {
            let s = if p.data.is_empty() {
                store.state(&id, &p.write_token)?
            } else {
                store.append(&id, &p.write_token, p.offset, &p.data)?
            };
            let size = match s {
                BlobState::Complete => store.read(&id, 0, 0)?.0,
                BlobState::Partial(n) => n,
            };
            Ok((s, size))
        })
        .await?;
        metrics
            .blob_bytes_received
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(state(s, size))
    }

    pub(crate) async fn get_blob(&mut self, g: proto::GetBlob) -> Result<Resp, RequestError> {
        let id = blob_id(&g.blob_id)?;
        let store = self.blobs().store.clone();
        let max = (g.max_bytes as usize).clamp(1, MAX_READ);
        let (size, data) = blocking(move || store.read(&id, g.offset, max)).await?;
        self.ctx
            .shared
            .metrics
            .blob_bytes_sent
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Resp::BlobData(proto::BlobData { data, size }))
    }

    pub(crate) async fn delete_blob(&mut self, d: proto::DeleteBlob) -> Result<Resp, RequestError> {
        let id = blob_id(&d.blob_id)?;
        let store = self.blobs().store.clone();
        blocking(move || store.delete(&id, &d.write_token)).await?;
        Ok(Resp::Accepted(proto::Accepted {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_budget_refills_each_hour() {
        let b = ByteBudget::new(100);
        let t = Instant::now();
        assert!(b.take(60, t));
        assert!(!b.take(41, t + Duration::from_secs(10)));
        assert!(b.take(40, t + Duration::from_secs(10)));
        assert!(!b.take(1, t + Duration::from_secs(3599)));
        assert!(b.take(100, t + Duration::from_secs(3601)));
    }
}
