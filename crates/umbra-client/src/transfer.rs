//! Moving attachment blobs: a file sealed and uploaded chunk by chunk, and
//! a blob downloaded, checked and opened into a file. Both hold one chunk
//! per request in memory (a few in flight), never the file, and both resume
//! after a dropped connection: an upload from where the server says it
//! stands (a chunk is sealed again, sealing being deterministic under the
//! file's key), a download from the bytes already in its `.part` file.
//!
//! Every connection here is anonymous: nothing ties an upload or a download
//! to an account.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use umbra_crypto::attachment::{
    AttachmentKey, CHUNK, Opener, TAG, chunk_count, padded_len, seal_chunk, sealed_len,
};
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;
use umbra_wire::proto::{
    CreateBlob, ErrorCode, GetBlob, PutBlob, client_frame::Body as Req, server_frame::Body as Resp,
};

use crate::ClientError;
use crate::conn::ServerConn;

/// Requests kept in flight.
const IN_FLIGHT: usize = 8;
/// Bytes a download asks for at once: the most a server gives.
const READ: usize = 128 * 1024;
/// How long a transfer keeps reconnecting while nothing moves (a server
/// restarting, a network coming back) before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// First and longest wait between reconnections.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(4);

/// When to try another connection: at once after progress, with growing
/// waits while nothing moves, never after a refusal.
struct Retry {
    stalled_since: Option<Instant>,
    wait: Duration,
}

impl Retry {
    fn new() -> Self {
        Self {
            stalled_since: None,
            wait: RETRY_MIN,
        }
    }

    /// After a failed connection that got as far as `done` bytes (`before`
    /// when it started): waits and returns `Ok` to go on, or the error.
    async fn after(
        &mut self,
        e: ClientError,
        before: u64,
        done: u64,
        what: &str,
    ) -> Result<(), ClientError> {
        if !retryable(&e) {
            return Err(e);
        }
        if done > before {
            self.stalled_since = None;
            self.wait = RETRY_MIN;
        }
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= PATIENCE {
            return Err(e);
        }
        tracing::warn!(error = %e, done, "{what} interrupted; resuming");
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(RETRY_MAX);
        Ok(())
    }
}

/// What a recipient needs to fetch and open a file: what the message that
/// carries it holds.
#[derive(Debug, Clone)]
pub struct BlobRef {
    /// The blob's id on the server.
    pub blob_id: Vec<u8>,
    /// The file's key.
    pub key: AttachmentKey,
    /// SHA-256 of the sealed blob.
    pub digest: [u8; 32],
    /// The file's size.
    pub size: u64,
}

/// A finished upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// What the message carries.
    pub blob: BlobRef,
    /// The uploader's token (to delete the blob).
    pub write_token: [u8; 32],
}

/// Where a transfer stands: bytes done of the total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What an upload reads from: a file, or bytes made on this device (a
/// voice message).
pub trait Plain: Read + Seek + Send {}
impl<T: Read + Seek + Send> Plain for T {}

/// Reads chunk `index` of the padded stream of `file` (of `len` bytes):
/// the file's bytes, then zeros.
fn plain_chunk(file: &mut dyn Plain, len: u64, index: u64) -> Result<Vec<u8>, ClientError> {
    let padded = padded_len(len);
    let start = index * CHUNK as u64;
    let end = (start + CHUNK as u64).min(padded);
    let mut buf = vec![0u8; (end - start) as usize];
    if start < len {
        let real = (len.min(end) - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..real])?;
    }
    Ok(buf)
}

fn sealed(
    file: &mut dyn Plain,
    key: &AttachmentKey,
    len: u64,
    index: u64,
) -> Result<Vec<u8>, ClientError> {
    let last = index + 1 == chunk_count(padded_len(len));
    Ok(seal_chunk(
        key,
        index,
        &plain_chunk(file, len, index)?,
        last,
    )?)
}

/// Whether a failure is worth another connection (the network, or a
/// server restarting), not a refusal.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Net(_) | ClientError::Unreachable { .. } => true,
        ClientError::Server { code, .. } => {
            matches!(code, ErrorCode::Internal | ErrorCode::Busy)
        }
        _ => false,
    }
}

