//! The journal: what happened to a device that an application must hear of
//! (a message received, a status of one of ours moving forward), kept until
//! the application says it has passed it on.
//!
//! Off unless the profile says so (`Client::keep_journal`): the business
//! host turns it on and turns each entry into a webhook. Each entry is
//! written in the transaction that made it true (the received message's,
//! the receipt's, the server's acceptance's), so a crash can neither lose
//! one nor write one for something that did not happen; an entry leaves the
//! journal only when [`Journal::done`] is called, so whoever passes them on
//! does so at least once. Entries keep their order (`seq`), and one
//! message's statuses are written in the order they happened, each only
//! once: sent, delivered, read, or failed.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::profile::get_setting;
use crate::profile_key::DataKey;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Entry {
    /// A text arrived.
    #[serde(rename = "message.received")]
    Received {
        /// The conversation (hex group id).
        conversation: String,
        /// Its name here (the sender's username for a 1:1 chat).
        conversation_name: String,
        /// The message id (hex).
        message: String,
        /// Who wrote it (authenticated by MLS).
        from: String,
        /// The text.
        text: String,
        /// When the sender says it was sent.
        sent_ms: u64,
    },
    /// One of our messages moved forward with one recipient.
    #[serde(rename = "message.status")]
    Status {
        /// The conversation (hex group id).
        conversation: String,
        /// The message id (hex).
        message: String,
        /// The recipient.
        recipient: String,
        /// `sent` (the server holds it), `delivered`, `read`, or `failed`
        /// (the server refused it for good).
        status: String,
    },
}

/// One entry as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Its place in the journal.
    pub seq: i64,
    /// The conversation it is about (entries of one are passed on in
    /// order).
    #[serde(skip)]
    pub conversation: Vec<u8>,
    /// A random id that stays the same however often it is passed on.
    pub id: String,
    /// When it was written.
    pub created_ms: u64,
    /// Failed attempts to pass it on so far.
    pub attempts: u32,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

/// Whether this profile keeps a journal.
pub(crate) fn enabled(conn: &Connection) -> Result<bool, ClientError> {
    Ok(get_setting(conn, "journal")?.as_deref() == Some(b"on"))
}

fn write(conn: &Connection, group_id: &[u8], entry: &Entry) -> Result<(), ClientError> {
    let body = serde_json::to_string(entry)
        .map_err(|e| ClientError::Protocol(format!("journal entry: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO journal (event_id, conversation, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        crate::client::random_bytes::<16>().to_vec(),
        group_id,
        body,
        crate::now_ms() as i64
    ])?;
    Ok(())
}

/// A text we applied, if the journal is on.
pub(crate) fn received(
    conn: &Connection,
    group_id: &[u8],
    conversation_name: &str,
    message_id: &[u8],
    from: &str,
    text: &str,
    sent_ms: u64,
) -> Result<(), ClientError> {
    if !enabled(conn)? {
        return Ok(());
    }
    write(
        conn,
        group_id,
        &Entry::Received {
            conversation: hex::encode(group_id),
            conversation_name: conversation_name.to_string(),
            message: hex::encode(message_id),
            from: from.to_string(),
            text: text.to_string(),
            sent_ms,
        },
    )
}

/// Our message `message_id` moved to `status` with `recipient`, if the
/// journal is on. The caller has just moved it (so each status is written
/// once).
pub(crate) fn status(
    conn: &Connection,
    message_id: &[u8],
    recipient: &str,
    status: &str,
) -> Result<(), ClientError> {
    if !enabled(conn)? {
        return Ok(());
    }
    let group_id: Option<Vec<u8>> = conn
        .prepare_cached("SELECT group_id FROM history WHERE message_id = ?1 AND outgoing = 1")?
        .query_row([message_id], |r| r.get(0))
        .optional()?;
    let Some(group_id) = group_id else {
        return Ok(());
    };
    write(
        conn,
        &group_id,
        &Entry::Status {
            conversation: hex::encode(&group_id),
            message: hex::encode(message_id),
            recipient: recipient.to_string(),
            status: status.to_string(),
        },
    )
}

/// A handle on a profile's journal, on a connection of its own (so it can
/// be read and emptied while the device runs elsewhere in the process).
pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Opens the journal of the profile in `dir` (which must exist),
    /// encrypted under `key` ([`crate::Client::key`]).
    pub fn open(dir: &Path, key: Option<&DataKey>) -> Result<Self, ClientError> {
        if !dir.join("profile.db").exists() {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        }
        Ok(Self {
            conn: crate::profile::connect(dir, key)?,
        })
    }

    /// Up to `limit` entries due at `now_ms`, in order, none behind an
    /// earlier one of its conversation that is waiting for a retry: whoever
    /// passes them on takes a conversation's entries one after another, in
    /// this order, and stops at the first that fails.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Record>, ClientError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        self.select(
            "SELECT j.seq, j.event_id, j.created_ms, j.attempts, j.body, j.conversation
             FROM journal j
             WHERE j.next_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM journal k WHERE k.conversation = j.conversation
                               AND k.seq < j.seq AND k.next_ms > ?1)
             ORDER BY j.seq LIMIT ?2",
            now,
            limit,
        )
    }

    /// Up to `limit` entries from `from_seq` on, in order, due or not.
    pub fn peek(&self, from_seq: i64, limit: usize) -> Result<Vec<Record>, ClientError> {
        self.select(
            "SELECT seq, event_id, created_ms, attempts, body, conversation FROM journal
             WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            from_seq,
            limit,
        )
    }

    fn select(&self, sql: &str, a: i64, limit: usize) -> Result<Vec<Record>, ClientError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![a, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id, created, attempts, body, conversation) = row?;
            let entry: Entry = serde_json::from_str(&body)
                .map_err(|e| ClientError::Protocol(format!("journal entry {seq}: {e}")))?;
            out.push(Record {
                seq,
                conversation,
                id: hex::encode(id),
                created_ms: created as u64,
                attempts: attempts as u32,
                entry,
            });
        }
        Ok(out)
    }

    /// The earliest time an entry is due, if any are waiting.
    pub fn next_due_ms(&self) -> Result<Option<u64>, ClientError> {
        let next: Option<i64> =
            self.conn
                .query_row("SELECT min(next_ms) FROM journal", [], |r| r.get(0))?;
        Ok(next.map(|n| n.max(0) as u64))
    }

    /// Entries waiting.
    pub fn len(&self) -> Result<usize, ClientError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> Result<bool, ClientError> {
        Ok(self.len()? == 0)
    }

    /// These entries were passed on: they leave the journal.
    pub fn done(&self, seqs: &[i64]) -> Result<(), ClientError> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM journal WHERE seq = ?1")?;
            for s in seqs {
                stmt.execute([s])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Passing entry `seq` on failed: try again at `next_ms`.
    pub fn retry(&self, seq: i64, next_ms: u64) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE journal SET attempts = attempts + 1, next_ms = ?2 WHERE seq = ?1",
            params![seq, next_ms as i64],
        )?;
        Ok(())
    }
}
