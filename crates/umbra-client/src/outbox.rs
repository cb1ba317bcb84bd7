//! Sealed envelopes waiting for the server.
//!
//! Envelopes are written here in the same transaction as the MLS operation
//! that produced them, and deleted only after the server answered
//! `Accepted` (stored durably). A crash in between means the envelope is sent
//! again on the next run; the recipient recognises the identical envelope and
//! shows it once.

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use umbra_wire::e2e::{SealedContent, sealed_content};
use umbra_wire::proto::{ErrorCode, SendEnvelope, ServerHello, client_frame};

use crate::ClientError;
use crate::conn::ServerConn;
use crate::model::Event;
use crate::profile::{get_setting, set_setting};

/// The largest envelope the server takes, until it has said (the server's
/// own default).
const DEFAULT_MAX_ENVELOPE: usize = 128 * 1024;

/// Keeps the server's envelope limit from its hello, so that a message too
/// large for it is refused here, before anything is written, rather than
/// by the server after the message shows as sent.
pub fn remember_limit(conn: &Connection, hello: &ServerHello) -> Result<(), ClientError> {
    if hello.max_envelope_bytes > 0 {
        set_setting(
            conn,
            "max_envelope_bytes",
            &hello.max_envelope_bytes.to_be_bytes(),
        )?;
    }
    Ok(())
}

fn max_envelope(conn: &Connection) -> Result<usize, ClientError> {
    Ok(get_setting(conn, "max_envelope_bytes")?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(|b| u32::from_be_bytes(b) as usize)
        .unwrap_or(DEFAULT_MAX_ENVELOPE))
}

/// Where one copy of a message goes.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// For messages to the user only.
    pub username: String,
    /// Which of the user's devices.
    pub identity_key: Vec<u8>,
    /// The device mailbox.
    pub mailbox_id: Vec<u8>,
    /// The device sealing key.
    pub sealing_key: [u8; 32],
    /// Their delivery token, if they gave us one.
    pub delivery_token: Option<Vec<u8>>,
}

/// Seals `mls_message` to one device's sealing key.
pub fn seal(mls_message: &[u8], sealing_key: &[u8; 32]) -> Result<Vec<u8>, ClientError> {
    let inner = SealedContent {
        body: Some(sealed_content::Body::MlsMessage(mls_message.to_vec())),
    }
    .encode_to_vec();
    Ok(umbra_crypto::seal::seal(sealing_key, &inner)?)
}

/// Seals `mls_message` to each recipient and queues the envelopes. An
/// envelope over the server's limit is [`ClientError::TooLarge`], and since
/// `conn` is the transaction of the operation that made the message, none
/// of it is kept.
pub fn enqueue(
    conn: &Connection,
    mls_message: &[u8],
    recipients: &[Recipient],
) -> Result<(), ClientError> {
    enqueue_message(conn, mls_message, recipients, None)
}

/// [`enqueue`], for the user's message `message_id` (its envelopes mark it
/// pending until the server has accepted them all).
pub fn enqueue_message(
    conn: &Connection,
    mls_message: &[u8],
    recipients: &[Recipient],
    message_id: Option<&[u8]>,
) -> Result<(), ClientError> {
    insert(conn, mls_message, recipients, message_id, None)
}

/// Seals and queues, each envelope `held` by an epoch tag or not.
fn insert(
    conn: &Connection,
    mls_message: &[u8],
    recipients: &[Recipient],
    message_id: Option<&[u8]>,
    held: Option<&[u8; 32]>,
) -> Result<(), ClientError> {
    let max = max_envelope(conn)?;
    for r in recipients {
        let sealed = seal(mls_message, &r.sealing_key)?;
        if sealed.len() > max {
            return Err(ClientError::TooLarge {
                size: sealed.len(),
                max,
            });
        }
        conn.prepare_cached(
            "INSERT INTO outbox (mailbox_id, delivery_token, sealed, message_id, recipient, held)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            r.mailbox_id,
            r.delivery_token,
            sealed,
            message_id,
            r.username,
            held.map(|t| &t[..])
        ])?;
    }
    Ok(())
}