fn blob_state(r: Resp) -> Result<(u64, bool), ClientError> {
    match r {
        Resp::BlobState(s) => Ok((s.received, s.complete)),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

/// Seals `path` under a fresh key and uploads it, resuming after dropped
/// connections.
pub async fn upload(
    invite: &Invite,
    route: &Route,
    path: &Path,
    progress: Progress<'_>,
) -> Result<Uploaded, ClientError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    upload_from(invite, route, Box::new(file), size, progress).await
}

/// [`upload`] of bytes in memory.
pub async fn upload_bytes(
    invite: &Invite,
    route: &Route,
    bytes: Vec<u8>,
    progress: Progress<'_>,
) -> Result<Uploaded, ClientError> {
    let size = bytes.len() as u64;
    upload_from(
        invite,
        route,
        Box::new(std::io::Cursor::new(bytes)),
        size,
        progress,
    )
    .await
}

async fn upload_from(
    invite: &Invite,
    route: &Route,
    file: Box<dyn Plain>,
    size: u64,
    progress: Progress<'_>,
) -> Result<Uploaded, ClientError> {
    let key = AttachmentKey::generate();
    let total = sealed_len(size);
    let mut write_token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut write_token);
    let mut up = Upload {
        file: Some(file),
        key,
        size,
        write_token,
        blob_id: None,
        acknowledged: 0,
        digest: Sha256::new(),
        hashed: 0,
    };
    let mut retry = Retry::new();
    loop {
        let before = up.acknowledged;
        match up.once(invite, route, &mut *progress).await {
            Ok(()) => break,
            Err(e) => retry.after(e, before, up.acknowledged, "upload").await?,
        }
    }
    progress(total, total);
    // Every chunk went through `Upload::hashed` in order, unless the server
    // said "complete" early; those left are hashed here.
    let chunks = chunk_count(padded_len(size));
    let mut file = up
        .file
        .take()
        .ok_or(ClientError::Protocol("the upload lost its file".into()))?;
    while up.hashed < chunks {
        let chunk = sealed(file.as_mut(), &up.key, size, up.hashed)?;
        up.hashed(up.hashed, &chunk);
    }
    let digest: [u8; 32] = up.digest.finalize().into();
    Ok(Uploaded {
        blob: BlobRef {
            blob_id: up.blob_id.unwrap_or_default(),
            key: up.key,
            digest,
            size,
        },
        write_token: up.write_token,
    })
}

/// An upload under way: what a new connection needs to go on with it.
struct Upload {
    /// What is uploaded (lent to the sealing thread while a connection
    /// lasts).
    file: Option<Box<dyn Plain>>,
    key: AttachmentKey,
    size: u64,
    write_token: [u8; 32],
    /// Set once the server made the blob.
    blob_id: Option<Vec<u8>>,
    /// Bytes the server has said it holds.
    acknowledged: u64,
    /// SHA-256 of the sealed chunks `0..hashed`: each chunk is hashed the
    /// first time it is sealed (sealing is deterministic, so a chunk sealed
    /// again after a resume is the same bytes).
    digest: Sha256,
    hashed: u64,
}

impl Upload {
    /// Adds sealed chunk `index` to the digest if it is the next one.
    fn hashed(&mut self, index: u64, chunk: &[u8]) {
        if index == self.hashed {
            self.digest.update(chunk);
            self.hashed += 1;
        }
    }

    /// One connection's worth: makes the blob if not yet made, asks where
    /// it stands, sends the rest with [`IN_FLIGHT`] chunks kept in flight,
    /// sealed on a thread of their own a few chunks ahead.
    async fn once(
        &mut self,
        invite: &Invite,
        route: &Route,
        progress: Progress<'_>,
    ) -> Result<(), ClientError> {
        let size = self.size;
        let total = sealed_len(size);
        let write_token = self.write_token;
        let mut conn = ServerConn::open(invite, route).await?;
        let id = match &self.blob_id {
            Some(id) => id.clone(),
            None => {
                let r = conn
                    .call(Req::CreateBlob(CreateBlob {
                        size: total,
                        write_hash: Sha256::digest(write_token).to_vec(),
                    }))
                    .await?;
                let Resp::BlobCreated(c) = r else {
                    return Err(ClientError::Protocol(format!("{r:?}")));
                };
                self.blob_id = Some(c.blob_id.clone());
                c.blob_id
            }
        };
        let put = |offset: u64, data: Vec<u8>| {
            Req::PutBlob(PutBlob {
                blob_id: id.clone(),
                write_token: write_token.to_vec(),
                offset,
                data,
            })
        };
        let (at, complete) = blob_state(conn.call(put(0, Vec::new())).await?)?;
        self.acknowledged = at;
        if complete {
            conn.close().await;
            return Ok(());
        }
        let step = (CHUNK + TAG) as u64;
        let (first, chunks) = (at / step, chunk_count(padded_len(size)));
        let (tx, mut rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let mut file = self
            .file
            .take()
            .ok_or(ClientError::Protocol("the upload lost its file".into()))?;
        let key = self.key.clone();
        let sealer = tokio::task::spawn_blocking(move || {
            for index in first..chunks {
                let chunk = sealed(file.as_mut(), &key, size, index).map(|c| (index, c));
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    break;
                }
            }
            file
        });
        let sent = self.stream(&mut conn, &mut rx, &put, at, progress).await;
        drop(rx);
        self.file = Some(
            sealer
                .await
                .map_err(|e| ClientError::Protocol(format!("sealing stopped: {e}")))?,
        );
        sent?;
        conn.close().await;
        Ok(())
    }

