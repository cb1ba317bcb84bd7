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

/// Chunks sent before waiting for their answers.
const IN_FLIGHT: usize = 8;
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
    mut file: Box<dyn Plain>,
    size: u64,
    progress: Progress<'_>,
) -> Result<Uploaded, ClientError> {
    let key = AttachmentKey::generate();
    let total = sealed_len(size);
    let chunks = chunk_count(padded_len(size));
    // The digest first, from a local pass (sealing is cheap next to the
    // network), so a resumed upload needs no state of its own.
    let mut h = Sha256::new();
    for i in 0..chunks {
        h.update(sealed(file.as_mut(), &key, size, i)?);
    }
    let digest: [u8; 32] = h.finalize().into();
    let mut write_token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut write_token);
    let mut up = Upload {
        file,
        key,
        size,
        write_token,
        blob_id: None,
        acknowledged: 0,
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
    file: Box<dyn Plain>,
    key: AttachmentKey,
    size: u64,
    write_token: [u8; 32],
    /// Set once the server made the blob.
    blob_id: Option<Vec<u8>>,
    /// Bytes the server has said it holds.
    acknowledged: u64,
}

impl Upload {
    /// One connection's worth: makes the blob if not yet made, asks where
    /// it stands, sends the rest.
    async fn once(
        &mut self,
        invite: &Invite,
        route: &Route,
        progress: Progress<'_>,
    ) -> Result<(), ClientError> {
        let Self {
            file,
            key,
            size,
            write_token,
            blob_id,
            acknowledged,
        } = self;
        let size = *size;
        let total = sealed_len(size);
        let mut conn = ServerConn::open(invite, route).await?;
        let id = match blob_id {
            Some(id) => id.clone(),
            None => {
                let r = conn
                    .call(Req::CreateBlob(CreateBlob {
                        size: total,
                        write_hash: Sha256::digest(*write_token).to_vec(),
                    }))
                    .await?;
                let Resp::BlobCreated(c) = r else {
                    return Err(ClientError::Protocol(format!("{r:?}")));
                };
                *blob_id = Some(c.blob_id.clone());
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
        let (mut at, mut complete) = blob_state(conn.call(put(0, Vec::new())).await?)?;
        *acknowledged = at;
        let step = (CHUNK + TAG) as u64;
        while !complete {
            progress(at, total);
            // The rest of the chunk the server is in, then whole chunks.
            let mut batch = Vec::with_capacity(IN_FLIGHT);
            let mut offset = at;
            while batch.len() < IN_FLIGHT && offset < total {
                let index = offset / step;
                let chunk = sealed(file.as_mut(), key, size, index)?;
                let skip = (offset - index * step) as usize;
                let data = chunk[skip..].to_vec();
                let next = offset + data.len() as u64;
                batch.push(put(offset, data));
                offset = next;
            }
            if batch.is_empty() {
                // Nothing left to send yet not complete: the server disagrees
                // about the size.
                return Err(ClientError::Protocol("the upload ended unfinished".into()));
            }
            for answer in conn.call_many(batch).await? {
                (at, complete) = blob_state(answer?)?;
                *acknowledged = at;
            }
        }
        conn.close().await;
        Ok(())
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
    let have = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut retry = Retry::new();
    loop {
        let before = have(sealed);
        match download_once(invite, route, &blob.blob_id, total, sealed, &mut *progress).await {
            Ok(()) => break,
            Err(e) => retry.after(e, before, have(sealed), "download").await?,
        }
    }
    progress(total, total);
    check_digest(sealed, blob)
}

async fn download_once(
    invite: &Invite,
    route: &Route,
    blob_id: &[u8],
    total: u64,
    part: &Path,
    progress: Progress<'_>,
) -> Result<(), ClientError> {
    let mut out = OpenOptions::new().create(true).append(true).open(part)?;
    let mut have = out.metadata()?.len();
    if have > total {
        return Err(ClientError::Invalid(format!(
            "{} is longer than the attachment: delete it and download again",
            part.display()
        )));
    }
    if have == total {
        return Ok(());
    }
    let mut conn = ServerConn::open(invite, route).await?;
    let want = (CHUNK + TAG) as u32;
    while have < total {
        progress(have, total);
        let mut batch = Vec::with_capacity(IN_FLIGHT);
        let mut offset = have;
        while batch.len() < IN_FLIGHT && offset < total {
            batch.push(Req::GetBlob(GetBlob {
                blob_id: blob_id.to_vec(),
                offset,
                max_bytes: want,
            }));
            offset += u64::from(want);
        }
        for answer in conn.call_many(batch).await? {
            let Resp::BlobData(d) = answer? else {
                return Err(ClientError::Protocol("not blob data".into()));
            };
            if d.size != total {
                return Err(ClientError::Crypto(umbra_crypto::CryptoError::Attachment(
                    "the server's blob is not the size the message gives",
                )));
            }
            if d.data.is_empty() && have < total {
                return Err(ClientError::Protocol("the server sent no bytes".into()));
            }
            out.write_all(&d.data)?;
            have += d.data.len() as u64;
        }
    }
    out.sync_all()?;
    conn.close().await;
    Ok(())
}

/// Checks the sealed blob in `sealed` against the digest the message
/// gives; deletes it if it differs (a new download starts afresh).
fn check_digest(sealed: &Path, blob: &BlobRef) -> Result<(), ClientError> {
    let mut file = File::open(sealed)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK + TAG];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if h.finalize().as_slice() != blob.digest {
        let _ = std::fs::remove_file(sealed);
        return Err(ClientError::Crypto(umbra_crypto::CryptoError::Attachment(
            "the attachment was altered or is not the one the message names",
        )));
    }
    Ok(())
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
