//! Accounts, devices and mailbox lookups.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::convert::fixed;
use crate::model::{AccountDevices, DeviceId, DeviceRecord, MailboxEntry, MailboxId, NewDevice};
use crate::{Day, StoreError};

const DEVICE_COLUMNS: &str =
    "device_id, username, identity_key, sealing_key, mailbox_id, delivery_token_hash";

fn device_row(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: fixed(row, 0)?,
        username: row.get(1)?,
        identity_key: fixed(row, 2)?,
        sealing_key: fixed(row, 3)?,
        mailbox_id: fixed(row, 4)?,
        delivery_token_hash: fixed(row, 5)?,
    })
}

fn mailbox_row(row: &Row<'_>) -> rusqlite::Result<MailboxEntry> {
    Ok(MailboxEntry {
        mailbox_id: fixed(row, 0)?,
        device_id: fixed(row, 1)?,
        delivery_token_hash: fixed(row, 2)?,
    })
}

/// Creates the account, its first device and its first list, atomically.
pub fn register(
    tx: &mut Transaction<'_>,
    d: &NewDevice,
    list: &AccountDevices,
    today: Day,
) -> Result<(), StoreError> {
    let sp = tx.savepoint()?;
    let taken: Option<i64> = sp
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .query_row([&d.username], |r| r.get(0))
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::UsernameTaken);
    }
    sp.prepare_cached(
        "INSERT INTO accounts (username, created_day, account_key, device_list, list_version) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        d.username,
        today.0,
        &list.account_key[..],
        list.list,
        version(list.version)
    ])?;
    insert_device(&sp, d)?;
    sp.commit()?;
    Ok(())
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn insert_device(tx: &Connection, d: &NewDevice) -> Result<(), StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO devices (device_id, username, identity_key, sealing_key, \
             mailbox_id, delivery_token_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &d.device_id[..],
            d.username,
            &d.identity_key[..],
            &d.sealing_key[..],
            &d.mailbox_id[..],
            &d.delivery_token_hash[..],
        ])?;
    if inserted == 0 {
        return Err(StoreError::IdCollision);
    }
    Ok(())
}

/// The account's latest device list, if it has one.
pub fn account_devices(
    tx: &Connection,
    username: &str,
) -> Result<Option<AccountDevices>, StoreError> {
    type Row = (Option<Vec<u8>>, Option<Vec<u8>>, i64);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT account_key, device_list, list_version FROM accounts WHERE username = ?1",
        )?
        .query_row([username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match row {
        Some((Some(key), Some(list), v)) => Some(AccountDevices {
            account_key: key
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("account key"))?,
            version: u64::try_from(v).unwrap_or(0),
            list,
        }),
        _ => None,
    })
}

/// Stores a newer list, links `new_device`, unlinks the devices not kept.
pub fn update_devices(
    tx: &mut Transaction<'_>,
    username: &str,
    list: &AccountDevices,
    new_device: Option<&NewDevice>,
    keep: &[[u8; 32]],
) -> Result<Vec<(DeviceId, MailboxId)>, StoreError> {
    let sp = tx.savepoint()?;
    let updated = sp
        .prepare_cached(
            "UPDATE accounts SET device_list = ?3, list_version = ?4 \
             WHERE username = ?1 AND account_key = ?2 AND list_version < ?4",
        )?
        .execute(params![
            username,
            &list.account_key[..],
            list.list,
            version(list.version)
        ])?;
    if updated == 0 {
        return Err(match account_devices(&sp, username)? {
            None => StoreError::UnknownUser,
            Some(_) => StoreError::StaleDeviceList,
        });
    }
    if let Some(d) = new_device {
        if d.username != username {
            return Err(StoreError::UnknownUser);
        }
        insert_device(&sp, d)?;
    }
    let mut gone = Vec::new();
    for d in devices_of(&sp, username)?.unwrap_or_default() {
        if !keep.contains(&d.identity_key) {
            sp.prepare_cached("DELETE FROM devices WHERE device_id = ?1")?
                .execute([&d.device_id[..]])?;
            super::live::take(&sp, &d.mailbox_id, 0)?;
            gone.push((d.device_id, d.mailbox_id));
        }
    }
    sp.commit()?;
    Ok(gone)
}

