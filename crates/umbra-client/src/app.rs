//! What an application that runs a device around the clock needs (the
//! business host, `umbra business serve`): sends in batches, each with an
//! idempotency key kept in the same transaction as the message, so a request
//! repeated after a crash or a timeout never sends twice; the journal of
//! what happened ([`crate::journal`]); and reads by conversation and
//! message id.
//!
//! A batch is one transaction: every message in it is encrypted, queued and
//! recorded, then committed at once (one disk sync for the lot), and the
//! outbox goes out in one connection afterwards. A message that fails (an
//! unknown conversation, an idempotency key reused for another request)
//! fails alone: each runs in a savepoint of its own.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::conversations::direct_conversation;
use crate::receipts::MessageStatus;
use crate::{ClientError, now_ms};

/// How long an idempotency key is remembered: a request repeated within
/// this time gets the first one's answer.
pub const IDEMPOTENCY_KEEP_MS: u64 = 24 * 3600 * 1000;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// The 1:1 conversation with this user (it must exist: see
    /// [`Client::open_conversation`]).
    User(String),
    /// A conversation by its id.
    Conversation(Vec<u8>),
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where.
    pub to: To,
    /// The text.
    pub text: String,
    /// Makes a repeated request answer with the first one's message.
    pub idempotency_key: Option<String>,
}

/// A message queued (or found already queued under its idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posted {
    /// The message's id (hex).
    pub id: String,
    /// The conversation's id (hex).
    pub conversation: String,
    /// Whether an earlier request with the same idempotency key made it.
    pub replayed: bool,
}

/// A conversation as an application lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppConversation {
    /// Its id (hex).
    pub id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// Its name here (the other side's username for a 1:1 chat).
    pub name: String,
    /// For a 1:1 chat, who with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// False once left.
    pub active: bool,
    /// When it began here.
    pub created_ms: u64,
}

/// A message as an application lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppMessage {
    /// Its id (hex).
    pub id: String,
    /// The conversation's id (hex).
    pub conversation: String,
    /// Who wrote it.
    pub from: String,
    /// Whether we did.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When it was sent, as its sender says.
    pub sent_ms: u64,
    /// Its place in this device's history (for paging).
    pub seq: i64,
    /// For one of ours: how far it got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MessageStatus>,
}

/// What is fingerprinted of a request, to tell a repeat from a new request
/// under the same key.
fn fingerprint(to: &To, text: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    match to {
        To::User(u) => {
            h.update(b"user\0");
            h.update(u.as_bytes());
        }
        To::Conversation(g) => {
            h.update(b"conversation\0");
            h.update(g);
        }
    }
    h.update(b"\0");
    h.update(text.as_bytes());
    h.finalize().to_vec()
}

/// The first answer to `key`, if it was used, or an error if it was used for
/// another request.
fn replay(conn: &Connection, key: &str, request: &[u8]) -> Result<Option<Posted>, ClientError> {
    let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT request, message_id, group_id FROM idempotency WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match row {
        None => Ok(None),
        Some((r, _, _)) if r != request => Err(ClientError::IdempotencyConflict(key.to_string())),
        Some((_, message_id, group_id)) => Ok(Some(Posted {
            id: hex::encode(message_id),
            conversation: hex::encode(group_id),
            replayed: true,
        })),
    }
}

impl Client {
    /// Keeps (or stops keeping) the journal of what happens to this device,
    /// for an application to pass on ([`crate::journal::Journal`]).
    pub fn keep_journal(&self, on: bool) -> Result<(), ClientError> {
        crate::profile::set_setting(
            self.profile.conn(),
            "journal",
            if on { b"on" } else { b"off" },
        )
    }

    /// Envelopes waiting in the outbox.
    pub fn outbox_pending(&self) -> Result<usize, ClientError> {
        crate::outbox::pending(self.profile.conn())
    }

    /// The 1:1 conversation with `user`, if there is one.
    pub fn conversation_with(&self, user: &str) -> Result<Option<Vec<u8>>, ClientError> {
        direct_conversation(self.profile.conn(), user)
    }

    /// The 1:1 conversation with `user`, started if there is none (which
    /// asks the server for their key package: [`ClientError::UnknownUser`]
    /// if there is no such user).
    pub async fn open_conversation(&mut self, user: &str) -> Result<Vec<u8>, ClientError> {
        crate::validate_username(user).map_err(|_| ClientError::UnknownUser(user.to_string()))?;
        crate::blocking::refuse_blocked(self.profile.conn(), user)?;
        if user == self.username() {
            return Err(ClientError::Invalid(
                "a conversation needs someone else".into(),
            ));
        }
        match self.conversation_with(user)? {
            Some(g) => Ok(g),
            None => self.start_conversation(user, None, &[user]).await,
        }
    }

    /// The first answer to `key` for this request, if it was used (an
    /// error if it was used for another request): lets an application
    /// answer a repeat without opening a conversation again.
    pub fn replayed(&self, key: &str, to: &To, text: &str) -> Result<Option<Posted>, ClientError> {
        replay(self.profile.conn(), key, &fingerprint(to, text))
    }