    /// Sends the sealed chunks `rx` gives from byte `at` on, keeping
    /// [`IN_FLIGHT`] requests in flight, until the server holds it all.
    async fn stream(
        &mut self,
        conn: &mut ServerConn,
        rx: &mut tokio::sync::mpsc::Receiver<Result<(u64, Vec<u8>), ClientError>>,
        put: &impl Fn(u64, Vec<u8>) -> Req,
        mut at: u64,
        progress: Progress<'_>,
    ) -> Result<(), ClientError> {
        let total = sealed_len(self.size);
        let step = (CHUNK + TAG) as u64;
        let (mut offset, mut in_flight, mut complete) = (at, 0usize, false);
        loop {
            while in_flight < IN_FLIGHT && offset < total {
                let Some(next) = rx.recv().await else {
                    return Err(ClientError::Protocol("sealing stopped".into()));
                };
                let (index, chunk) = next?;
                self.hashed(index, &chunk);
                // The rest of the chunk the server is in, then whole chunks.
                let skip = (offset - index * step) as usize;
                let data = if skip == 0 {
                    chunk
                } else {
                    chunk[skip..].to_vec()
                };
                offset += data.len() as u64;
                conn.queue(put(offset - data.len() as u64, data))?;
                in_flight += 1;
            }
            if in_flight == 0 {
                if complete {
                    return Ok(());
                }
                // Nothing left to send yet not complete: the server
                // disagrees about the size.
                return Err(ClientError::Protocol("the upload ended unfinished".into()));
            }
            conn.flush().await?;
            let (_, answer) = conn.next_reply().await?;
            in_flight -= 1;
            let (held, done) = blob_state(answer?)?;
            at = at.max(held);
            complete |= done;
            self.acknowledged = at;
            progress(at, total);
        }
    }
}

