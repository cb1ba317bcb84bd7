//! Attachments after their message: fetching the sealed blob into the
//! profile (on arrival up to a size the user sets, or on demand), saving it
//! as a file, opening a voice message, and deleting one's own upload from
//! the server.
//!
//! A fetched blob stays sealed in `PROFILE/media/` under the key that only
//! the (encrypted) profile database holds, so fetching early gives a copied
//! profile directory nothing; saving opens it into a file the user names.

use std::path::{Path, PathBuf};

use rusqlite::params;
use umbra_wire::proto::{DeleteBlob, ErrorCode, client_frame::Body as Req};

use crate::ClientError;
use crate::attachments::kind_name;
use crate::client::Client;
use crate::conn::ServerConn;
use crate::model::Event;
use crate::profile::{get_setting, set_setting};
use crate::transfer::{self, BlobRef, Progress};

/// Attachments up to this size are fetched when their message arrives,
/// unless the user sets otherwise.
pub const DEFAULT_AUTO_FETCH: u64 = 16 << 20;
const AUTO_FETCH_SETTING: &str = "auto_fetch_bytes";
/// The largest voice message opened in memory (15 minutes at 24 kbit/s is
/// under 3 MB).
const MAX_VOICE_BYTES: u64 = 16 << 20;

/// An attachment as the profile keeps it.
struct Stored {
    message_id: Vec<u8>,
    blob: BlobRef,
    name: String,
    kind: &'static str,
    write_token: Option<Vec<u8>>,
}

fn no_blob(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Server {
            code: ErrorCode::NoSuchBlob,
            ..
        }
    )
}

impl Client {
    /// Attachments up to this many bytes are fetched as their message
    /// arrives (0: never; larger ones wait for `umbra save`).
    pub fn auto_fetch_limit(&self) -> Result<u64, ClientError> {
        Ok(get_setting(self.profile.conn(), AUTO_FETCH_SETTING)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(DEFAULT_AUTO_FETCH))
    }

    /// Sets [`Client::auto_fetch_limit`].
    pub fn set_auto_fetch_limit(&self, bytes: u64) -> Result<(), ClientError> {
        set_setting(
            self.profile.conn(),
            AUTO_FETCH_SETTING,
            &bytes.to_be_bytes(),
        )
    }

    /// Where the sealed copy of a blob is kept.
    fn media_path(&self, blob_id: &[u8]) -> PathBuf {
        self.profile.dir().join("media").join(hex::encode(blob_id))
    }