    /// Encrypts and queues every message of `batch` in one transaction,
    /// each on its own (one's failure leaves the others). Returns each one's
    /// outcome, in order. The caller flushes the outbox afterwards.
    pub fn post_batch(
        &mut self,
        batch: &[Outgoing],
    ) -> Result<Vec<Result<Posted, ClientError>>, ClientError> {
        let mut tx = self.profile.write()?;
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            let sp = tx.savepoint()?;
            let r = self.post_one(&sp, item);
            if r.is_ok() {
                sp.commit()?;
            }
            out.push(r);
        }
        // Keys older than a day are forgotten, a bounded number at a time.
        let before = now_ms().saturating_sub(IDEMPOTENCY_KEEP_MS) as i64;
        tx.prepare_cached(
            "DELETE FROM idempotency WHERE key IN
               (SELECT key FROM idempotency WHERE created_ms < ?1 LIMIT 1000)",
        )?
        .execute([before])?;
        tx.commit()?;
        Ok(out)
    }

    fn post_one(&self, conn: &Connection, item: &Outgoing) -> Result<Posted, ClientError> {
        let request = fingerprint(&item.to, &item.text);
        if let Some(key) = &item.idempotency_key
            && let Some(first) = replay(conn, key, &request)?
        {
            return Ok(first);
        }
        let group_id = match &item.to {
            To::User(u) => {
                crate::blocking::refuse_blocked(conn, u)?;
                direct_conversation(conn, u)?
                    .ok_or_else(|| ClientError::UnknownConversation(u.clone()))?
            }
            To::Conversation(g) => {
                let active: Option<bool> = conn
                    .prepare_cached("SELECT active FROM conversations WHERE group_id = ?1")?
                    .query_row([g], |r| r.get(0))
                    .optional()?;
                if active != Some(true) {
                    return Err(ClientError::UnknownConversation(hex::encode(g)));
                }
                g.clone()
            }
        };
        let message_id = self.post_in(conn, &group_id, &item.text)?;
        if let Some(key) = &item.idempotency_key {
            conn.prepare_cached(
                "INSERT INTO idempotency (key, request, message_id, group_id, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![key, request, message_id, group_id, now_ms() as i64])?;
        }
        Ok(Posted {
            id: hex::encode(message_id),
            conversation: hex::encode(group_id),
            replayed: false,
        })
    }

    /// Conversations, oldest first, `limit` at most, after the one whose id
    /// is `after` (hex) if given.
    pub fn app_conversations(
        &self,
        limit: usize,
        after: Option<&[u8]>,
    ) -> Result<Vec<AppConversation>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT group_id, kind, name, peer, active, created_ms FROM conversations
             WHERE ?1 IS NULL OR (created_ms, group_id) >
                   (SELECT created_ms, group_id FROM conversations WHERE group_id = ?1)
             ORDER BY created_ms, group_id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok(AppConversation {
                id: hex::encode(r.get::<_, Vec<u8>>(0)?),
                kind: r.get(1)?,
                name: r.get(2)?,
                peer: r.get(3)?,
                active: r.get(4)?,
                created_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether the conversation `group_id` exists here.
    pub fn has_conversation(&self, group_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self.profile.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1)",
            [group_id],
            |r| r.get(0),
        )?)
    }

    /// The texts of a conversation, newest first, `limit` at most, before
    /// the place `before` if given.
    pub fn app_messages(
        &self,
        group_id: &[u8],
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<AppMessage>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(&format!(
            "{MESSAGE_COLUMNS} WHERE group_id = ?1 AND kind = 'text' AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![group_id, before, limit as i64], message_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(with_status(conn, row?)?);
        }
        Ok(out)
    }

    /// One message by id, with its status if it is ours.
    pub fn app_message(&self, message_id: &[u8]) -> Result<Option<AppMessage>, ClientError> {
        let conn = self.profile.conn();
        let row = conn
            .query_row(
                &format!("{MESSAGE_COLUMNS} WHERE message_id = ?1 AND kind = 'text'"),
                [message_id],
                message_row,
            )
            .optional()?;
        row.map(|m| with_status(conn, m)).transpose()
    }

    /// Marks the conversation `group_id` as read by the application: read
    /// receipts go back (with the next flush) for what it holds.
    pub fn app_mark_read(&self, group_id: &[u8]) -> Result<(), ClientError> {
        self.mark_read_group(Some(group_id))?;
        self.queue_receipts()
    }
}

/// What a message row of the history is read with.
const MESSAGE_COLUMNS: &str =
    "SELECT id, message_id, group_id, sender, outgoing, body, sent_ms FROM history";

/// A row read with [`MESSAGE_COLUMNS`], without its status yet.
fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppMessage> {
    Ok(AppMessage {
        seq: r.get(0)?,
        id: hex::encode(r.get::<_, Vec<u8>>(1)?),
        conversation: hex::encode(r.get::<_, Vec<u8>>(2)?),
        from: r.get(3)?,
        outgoing: r.get(4)?,
        text: r.get(5)?,
        sent_ms: r.get::<_, i64>(6)? as u64,
        status: None,
    })
}

/// `m` with its status, if it is one of ours.
fn with_status(conn: &Connection, mut m: AppMessage) -> Result<AppMessage, ClientError> {
    if m.outgoing {
        let id = hex::decode(&m.id).map_err(|e| ClientError::Protocol(e.to_string()))?;
        m.status = crate::receipts::status(conn, &id)?;
    }
    Ok(m)
}
