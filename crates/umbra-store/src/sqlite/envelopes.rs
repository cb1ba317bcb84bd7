//! Sealed envelopes keyed by mailbox: store, fetch, delete, expire.

use rusqlite::{Connection, params};

use super::convert::count;
use crate::model::{MailboxId, StoredEnvelope};
use crate::{Day, StoreError};

/// Number of envelopes in a mailbox.
pub fn count_in(tx: &Connection, mailbox: &MailboxId) -> Result<u64, StoreError> {
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM envelopes WHERE mailbox_id = ?1")?
        .query_row([&mailbox[..]], |r| r.get(0))?;
    Ok(count(n))
}

/// Inserts one envelope (the caller has checked the mailbox and its cap).
pub fn insert(
    tx: &Connection,
    mailbox: &MailboxId,
    sealed: &[u8],
    introduction: bool,
    today: Day,
) -> Result<u64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO envelopes (mailbox_id, sealed, introduction, stored_day) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&mailbox[..], sealed, introduction, today.0])?;
    Ok(count(tx.last_insert_rowid()))
}

/// Pending envelopes after `after`, bounded in count and bytes.
pub fn fetch(
    tx: &Connection,
    mailbox: &MailboxId,
    after: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<Vec<StoredEnvelope>, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut stmt = tx.prepare_cached(
        "SELECT id, sealed, introduction FROM envelopes WHERE mailbox_id = ?1 AND id > ?2 \
         ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![&mailbox[..], after, limit], |row| {
        Ok(StoredEnvelope {
            id: count(row.get(0)?),
            sealed: row.get(1)?,
            introduction: row.get(2)?,
        })
    })?;
    Ok(crate::model::up_to_bytes(rows, max_bytes)?)
}

/// Deletes the listed ids that belong to `mailbox`.
pub fn delete(tx: &Connection, mailbox: &MailboxId, ids: &[u64]) -> Result<u32, StoreError> {
    let mut stmt = tx.prepare_cached("DELETE FROM envelopes WHERE id = ?1 AND mailbox_id = ?2")?;
    let mut deleted = 0u32;
    for &id in ids {
        let Ok(id) = i64::try_from(id) else { continue };
        deleted += u32::try_from(stmt.execute(params![id, &mailbox[..]])?).unwrap_or(0);
    }
    Ok(deleted)
}

/// Deletes envelopes stored before `today - max_age_days`.
pub fn expire(tx: &Connection, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
    let cutoff = today.0.saturating_sub(max_age_days);
    let n = tx
        .prepare_cached("DELETE FROM envelopes WHERE stored_day < ?1")?
        .execute([cutoff])?;
    Ok(n as u64)
}

/// Envelopes stored in total.
pub fn total(tx: &Connection) -> Result<u64, StoreError> {
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM envelopes")?
        .query_row([], |r| r.get(0))?;
    Ok(count(n))
}

/// The highest envelope id of each of these mailboxes that holds any.
pub fn newest(
    tx: &Connection,
    mailboxes: &[MailboxId],
) -> Result<Vec<(MailboxId, u64)>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT max(id) FROM envelopes WHERE mailbox_id = ?1")?;
    let mut out = Vec::new();
    for m in mailboxes {
        let top: Option<i64> = stmt.query_row([&m[..]], |r| r.get(0))?;
        if let Some(t) = top {
            out.push((*m, count(t)));
        }
    }
    Ok(out)
}
