//! Delivery and read receipts, end to end, in every conversation.
//!
//! What is stored; the operations are in [`crate::delivery`].
//!
//! - When a text is applied, its author is owed a *delivered* receipt; when
//!   the user is shown it (`Client::mark_read`), a *read* one (unless read
//!   receipts are off: then none is sent, and, as in the anchors, none is
//!   shown to us either). What is owed waits in `receipts_out`, written in
//!   the transaction that applied or showed the message, so a crash loses
//!   none; `Client::send_receipts` turns it into one `Receipt` per
//!   conversation, author and kind, an MLS application message sealed to the
//!   author's device only (the rest of a group learns nothing of who read
//!   what).
//! - Sealing a group's message to one member leaves a gap in the others'
//!   view of our sender ratchet. openmls follows a gap of up to 1,000
//!   generations; so after [`GAP_MAX`] such messages in a group, an empty
//!   `Content` goes to every member, which they apply and drop.
//! - Our own messages: each recipient's status is kept in `message_status`,
//!   written when the message is posted, and only ever moves forward (sent,
//!   delivered, read). A receipt counts only from a member the message was
//!   sent to, for a message we wrote in that conversation.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use umbra_wire::e2e::{Receipt, receipt};

use crate::profile::get_setting;
use crate::{ClientError, outbox};

/// Receipts sealed to single members of a group before an empty message
/// goes to all of them (openmls follows a sender ratchet 1,000 generations
/// ahead; this leaves room for our own messages in between).
pub const GAP_MAX: i64 = 500;

/// Most message ids in one receipt.
pub const IDS_MAX: usize = 512;

/// How far one of our messages has got with one recipient, or overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The server refused it for good (it will not reach them).
    Failed,
    /// Saved here; the server has not accepted it yet.
    Pending,
    /// The server holds it.
    Sent,
    /// The recipient's device has it.
    Delivered,
    /// The recipient has been shown it.
    Read,
}

impl Status {
    fn from_level(level: i64) -> Self {
        match level {
            2 => Status::Read,
            1 => Status::Delivered,
            0 => Status::Sent,
            _ => Status::Failed,
        }
    }
}

fn level(kind: receipt::Kind) -> Option<i64> {
    match kind {
        receipt::Kind::Delivered => Some(1),
        receipt::Kind::Read => Some(2),
        receipt::Kind::Unspecified => None,
    }
}

/// Whether this profile sends (and shows) read receipts; on by default.
pub fn read_receipts(conn: &Connection) -> Result<bool, ClientError> {
    Ok(get_setting(conn, "read_receipts")?.as_deref() != Some(b"off"))
}

/// Records, for a message we are posting, who it goes to (other people:
/// `me`'s own devices owe no receipts).
pub(crate) fn expect(
    conn: &Connection,
    message_id: &[u8],
    recipients: &[outbox::Recipient],
    me: &str,
) -> Result<(), ClientError> {
    for r in recipients.iter().filter(|r| r.username != me) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO message_status (message_id, username, level) VALUES (?1, ?2, 0)",
        )?
        .execute(params![message_id, r.username])?;
    }
    Ok(())
}

/// A text from `author` was applied: a delivered receipt is owed.
pub(crate) fn owe_delivered(
    conn: &Connection,
    group_id: &[u8],
    author: &str,
    message_id: &[u8],
) -> Result<(), ClientError> {
    conn.execute(
        "INSERT OR IGNORE INTO receipts_out (group_id, author, message_id, level) VALUES (?1, ?2, ?3, 1)",
        params![group_id, author, message_id],
    )?;
    Ok(())
}

/// A receipt from `from`, a member of `group_id` (authenticated by MLS).
/// Returns the ids it moved forward.
pub(crate) fn received(
    conn: &Connection,
    group_id: &[u8],
    from: &str,
    r: &Receipt,
) -> Result<Vec<Vec<u8>>, ClientError> {
    let Some(level) = level(r.kind()) else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    let show_read = read_receipts(conn)?;
    for id in r.message_ids.iter().take(IDS_MAX) {
        // Only for a message of ours in this conversation, from someone it
        // was sent to; and only forward.
        let before: Option<i64> = conn
            .query_row(
                "SELECT level FROM message_status
                 WHERE message_id = ?1 AND username = ?2
                   AND EXISTS (SELECT 1 FROM history h WHERE h.message_id = ?1
                               AND h.group_id = ?3 AND h.outgoing = 1)",
                params![id, from, group_id],
                |r| r.get(0),
            )
            .optional()?;
        let before = before.filter(|b| (0..level).contains(b));
        if let Some(before) = before {
            conn.execute(
                "UPDATE message_status SET level = ?3, at_ms = ?4 WHERE message_id = ?1 AND username = ?2",
                params![id, from, level, crate::now_ms() as i64],
            )?;
            // Each level passed is told once, in order (a read receipt that
            // comes first stands for the delivered one too).
            for l in (before + 1)..=level {
                match l {
                    1 => crate::journal::status(conn, id, from, "delivered")?,
                    2 if show_read => crate::journal::status(conn, id, from, "read")?,
                    _ => {}
                }
            }
            moved.push(id.clone());
        }
    }
    Ok(moved)
}

/// One of our messages' status: overall and per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageStatus {
    /// The least advanced recipient's status (`pending` while the server
    /// has not accepted every copy).
    pub status: Status,
    /// Each recipient's.
    pub recipients: Vec<RecipientStatus>,
}

/// Where one of our messages is with one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientStatus {
    /// Who.
    pub username: String,
    /// How far.
    pub status: Status,
}

/// The status of our message `message_id`, or None if it is not ours.
pub fn status(conn: &Connection, message_id: &[u8]) -> Result<Option<MessageStatus>, ClientError> {
    let outgoing: Option<bool> = conn
        .query_row(
            "SELECT outgoing FROM history WHERE message_id = ?1",
            [message_id],
            |r| r.get(0),
        )
        .optional()?;
    if outgoing != Some(true) {
        return Ok(None);
    }
    let show_read = read_receipts(conn)?;
    let mut stmt = conn.prepare(
        "SELECT username, level FROM message_status WHERE message_id = ?1 ORDER BY username",
    )?;
    let recipients: Vec<RecipientStatus> = stmt
        .query_map([message_id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))?
        .map(|row| {
            row.map(|(u, l)| {
                // With read receipts off, nobody's are shown (as the anchors
                // do: it works both ways).
                let l = if show_read { l } else { l.min(1) };
                RecipientStatus {
                    username: u,
                    status: Status::from_level(l),
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let queued: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE message_id = ?1)",
        [message_id],
        |r| r.get(0),
    )?;
    let status = if queued {
        Status::Pending
    } else {
        recipients
            .iter()
            .map(|r| r.status)
            .min()
            .unwrap_or(Status::Sent)
    };
    Ok(Some(MessageStatus { status, recipients }))
}