/// One device by id.
pub fn device(tx: &Connection, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1"
        ))?
        .query_row([&id[..]], device_row)
        .optional()?)
}

/// The devices of a user, ordered by id; `None` for an unknown user.
pub fn devices_of(
    tx: &Connection,
    username: &str,
) -> Result<Option<Vec<DeviceRecord>>, StoreError> {
    let exists: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE username = ?1 ORDER BY device_id"
    ))?;
    let rows = stmt.query_map([username], device_row)?;
    Ok(Some(rows.collect::<Result<Vec<_>, _>>()?))
}

/// The routing entry of a mailbox.
pub fn mailbox(tx: &Connection, id: &MailboxId) -> Result<Option<MailboxEntry>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT mailbox_id, device_id, delivery_token_hash FROM devices WHERE mailbox_id = ?1",
        )?
        .query_row([&id[..]], mailbox_row)
        .optional()?)
}

/// Every routing entry.
pub fn all_mailboxes(tx: &Connection) -> Result<Vec<MailboxEntry>, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT mailbox_id, device_id, delivery_token_hash FROM devices")?;
    let rows = stmt.query_map([], mailbox_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Replaces the delivery-token hash of a device.
pub fn set_token_hash(tx: &Connection, id: &DeviceId, hash: &[u8; 32]) -> Result<(), StoreError> {
    let n = tx
        .prepare_cached("UPDATE devices SET delivery_token_hash = ?2 WHERE device_id = ?1")?
        .execute(params![&id[..], &hash[..]])?;
    if n == 0 {
        return Err(StoreError::UnknownDevice);
    }
    Ok(())
}

/// Whether a device exists.
pub fn device_exists(tx: &Connection, id: &DeviceId) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM devices WHERE device_id = ?1")?
        .query_row([&id[..]], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// The current main session of each of these mailboxes that exists.
pub fn sessions(
    tx: &Connection,
    mailboxes: &[MailboxId],
) -> Result<Vec<(MailboxId, u64)>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT session FROM devices WHERE mailbox_id = ?1")?;
    let mut out = Vec::with_capacity(mailboxes.len());
    for m in mailboxes {
        if let Some(s) = stmt
            .query_row([&m[..]], |r| r.get::<_, i64>(0))
            .optional()?
        {
            out.push((*m, u64::try_from(s).unwrap_or(0)));
        }
    }
    Ok(out)
}

/// Starts a main session: its number.
pub fn start_session(tx: &Connection, id: &DeviceId) -> Result<u64, StoreError> {
    let s: Option<i64> = tx
        .prepare_cached(
            "UPDATE devices SET session = session + 1 WHERE device_id = ?1 RETURNING session",
        )?
        .query_row([&id[..]], |r| r.get(0))
        .optional()?;
    s.map(|s| u64::try_from(s).unwrap_or(0))
        .ok_or(StoreError::UnknownDevice)
}

/// Takes one introduction from a mailbox's budget.
pub fn take_introduction(
    tx: &Connection,
    mailbox: &MailboxId,
    per_hour: u32,
    now: u64,
) -> Result<bool, StoreError> {
    let row: Option<(Option<f64>, i64)> = tx
        .prepare_cached("SELECT intro_tokens, intro_at FROM devices WHERE mailbox_id = ?1")?
        .query_row([&mailbox[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((tokens, at)) = row else {
        return Err(StoreError::UnknownMailbox);
    };
    let (taken, left) =
        crate::model::take_token(tokens, u64::try_from(at).unwrap_or(0), per_hour, now);
    if taken {
        tx.prepare_cached(
            "UPDATE devices SET intro_tokens = ?2, intro_at = ?3 WHERE mailbox_id = ?1",
        )?
        .execute(params![
            &mailbox[..],
            left,
            i64::try_from(now).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(taken)
}