/// Where a download keeps what it has so far.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads the file `blob` names and writes it to `dest`: the sealed
/// bytes go to `dest.part` (a download resumes from its length), are
/// checked against the digest, then opened chunk by chunk into `dest`.
pub async fn download(
    invite: &Invite,
    route: &Route,
    blob: &BlobRef,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<(), ClientError> {
    let part = part_path(dest);
    fetch_sealed(invite, route, blob, &part, progress).await?;
    open_sealed(&part, blob, dest)?;
    let _ = std::fs::remove_file(&part);
    Ok(())
}

/// Downloads the sealed blob `blob` names into `sealed` (resuming from
/// what is there already) and checks it against the message's digest: a
/// blob the server changed is deleted and refused.
pub async fn fetch_sealed(
    invite: &Invite,
    route: &Route,
    blob: &BlobRef,
    sealed: &Path,
    progress: Progress<'_>,
) -> Result<(), ClientError> {
    let total = sealed_len(blob.size);
    let mut out = OpenOptions::new().create(true).append(true).open(sealed)?;
    let have = out.metadata()?.len();
    if have > total {
        drop(out);
        let _ = std::fs::remove_file(sealed);
        return Err(ClientError::Invalid(format!(
            "{} was longer than the attachment and was deleted: download it again",
            sealed.display()
        )));
    }
    // The digest goes along with the download; a resumed one first reads
    // what an earlier run left.
    let mut digest = Sha256::new();
    let mut kept = File::open(sealed)?;
    let mut buf = vec![0u8; CHUNK + TAG];
    loop {
        let n = kept.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    let mut down = Download {
        out: &mut out,
        digest,
        have,
        total,
    };
    let mut retry = Retry::new();
    loop {
        let before = down.have;
        match down
            .once(invite, route, &blob.blob_id, &mut *progress)
            .await
        {
            Ok(()) => break,
            Err(e) => retry.after(e, before, down.have, "download").await?,
        }
    }
    down.out.sync_all()?;
    progress(total, total);
    if down.digest.finalize().as_slice() != blob.digest {
        let _ = std::fs::remove_file(sealed);
        return Err(ClientError::Crypto(umbra_crypto::CryptoError::Attachment(
            "the attachment was altered or is not the one the message names",
        )));
    }
    Ok(())
}

/// A download under way: the sealed bytes so far, written and hashed.
struct Download<'a> {
    out: &'a mut File,
    digest: Sha256,
    have: u64,
    total: u64,
}

impl Download<'_> {
    /// One connection's worth, [`IN_FLIGHT`] requests in flight; answers
    /// are written in order whatever order they come in.
    async fn once(
        &mut self,
        invite: &Invite,
        route: &Route,
        blob_id: &[u8],
        progress: Progress<'_>,
    ) -> Result<(), ClientError> {
        if self.have == self.total {
            return Ok(());
        }
        let mut conn = ServerConn::open(invite, route).await?;
        let want = READ as u64;
        let mut asked = self.have;
        let mut pending: std::collections::HashMap<u64, u64> = Default::default();
        let mut arrived: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        while self.have < self.total {
            while pending.len() < IN_FLIGHT && asked < self.total {
                let id = conn.queue(Req::GetBlob(GetBlob {
                    blob_id: blob_id.to_vec(),
                    offset: asked,
                    max_bytes: want as u32,
                }))?;
                pending.insert(id, asked);
                asked += want.min(self.total - asked);
            }
            conn.flush().await?;
            let (id, answer) = conn.next_reply().await?;
            let offset = pending.remove(&id).ok_or_else(|| {
                ClientError::Protocol(format!("answer to request {id}, not asked"))
            })?;
            let Resp::BlobData(d) = answer? else {
                return Err(ClientError::Protocol("not blob data".into()));
            };
            if d.size != self.total {
                return Err(ClientError::Crypto(umbra_crypto::CryptoError::Attachment(
                    "the server's blob is not the size the message gives",
                )));
            }
            let expected = want.min(self.total - offset);
            if d.data.len() as u64 != expected {
                return Err(ClientError::Protocol(format!(
                    "the server sent {} bytes where {expected} were asked",
                    d.data.len()
                )));
            }
            arrived.insert(offset, d.data);
            while let Some(data) = arrived.remove(&self.have) {
                self.out.write_all(&data)?;
                self.digest.update(&data);
                self.have += data.len() as u64;
            }
            progress(self.have, self.total);
        }
        conn.close().await;
        Ok(())
    }
}

/// Opens the checked sealed blob in `sealed` into `dest` (through a
/// temporary file, so `dest` appears whole or not at all).
pub fn open_sealed(sealed: &Path, blob: &BlobRef, dest: &Path) -> Result<(), ClientError> {
    let tmp = dest.with_extension("opening");
    let result = File::create(&tmp)
        .map_err(ClientError::from)
        .and_then(|mut out| {
            open_sealed_into(sealed, blob, &mut out)?;
            out.sync_all()?;
            Ok(())
        });
    match result {
        Ok(()) => Ok(std::fs::rename(&tmp, dest)?),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Opens the sealed blob in `sealed` chunk by chunk into `out`; a chunk
/// that does not open (a wrong key, a cut or changed blob) stops it with
/// the reason.
pub fn open_sealed_into(
    sealed: &Path,
    blob: &BlobRef,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut file = File::open(sealed)?;
    let opener = Opener::new(&blob.key, blob.size);
    let mut buf = vec![0u8; CHUNK + TAG];
    for index in 0..opener.chunks() {
        let n = opener.sealed_chunk_len(index);
        file.read_exact(&mut buf[..n])?;
        out.write_all(&opener.open(index, &buf[..n])?)?;
    }
    Ok(())
}

/// The key an attachment message carries, or why not.
pub fn key_of(bytes: &[u8]) -> Result<AttachmentKey, ClientError> {
    AttachmentKey::from_bytes(bytes).ok_or(ClientError::Crypto(
        umbra_crypto::CryptoError::Attachment("the message's attachment key is not 32 bytes"),
    ))
}
