//! Attachments in conversations: a file sent as a message (uploaded once,
//! whatever the number of recipients), a location, and what the profile
//! keeps of each attachment received so the user can save it.
//!
//! The message carries the blob's id, key, digest, exact size, name and
//! type inside MLS; the server holds only the sealed, padded blob
//! ([`crate::transfer`]). The history shows a line for it; the
//! `attachments` table keeps the rest, by message id.

use std::path::Path;

use rusqlite::{Connection, params};
use umbra_wire::e2e::{Attachment, Location, attachment::Kind, content};

use crate::ClientError;
use crate::client::Client;
use crate::model::Event;
use crate::transfer::{self, Progress};
use umbra_call::voice_note;

/// Where a message with an attachment goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A 1:1 conversation with this user.
    User(&'a str),
    /// The group of this name.
    Group(&'a str),
}

/// What describes an uploaded blob in its message.
struct Sent<'a> {
    name: String,
    media_type: &'static str,
    kind: Kind,
    duration_ms: u32,
    caption: &'a str,
    /// The file on this device it was sent from.
    local: Option<&'a Path>,
}

/// An attachment the profile knows of.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachmentEntry {
    /// The message id, in hex (`umbra save` takes a prefix of it).
    pub id: String,
    /// The conversation.
    pub conversation: String,
    /// Who sent it.
    pub sender: String,
    /// The file's name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// `file`, `photo` or `voice`.
    pub kind: &'static str,
    /// A voice message's length.
    pub duration_ms: u64,
    /// Where it is on this machine, once saved (or sent from).
    pub path: Option<String>,
    /// `fetched` (kept sealed in the profile: saving needs no network),
    /// `waiting` (on the server; `umbra save` fetches it), `gone` (expired
    /// or deleted on the server before it was fetched), `sent` (from this
    /// device) or `deleted` (sent from this device, then deleted from the
    /// server).
    pub state: &'static str,
}

/// What the history shows of an attachment.
pub fn describe(a: &Attachment) -> String {
    let what = match a.kind() {
        Kind::Voice => "voice message",
        Kind::Photo => "photo",
        Kind::File => "file",
    };
    let mut line = if a.kind() == Kind::Voice {
        format!(
            "[{what}: {}, {}]",
            duration_text(u64::from(a.duration_ms)),
            size_text(a.size)
        )
    } else {
        format!("[{what}: {} ({})]", a.name, size_text(a.size))
    };
    if !a.caption.is_empty() {
        line.push(' ');
        line.push_str(&a.caption);
    }
    line
}

/// A voice message's length as `m:ss`, rounded up to the second.
pub fn duration_text(duration_ms: u64) -> String {
    let secs = duration_ms.div_ceil(1000);
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// The name of an attachment kind, as stored.
pub(crate) fn kind_name(kind: i32) -> &'static str {
    match Kind::try_from(kind).unwrap_or(Kind::File) {
        Kind::Voice => "voice",
        Kind::Photo => "photo",
        Kind::File => "file",
    }
}

/// What the history shows of a location.
pub fn location_text(l: &Location) -> String {
    format!("[location: {:.6}, {:.6}]", l.latitude, l.longitude)
}

fn size_text(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n => format!("{:.2} GiB", n as f64 / f64::from(1u32 << 30)),
    }
}

/// A media type from a file name, for the recipient's display.
fn media_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "ogg" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A file name a sender gave, made safe to write: no directories, no
/// leading dots, not empty.
pub(crate) fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .to_string();
    if cleaned.is_empty() {
        "attachment".into()
    } else {
        cleaned
    }
}

/// Keeps what a received (or our own sent) attachment message says, once.
pub(crate) fn remember(
    conn: &Connection,
    group_id: &[u8],
    message_id: &[u8],
    a: &Attachment,
    path: Option<&Path>,
    write_token: Option<&[u8]>,
) -> Result<(), ClientError> {
    conn.execute(
        "INSERT OR IGNORE INTO attachments (message_id, group_id, blob_id, key, digest, size, name,
             media_type, kind, path, write_token, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            message_id,
            group_id,
            a.blob_id,
            a.key,
            a.digest,
            a.size as i64,
            safe_name(&a.name),
            a.media_type,
            a.kind,
            path.map(|p| p.to_string_lossy().into_owned()),
            write_token,
            i64::from(a.duration_ms),
        ],
    )?;
    Ok(())
}

/// Turns an attachment or location message into the text the history
/// shows, keeping an attachment's details.
pub(crate) fn arrived(
    conn: &Connection,
    group_id: &[u8],
    message_id: &[u8],
    body: Option<content::Body>,
) -> Result<Option<content::Body>, ClientError> {
    Ok(match body {
        Some(content::Body::Attachment(a)) => {
            remember(conn, group_id, message_id, &a, None, None)?;
            Some(content::Body::Text(describe(&a)))
        }
        Some(content::Body::Location(l)) => Some(content::Body::Text(location_text(&l))),
        other => other,
    })
}

