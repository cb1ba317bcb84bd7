//! The address book in the profile: each user's account key, pinned on
//! first sight, and the devices that key vouches for, with their addresses
//! and delivery tokens; the recipients of a group. Plain functions over a
//! database connection (or transaction), so sending and receiving both use
//! them.
//!
//! A device is believed to be a user's only if the user's account key
//! signed it: through the certificate in its MLS leaf (checked whenever a
//! member is met in a group), or through the signed device list the server
//! serves (checked whenever a user is looked up). A device the server lists
//! but the account key did not sign is ignored, with a warning.

use rusqlite::{Connection, OptionalExtension, params};
use umbra_crypto::mls::{self, Member};
use umbra_wire::devices::{self, Certified};
use umbra_wire::proto::{Device, Devices};

use crate::outbox::Recipient;
use crate::profile::get_setting;
use crate::{ClientError, now_ms};

/// Pins `account_key` for `username` on first sight; refuses another one
/// later. Our own account is checked against our own key.
pub(crate) fn pin_account(
    conn: &Connection,
    username: &str,
    account_key: &[u8],
) -> Result<(), ClientError> {
    if get_setting(conn, "username")?.as_deref() == Some(username.as_bytes()) {
        return match get_setting(conn, "account_key")? {
            Some(k) if k == account_key => Ok(()),
            _ => Err(ClientError::KeyChanged(username.to_string())),
        };
    }
    let known: Option<Vec<u8>> = conn
        .prepare_cached("SELECT identity_key FROM contacts WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()?;
    match known {
        Some(k) if k == account_key => Ok(()),
        Some(_) => Err(ClientError::KeyChanged(username.to_string())),
        None => {
            conn.execute(
                "INSERT INTO contacts (username, identity_key, added_ms) VALUES (?1, ?2, ?3)",
                params![username, account_key, now_ms() as i64],
            )?;
            Ok(())
        }
    }
}

/// The account key pinned for `username` (ours for our own account).
pub(crate) fn account_key(
    conn: &Connection,
    username: &str,
) -> Result<Option<Vec<u8>>, ClientError> {
    if get_setting(conn, "username")?.as_deref() == Some(username.as_bytes()) {
        return get_setting(conn, "account_key");
    }
    Ok(conn
        .prepare_cached("SELECT identity_key FROM contacts WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()?)
}

/// Checks that a group member's device is vouched for by its account's
/// key (pinning that key on first sight), and remembers the device. A
/// device already vouched for (by its certificate or the signed list) is
/// looked up, not checked again: this runs for every message received.
pub(crate) fn check_member(conn: &Connection, m: &Member) -> Result<Certified, ClientError> {
    if let Some(known) = vouched(conn, &m.username, &m.identity_key)? {
        return Ok(known);
    }
    let certified = m
        .certificate
        .as_deref()
        .ok_or_else(|| ClientError::Unvouched(m.username.clone()))
        .and_then(|c| {
            devices::check_certificate(c, &m.username, &m.identity_key)
                .map_err(|_| ClientError::Unvouched(m.username.clone()))
        })?;
    pin_account(conn, &m.username, &certified.account_key)?;
    conn.prepare_cached(
        "INSERT INTO contact_devices (username, identity_key, sealing_key) VALUES (?1, ?2, ?3)
         ON CONFLICT (username, identity_key) DO UPDATE SET sealing_key = excluded.sealing_key",
    )?
    .execute(params![
        m.username,
        m.identity_key,
        certified.sealing_key.to_vec()
    ])?;
    Ok(certified)
}

/// Checks the device list the server served for `username` against the
/// account key pinned for it (pinning it on first sight) and keeps the
/// devices it names, with the addresses the server gave; returns those
/// devices. A listed device the key did not sign is dropped with a warning;
/// a list older than one seen before is refused (a server showing an
/// unlinked device again).
pub(crate) fn accept_listing(
    conn: &Connection,
    username: &str,
    listing: &Devices,
) -> Result<Vec<Device>, ClientError> {
    let served = listing.devices.clone();
    let signed = listing
        .device_list
        .as_ref()
        .ok_or_else(|| ClientError::Unvouched(username.to_string()))?;
    let pinned = account_key(conn, username)?;
    let list = devices::check_list(signed, username, pinned.as_deref()).map_err(|e| match e {
        devices::DeviceError::OtherAccountKey => ClientError::KeyChanged(username.to_string()),
        _ => ClientError::Unvouched(username.to_string()),
    })?;
    pin_account(conn, username, &list.account_key)?;
    let seen: i64 = conn
        .query_row(
            "SELECT list_version FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let version = i64::try_from(list.version).unwrap_or(i64::MAX);
    if version < seen {
        return Err(ClientError::Protocol(format!(
            "the server served an older device list of `{username}` than it did before"
        )));
    }
    conn.execute(
        "UPDATE contacts SET list_version = ?2 WHERE username = ?1",
        params![username, version],
    )?;
    let mut accepted = Vec::new();
    for d in served {
        let keys = d.keys.clone().unwrap_or_default();
        if !devices::lists(&list, &keys.identity_key, &keys.sealing_key) {
            tracing::warn!(
                "the server listed a device of `{username}` that their account key did not sign; it is ignored"
            );
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO contact_devices (username, identity_key, sealing_key, mailbox_id)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (username, identity_key) DO UPDATE
             SET sealing_key = excluded.sealing_key, mailbox_id = excluded.mailbox_id",
        )?
        .execute(params![
            username,
            keys.identity_key,
            keys.sealing_key,
            d.mailbox_id
        ])?;
        accepted.push(d);
    }
    // Devices the account no longer lists are forgotten.
    let listed: Vec<Vec<u8>> = list.devices.into_iter().map(|d| d.identity_key).collect();
    let known: Vec<Vec<u8>> = conn
        .prepare("SELECT identity_key FROM contact_devices WHERE username = ?1")?
        .query_map([username], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for k in known.into_iter().filter(|k| !listed.contains(k)) {
        conn.execute(
            "DELETE FROM contact_devices WHERE username = ?1 AND identity_key = ?2",
            params![username, k],
        )?;
    }
    Ok(accepted)
}

/// Whether `identity_key` is a device `username`'s account key vouched for.
pub(crate) fn is_vouched(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<bool, ClientError> {
    Ok(vouched(conn, username, identity_key)?.is_some())
}

/// What was vouched for a device of `username` already: the account key
/// pinned for them and the device's sealing key.
fn vouched(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<Option<Certified>, ClientError> {
    let sealing: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT sealing_key FROM contact_devices WHERE username = ?1 AND identity_key = ?2",
        )?
        .query_row(params![username, identity_key], |r| r.get(0))
        .optional()?;
    let (Some(sealing), Some(account)) = (sealing, account_key(conn, username)?) else {
        return Ok(None);
    };
    match (
        <[u8; 32]>::try_from(sealing.as_slice()),
        <[u8; 32]>::try_from(account.as_slice()),
    ) {
        (Ok(sealing_key), Ok(account_key)) => Ok(Some(Certified {
            account_key,
            sealing_key,
        })),
        _ => Ok(None),
    }
}

/// One device's address, if we know it.
pub(crate) fn device_address(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<Option<Recipient>, ClientError> {
    type Row = (Option<Vec<u8>>, Vec<u8>, Option<Vec<u8>>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT mailbox_id, sealing_key, delivery_token FROM contact_devices
             WHERE username = ?1 AND identity_key = ?2",
        )?
        .query_row(params![username, identity_key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(match row {
        Some((Some(mailbox_id), sealing, token)) => {
            let Ok(sealing_key) = <[u8; 32]>::try_from(sealing.as_slice()) else {
                return Ok(None);
            };
            Some(Recipient {
                username: username.to_string(),
                identity_key: identity_key.to_vec(),
                mailbox_id,
                sealing_key,
                delivery_token: token,
            })
        }
        _ => None,
    })
}

/// The delivery token one of `username`'s devices gave us.
pub(crate) fn device_token(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .prepare_cached(
            "SELECT delivery_token FROM contact_devices WHERE username = ?1 AND identity_key = ?2",
        )?
        .query_row(params![username, identity_key], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Records a device's address (its mailbox; the sealing key is the one its
/// account key vouched for, never replaced here).
pub(crate) fn save_address(conn: &Connection, r: &Recipient) -> Result<(), ClientError> {
    conn.prepare_cached(
        "UPDATE contact_devices SET mailbox_id = ?3 WHERE username = ?1 AND identity_key = ?2",
    )?
    .execute(params![r.username, r.identity_key, r.mailbox_id])?;
    Ok(())
}

/// Records the address and token a device gave in a message it sent.
pub(crate) fn save_sender_address(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
    mailbox_id: &[u8],
    token: Option<&[u8]>,
) -> Result<(), ClientError> {
    conn.prepare_cached(
        "UPDATE contact_devices SET mailbox_id = ?3, delivery_token = COALESCE(?4, delivery_token)
         WHERE username = ?1 AND identity_key = ?2",
    )?
    .execute(params![username, identity_key, mailbox_id, token])?;
    Ok(())
}

/// Records a device's mailbox from a group's member list, if we have none.
pub(crate) fn learn_mailbox(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
    mailbox_id: &[u8],
) -> Result<(), ClientError> {
    conn.prepare_cached(
        "UPDATE contact_devices SET mailbox_id = COALESCE(mailbox_id, ?3)
         WHERE username = ?1 AND identity_key = ?2",
    )?
    .execute(params![username, identity_key, mailbox_id])?;
    Ok(())
}

/// Every device in the group but this one, with their addresses (those we
/// have).
pub(crate) fn group_recipients(
    conn: &Connection,
    group: &openmls::prelude::MlsGroup,
    own_key: &[u8],
) -> Result<Vec<Recipient>, ClientError> {
    let mut out = Vec::new();
    for m in mls::members(group) {
        if m.identity_key == own_key {
            continue;
        }
        if let Some(r) = device_address(conn, &m.username, &m.identity_key)? {
            out.push(r);
        }
    }
    Ok(out)
}