/// [`enqueue`], held back (not sent) until the epoch named by `tag` is
/// claimed for the commit they carry (see [`crate::ledger`]).
pub fn enqueue_held(
    conn: &Connection,
    mls_message: &[u8],
    recipients: &[Recipient],
    tag: &[u8; 32],
) -> Result<(), ClientError> {
    insert(conn, mls_message, recipients, None, Some(tag))
}

/// Envelopes waiting to be sent (not those held for an epoch claim).
pub fn pending(conn: &Connection) -> Result<usize, ClientError> {
    Ok(
        conn.query_row("SELECT COUNT(*) FROM outbox WHERE held IS NULL", [], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

/// Sends everything queued, in order. Returns warnings for envelopes the
/// server refused for good (they are dropped). Envelopes refused for now
/// (rate limit, server busy) stay queued and make this a
/// [`ClientError::Queued`].
pub async fn flush(db: &Connection, server: &mut ServerConn) -> Result<Vec<Event>, ClientError> {
    let mut warnings = Vec::new();
    loop {
        type Row = (i64, Vec<u8>, Option<Vec<u8>>, Vec<u8>);
        let batch: Vec<Row> = {
            let mut stmt = db.prepare(
                "SELECT id, mailbox_id, delivery_token, sealed FROM outbox WHERE held IS NULL \
                 ORDER BY id LIMIT 256",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        if batch.is_empty() {
            return Ok(warnings);
        }
        let bodies = batch
            .iter()
            .map(|(_, mailbox_id, token, sealed)| {
                client_frame::Body::Send(SendEnvelope {
                    mailbox_id: mailbox_id.clone(),
                    delivery_token: token.clone().unwrap_or_default(),
                    sealed: sealed.clone(),
                    online_only: false,
                })
            })
            .collect();
        let answers = server.call_many(bodies).await?;
        let mut kept = 0;
        // One transaction for the batch's answers: each copy the server
        // took leaves the outbox, and its status moves with it.
        let tx = db.unchecked_transaction()?;
        for ((id, ..), answer) in batch.iter().zip(answers) {
            match answer {
                Ok(_) => settle(&tx, *id, "sent")?,
                Err(ClientError::Server { code, message }) => match code {
                    ErrorCode::RateLimited | ErrorCode::Busy | ErrorCode::Internal => {
                        kept += 1;
                    }
                    // A device unlinked since we last heard of its account
                    // (its removal from the conversation is on its way):
                    // it is not to read this, and the account's other
                    // devices have their own copies.
                    ErrorCode::UnknownMailbox => {
                        tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                            .execute([id])?;
                    }
                    _ => {
                        settle(&tx, *id, "failed")?;
                        warnings.push(Event::Warning {
                            text: format!("the server refused a message: {message}"),
                        });
                    }
                },
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        if kept > 0 {
            return Err(ClientError::Queued(
                kept,
                "the server limits messages to people who have not written to you yet".into(),
            ));
        }
    }
}

/// The server answered for outbox row `id`: it leaves the outbox, and the
/// status of the message it carried moves on for its recipient (`sent`:
/// the server holds it; `failed`: refused for good), once, and only from
/// where it was (a copy sent again after a crash does not move a message
/// that was already delivered back to `sent`).
fn settle(conn: &Connection, id: i64, outcome: &str) -> Result<(), ClientError> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> = conn
        .prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING message_id, recipient")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(message_id), Some(recipient))) = row else {
        return Ok(());
    };
    let moved = if outcome == "failed" {
        conn.execute(
            "UPDATE message_status SET level = -1, at_ms = ?3
             WHERE message_id = ?1 AND username = ?2 AND level = 0",
            params![message_id, recipient, crate::now_ms() as i64],
        )? > 0
    } else {
        conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM message_status WHERE message_id = ?1 AND username = ?2 AND level = 0)",
        )?
        .query_row(params![message_id, recipient], |r| r.get::<_, bool>(0))?
    };
    if moved {
        crate::journal::status(conn, &message_id, &recipient, outcome)?;
    }
    Ok(())
}