impl Client {
    /// Uploads `path` (once, whatever the number of recipients) and sends
    /// it to `target` with `caption`.
    pub async fn send_file(
        &mut self,
        target: Target<'_>,
        path: &Path,
        caption: &str,
        kind: Kind,
        progress: Progress<'_>,
    ) -> Result<Vec<Event>, ClientError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if std::fs::metadata(path)
            .map(|m| !m.is_file())
            .unwrap_or(true)
        {
            return Err(ClientError::Invalid(format!(
                "{} is not a file that can be read",
                path.display()
            )));
        }
        let up = transfer::upload(&self.invite, &self.route(), path, progress).await?;
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let sent = Sent {
            name: safe_name(&name),
            media_type: media_type(&name),
            kind,
            duration_ms: 0,
            caption,
            local: Some(&absolute),
        };
        self.send_uploaded(target, up, sent).await
    }

    /// Records the WAV file `wav` as a voice message (Opus, in an Ogg
    /// file made in memory), uploads it and sends it to `target`.
    pub async fn send_voice(
        &mut self,
        target: Target<'_>,
        wav: &Path,
        caption: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<Event>, ClientError> {
        let (samples, rate) = umbra_call::audio::read_wav(wav, Some(voice_note::MAX_SECONDS))?;
        let mut ogg = Vec::new();
        let encoded = voice_note::encode(&samples, rate, &mut ogg)?;
        let stem = wav
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "voice".into());
        let up = transfer::upload_bytes(&self.invite, &self.route(), ogg, progress).await?;
        let sent = Sent {
            name: safe_name(&format!("{stem}.opus")),
            media_type: "audio/ogg",
            kind: Kind::Voice,
            duration_ms: u32::try_from(encoded.duration_ms).unwrap_or(u32::MAX),
            caption,
            local: None,
        };
        self.send_uploaded(target, up, sent).await
    }

    /// Sends the message for an uploaded blob and keeps what it says (and
    /// the token that deletes the blob).
    async fn send_uploaded(
        &mut self,
        target: Target<'_>,
        up: transfer::Uploaded,
        sent: Sent<'_>,
    ) -> Result<Vec<Event>, ClientError> {
        let attachment = Attachment {
            blob_id: up.blob.blob_id.clone(),
            key: up.blob.key.as_bytes().to_vec(),
            digest: up.blob.digest.to_vec(),
            size: up.blob.size,
            media_type: sent.media_type.to_string(),
            name: sent.name,
            kind: sent.kind as i32,
            duration_ms: sent.duration_ms,
            caption: sent.caption.to_string(),
        };
        let shown = describe(&attachment);
        let content = self.content(content::Body::Attachment(attachment.clone()));
        let message_id = content.message_id.clone();
        let events = self.send_to(target, content, &shown).await?;
        let group_id = match target {
            Target::User(u) => crate::conversations::direct_conversation(self.profile.conn(), u)?,
            Target::Group(g) => Some(self.group_id_by_name(g)?),
        };
        if let Some(group_id) = group_id {
            remember(
                self.profile.conn(),
                &group_id,
                &message_id,
                &attachment,
                sent.local,
                Some(&up.write_token),
            )?;
        }
        Ok(events)
    }

    /// Sends a location to `target`: it travels only inside the message.
    pub async fn send_location(
        &mut self,
        target: Target<'_>,
        latitude: f64,
        longitude: f64,
    ) -> Result<Vec<Event>, ClientError> {
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(ClientError::Invalid(
                "a location is LAT,LON with latitude in -90..90 and longitude in -180..180".into(),
            ));
        }
        let location = Location {
            latitude,
            longitude,
        };
        let shown = location_text(&location);
        let content = self.content(content::Body::Location(location));
        self.send_to(target, content, &shown).await
    }

    async fn send_to(
        &mut self,
        target: Target<'_>,
        content: umbra_wire::e2e::Content,
        shown: &str,
    ) -> Result<Vec<Event>, ClientError> {
        match target {
            Target::User(u) => self.send_content(u, content, shown).await,
            Target::Group(g) => self.group_send_content(g, content, shown).await,
        }
    }

    /// Every attachment this profile knows of, oldest first.
    pub fn attachments(&self) -> Result<Vec<AttachmentEntry>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT a.message_id, c.name, h.sender, a.name, a.media_type, a.size, a.path, a.kind,
                    a.duration_ms, a.fetched, a.write_token IS NOT NULL
             FROM attachments a JOIN history h ON h.message_id = a.message_id
             JOIN conversations c ON c.group_id = a.group_id ORDER BY h.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AttachmentEntry {
                id: hex::encode(r.get::<_, Vec<u8>>(0)?),
                conversation: r.get(1)?,
                sender: r.get(2)?,
                name: r.get(3)?,
                media_type: r.get(4)?,
                size: r.get::<_, i64>(5)? as u64,
                path: r.get(6)?,
                kind: kind_name(r.get(7)?),
                duration_ms: r.get::<_, i64>(8)? as u64,
                state: match (r.get::<_, i64>(9)?, r.get::<_, bool>(10)?) {
                    (-1, true) => "deleted",
                    (_, true) => "sent",
                    (1, _) => "fetched",
                    (-1, _) => "gone",
                    _ => "waiting",
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_senders_cannot_leave_the_directory() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name(""), "attachment");
        assert_eq!(safe_name(".."), "attachment");
        assert_eq!(safe_name("photo\u{7}.jpg"), "photo.jpg");
        assert_eq!(safe_name("holiday.JPG"), "holiday.JPG");
        assert_eq!(media_type("holiday.JPG"), "image/jpeg");
    }
}
