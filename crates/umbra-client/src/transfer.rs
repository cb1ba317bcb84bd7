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
use std::time::Duration;

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
/// Connections tried before a transfer gives up.
const ATTEMPTS: u32 = 6;

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

/// Reads chunk `index` of the padded stream of `file` (of `len` bytes):
/// the file's bytes, then zeros.
fn plain_chunk(file: &mut File, len: u64, index: u64) -> Result<Vec<u8>, ClientError> {
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
    file: &mut File,
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
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let key = AttachmentKey::generate();
    let total = sealed_len(size);
    let chunks = chunk_count(padded_len(size));
    // The digest first, from a local pass (sealing is cheap next to the
    // network), so a resumed upload needs no state of its own.
    let mut h = Sha256::new();
    for i in 0..chunks {
        h.update(sealed(&mut file, &key, size, i)?);
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
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match up.once(invite, route, &mut *progress).await {
            Ok(()) => break,
            Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                tracing::info!(error = %e, attempt, "upload interrupted; resuming");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
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
    file: File,
    key: AttachmentKey,
    size: u64,
    write_token: [u8; 32],
    /// Set once the server made the blob.
    blob_id: Option<Vec<u8>>,
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
        let step = (CHUNK + TAG) as u64;
        while !complete {
            progress(at, total);
            // The rest of the chunk the server is in, then whole chunks.
            let mut batch = Vec::with_capacity(IN_FLIGHT);
            let mut offset = at;
            while batch.len() < IN_FLIGHT && offset < total {
                let index = offset / step;
                let chunk = sealed(file, key, size, index)?;
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
    let total = sealed_len(blob.size);
    let part = part_path(dest);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_once(invite, route, &blob.blob_id, total, &part, &mut *progress).await {
            Ok(()) => break,
            Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                tracing::info!(error = %e, attempt, "download interrupted; resuming");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
    progress(total, total);
    open_part(&part, blob, dest)
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

/// Checks the sealed blob in `part` and opens it into `dest` (through a
/// temporary file, so `dest` appears whole or not at all); `part` is
/// removed once done, and left for a new download if refused.
fn open_part(part: &Path, blob: &BlobRef, dest: &Path) -> Result<(), ClientError> {
    let mut sealed_file = File::open(part)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK + TAG];
    loop {
        let n = sealed_file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if h.finalize().as_slice() != blob.digest {
        let _ = std::fs::remove_file(part);
        return Err(ClientError::Crypto(umbra_crypto::CryptoError::Attachment(
            "the attachment was altered or is not the one the message names",
        )));
    }
    let opener = Opener::new(&blob.key, blob.size);
    let tmp = dest.with_extension("opening");
    let mut out = File::create(&tmp)?;
    sealed_file.seek(SeekFrom::Start(0))?;
    for index in 0..opener.chunks() {
        let n = opener.sealed_chunk_len(index);
        sealed_file.read_exact(&mut buf[..n])?;
        match opener.open(index, &buf[..n]) {
            Ok(plain) => out.write_all(&plain)?,
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(part);
                return Err(e.into());
            }
        }
    }
    out.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    let _ = std::fs::remove_file(part);
    Ok(())
}

/// The key an attachment message carries, or why not.
pub fn key_of(bytes: &[u8]) -> Result<AttachmentKey, ClientError> {
    AttachmentKey::from_bytes(bytes).ok_or(ClientError::Crypto(
        umbra_crypto::CryptoError::Attachment("the message's attachment key is not 32 bytes"),
    ))
}
