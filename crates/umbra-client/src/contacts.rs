//! The address book in the profile: identity keys pinned on first sight,
//! contacts' device addresses and delivery tokens, and the recipients of a
//! group. Plain functions over a database connection (or transaction), so
//! sending and receiving both use them.

use rusqlite::{Connection, OptionalExtension, params};
use umbra_crypto::mls;

use crate::outbox::Recipient;
use crate::{ClientError, now_ms};

/// Pins `key` for `username` on first sight; refuses a different one later.
pub(crate) fn check_identity(
    conn: &Connection,
    username: &str,
    key: &[u8],
) -> Result<(), ClientError> {
    let known: Option<Vec<u8>> = conn
        .query_row(
            "SELECT identity_key FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?;
    match known {
        Some(k) if k == key => Ok(()),
        Some(_) => Err(ClientError::KeyChanged(username.to_string())),
        None => {
            conn.execute(
                "INSERT INTO contacts (username, identity_key, added_ms) VALUES (?1, ?2, ?3)",
                params![username, key, now_ms() as i64],
            )?;
            Ok(())
        }
    }
}

pub(crate) fn contact_token(
    conn: &Connection,
    username: &str,
) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT delivery_token FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// A contact's device address, if we know it.
pub(crate) fn contact_address(
    conn: &Connection,
    username: &str,
) -> Result<Option<Recipient>, ClientError> {
    type Row = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT mailbox_id, sealing_key, delivery_token FROM contacts WHERE username = ?1",
        )?
        .query_row([username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match row {
        Some((Some(mailbox_id), Some(sealing), token)) => {
            let Ok(sealing_key) = <[u8; 32]>::try_from(sealing.as_slice()) else {
                return Ok(None);
            };
            Some(Recipient {
                username: username.to_string(),
                mailbox_id,
                sealing_key,
                delivery_token: token,
            })
        }
        _ => None,
    })
}

pub(crate) fn save_address(conn: &Connection, r: &Recipient) -> Result<(), ClientError> {
    conn.execute(
        "UPDATE contacts SET mailbox_id = ?2, sealing_key = ?3 WHERE username = ?1",
        params![r.username, r.mailbox_id, r.sealing_key.to_vec()],
    )?;
    Ok(())
}

/// Everyone in the group but us, with their addresses.
pub(crate) fn group_recipients(
    conn: &Connection,
    group: &openmls::prelude::MlsGroup,
    me: &str,
) -> Result<Vec<Recipient>, ClientError> {
    let mut out = Vec::new();
    for m in mls::members(group) {
        if m.username == me {
            continue;
        }
        if let Some(r) = contact_address(conn, &m.username)? {
            out.push(r);
        }
    }
    Ok(out)
}