    /// The attachment of the message whose id starts with `id`.
    fn stored(&self, id: &str) -> Result<Stored, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT_STORED} WHERE ?1 <> '' AND substr(lower(hex(message_id)), 1, length(?1)) = ?1 LIMIT 2"
        ))?;
        let mut found = stmt
            .query_map([id.to_ascii_lowercase()], stored_row)?
            .collect::<Result<Vec<_>, _>>()?;
        match found.len() {
            1 => found.pop().ok_or(ClientError::Invalid(String::new()))?,
            0 => Err(ClientError::Invalid(format!(
                "no attachment with id `{id}`: `umbra attachments` lists them"
            ))),
            _ => Err(ClientError::Invalid(format!(
                "`{id}` names several attachments: give more of the id"
            ))),
        }
    }

    /// Makes sure the sealed blob is in the profile (downloading it,
    /// resumably, and checking its digest) and returns where.
    async fn fetch(&self, a: &Stored, progress: Progress<'_>) -> Result<PathBuf, ClientError> {
        let sealed = self.media_path(&a.blob.blob_id);
        if sealed.exists() {
            return Ok(sealed);
        }
        if let Some(dir) = sealed.parent() {
            crate::profile::make_dir(dir)?;
        }
        // Another process on this profile (`umbra listen` fetching on
        // arrival while `umbra save` runs) may be fetching it: one at a
        // time, and the second finds it done.
        let lock = std::fs::File::create(sealed.with_extension("lock"))?;
        lock.lock()?;
        if sealed.exists() {
            return Ok(sealed);
        }
        let part = transfer::part_path(&sealed);
        let fetched =
            transfer::fetch_sealed(&self.invite, &self.route(), &a.blob, &part, progress).await;
        let state = match &fetched {
            Ok(()) => {
                std::fs::rename(&part, &sealed)?;
                1
            }
            Err(e) if no_blob(e) => -1,
            Err(_) => 0,
        };
        self.profile.conn().execute(
            "UPDATE attachments SET fetched = ?2 WHERE message_id = ?1",
            params![a.message_id, state],
        )?;
        drop(lock);
        match fetched {
            Err(e) if no_blob(&e) => Err(ClientError::Invalid(format!(
                "`{}` is no longer on the server (it expired, or its sender deleted it) \
                 and was not fetched before",
                a.name
            ))),
            Err(e) => Err(e),
            Ok(()) => Ok(sealed),
        }
    }

    /// Fetches what arrived and is small enough ([`Client::auto_fetch_limit`]),
    /// so it can be saved later without the network, and before the server
    /// lets it expire. A failure is a warning: the next receive tries again
    /// (a blob gone from the server is not tried again).
    pub async fn fetch_arrived(&self) -> Result<Vec<Event>, ClientError> {
        let limit = self.auto_fetch_limit()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let waiting: Vec<Result<Stored, ClientError>> = {
            let conn = self.profile.conn();
            let mut stmt = conn.prepare(&format!(
                "{SELECT_STORED} WHERE fetched = 0 AND write_token IS NULL AND size <= ?1
                   AND message_id IN (SELECT message_id FROM history) ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([limit.min(i64::MAX as u64) as i64], stored_row)?;
            rows.collect::<Result<_, _>>()?
        };
        let mut events = Vec::new();
        for a in waiting {
            let a = a?;
            if let Err(e) = self.fetch(&a, &mut |_, _| {}).await {
                events.push(Event::Warning {
                    text: format!("could not fetch `{}` yet: {e}", a.name),
                });
                if !matches!(e, ClientError::Invalid(_)) {
                    // The server is unreachable: the rest would fail too.
                    break;
                }
            }
        }
        Ok(events)
    }

    /// Writes the attachment of the message whose id starts with `id` to
    /// `dest` (default: its name in the current directory; a directory
    /// keeps its name), fetching it first if needed. Returns where it went.
    pub async fn save_attachment(
        &mut self,
        id: &str,
        dest: Option<&Path>,
        progress: Progress<'_>,
    ) -> Result<PathBuf, ClientError> {
        let a = self.stored(id)?;
        let dest = match dest {
            Some(d) if d.is_dir() => d.join(&a.name),
            Some(d) => d.to_path_buf(),
            None => PathBuf::from(&a.name),
        };
        let sealed = self.fetch(&a, progress).await?;
        transfer::open_sealed(&sealed, &a.blob, &dest)?;
        let absolute = std::fs::canonicalize(&dest).unwrap_or_else(|_| dest.clone());
        self.profile.conn().execute(
            "UPDATE attachments SET path = ?2 WHERE message_id = ?1",
            params![a.message_id, absolute.to_string_lossy()],
        )?;
        Ok(dest)
    }

    /// The Ogg Opus bytes of the voice message whose id starts with `id`
    /// (fetched first if needed), for playing or exporting.
    pub async fn voice_message(
        &mut self,
        id: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<u8>, ClientError> {
        let a = self.stored(id)?;
        if a.kind != "voice" {
            return Err(ClientError::Invalid(format!(
                "`{}` is not a voice message: `umbra save` writes it to a file",
                a.name
            )));
        }
        if a.blob.size > MAX_VOICE_BYTES {
            return Err(ClientError::Invalid(format!(
                "`{}` is too large for a voice message",
                a.name
            )));
        }
        let sealed = self.fetch(&a, progress).await?;
        let mut ogg = Vec::new();
        transfer::open_sealed_into(&sealed, &a.blob, &mut ogg)?;
        Ok(ogg)
    }

    /// Deletes an attachment this device sent from the server: whoever has
    /// not fetched it yet can no longer get it. Returns its name.
    pub async fn delete_upload(&mut self, id: &str) -> Result<String, ClientError> {
        let a = self.stored(id)?;
        let Some(token) = a.write_token else {
            return Err(ClientError::Invalid(format!(
                "`{}` was not sent from this device: only its sender can delete it",
                a.name
            )));
        };
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let r = server
            .call(Req::DeleteBlob(DeleteBlob {
                blob_id: a.blob.blob_id.clone(),
                write_token: token,
            }))
            .await;
        server.close().await;
        match r {
            Ok(_) => {}
            // Gone already (expired, or deleted before): the same outcome.
            Err(e) if no_blob(&e) => {}
            Err(e) => return Err(e),
        }
        self.profile.conn().execute(
            "UPDATE attachments SET fetched = -1 WHERE message_id = ?1",
            params![a.message_id],
        )?;
        Ok(a.name)
    }
}

/// The columns [`stored_row`] reads.
const SELECT_STORED: &str =
    "SELECT message_id, blob_id, key, digest, size, name, kind, write_token FROM attachments";

/// One row of [`SELECT_STORED`]; a damaged row is an error of its own, not
/// a failed query.
fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Stored, ClientError>> {
    let message_id: Vec<u8> = r.get(0)?;
    let blob = blob_ref(
        r.get(1)?,
        &r.get::<_, Vec<u8>>(2)?,
        &r.get::<_, Vec<u8>>(3)?,
        r.get(4)?,
    );
    let name: String = r.get(5)?;
    let kind = kind_name(r.get(6)?);
    let write_token: Option<Vec<u8>> = r.get(7)?;
    Ok(blob.map(|blob| Stored {
        message_id,
        blob,
        name,
        kind,
        write_token,
    }))
}

/// A stored attachment's blob reference, or why it is damaged.
fn blob_ref(
    blob_id: Vec<u8>,
    key: &[u8],
    digest: &[u8],
    size: i64,
) -> Result<BlobRef, ClientError> {
    Ok(BlobRef {
        blob_id,
        key: transfer::key_of(key)?,
        digest: <[u8; 32]>::try_from(digest)
            .map_err(|_| ClientError::Invalid("a stored attachment digest is damaged".into()))?,
        size: size as u64,
    })
}
