//! Announcements: a device gives its delivery token (inside a body-less MLS
//! message whose `Content` carries its address) to the devices of a
//! conversation that do not have it yet, and remembers which have it
//! (`announced`), so their messages to it are not introductions.

use prost::Message;
use rusqlite::{Connection, params};
use umbra_crypto::mls;
use umbra_wire::e2e::Content;

use crate::contacts::group_recipients;
use crate::inbox::Device;
use crate::outbox::{self, Recipient};
use crate::{ClientError, now_ms};

/// Gives our delivery token (inside a body-less MLS message, whose `Content`
/// carries our address) to members we have not given it to yet, so their
/// messages to us are not counted as introductions by the server.
pub(crate) fn announce<P: openmls_traits::OpenMlsProvider>(
    conn: &Connection,
    ctx: &Device<'_>,
    provider: &P,
    group: &mut openmls::prelude::MlsGroup,
    group_id: &[u8],
) -> Result<(), ClientError> {
    let mut recipients = Vec::new();
    for r in group_recipients(conn, group, &ctx.identity.identity_key())? {
        let done: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM announced WHERE group_id = ?1 AND username = ?2)",
            params![group_id, announced_as(&r)],
            |row| row.get(0),
        )?;
        if !done {
            recipients.push(r);
        }
    }
    if recipients.is_empty() {
        return Ok(());
    }
    let me_addr = ctx.me.clone();
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let content = Content {
        message_id: id.to_vec(),
        sent_at_ms: now_ms(),
        sender: Some(me_addr),
        body: None,
        ..Content::default()
    };
    let ct = mls::encrypt(provider, ctx.identity, group, &content.encode_to_vec())?;
    outbox::enqueue(conn, &ct, &recipients)?;
    for r in &recipients {
        mark_announced(conn, group_id, r)?;
    }
    Ok(())
}

/// How `announced` names a device: its user and identity key.
fn announced_as(r: &Recipient) -> String {
    format!("{}/{}", r.username, hex::encode(&r.identity_key))
}

/// Records that the device `r` has our delivery token for this
/// conversation.
pub fn mark_announced(
    conn: &Connection,
    group_id: &[u8],
    r: &Recipient,
) -> Result<(), ClientError> {
    conn.execute(
        "INSERT OR IGNORE INTO announced (group_id, username) VALUES (?1, ?2)",
        params![group_id, announced_as(r)],
    )?;
    Ok(())
}
