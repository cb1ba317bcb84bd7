//! Online-only envelopes held for seconds: a temporary table in memory
//! (`temp_store = MEMORY`), so on SQLite they never reach the file or its
//! journal, and they are gone with the process. (One SQLite server never
//! needs it: its held envelopes stay in the server's memory. The table keeps
//! the backends alike.)

use rusqlite::{Connection, params};

use super::convert::count;
use crate::StoreError;
use crate::model::{LiveEnvelope, MailboxId};

/// Makes the connection's temporary table.
pub fn create(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "PRAGMA temp_store = MEMORY;
         CREATE TEMP TABLE IF NOT EXISTS live (
             id           INTEGER PRIMARY KEY AUTOINCREMENT,
             mailbox_id   BLOB NOT NULL,
             sealed       BLOB NOT NULL,
             introduction INTEGER NOT NULL,
             until_secs   INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS temp.live_by_mailbox ON live(mailbox_id, id);",
    )?;
    Ok(())
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// Holds one envelope unless the mailbox holds `cap` due ones.
pub fn hold(
    tx: &Connection,
    mailbox: &MailboxId,
    sealed: &[u8],
    introduction: bool,
    now: u64,
    until: u64,
    cap: u32,
) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT INTO temp.live (mailbox_id, sealed, introduction, until_secs) \
             SELECT ?1, ?2, ?3, ?4 WHERE (SELECT count(*) FROM temp.live \
             WHERE mailbox_id = ?1 AND until_secs >= ?6) < ?5",
        )?
        .execute(params![
            &mailbox[..],
            sealed,
            introduction,
            secs(until),
            cap,
            secs(now)
        ])?;
    Ok(n == 1)
}

/// Deletes and returns what is held for a mailbox and still due.
pub fn take(
    tx: &Connection,
    mailbox: &MailboxId,
    now: u64,
) -> Result<Vec<LiveEnvelope>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM temp.live WHERE mailbox_id = ?1 \
         RETURNING id, sealed, introduction, until_secs",
    )?;
    let mut rows = stmt
        .query_map(params![&mailbox[..]], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.sort_unstable_by_key(|r| r.0);
    Ok(rows
        .into_iter()
        .filter(|r| r.3 >= secs(now))
        .map(|(_, sealed, introduction, _)| LiveEnvelope {
            sealed,
            introduction,
        })
        .collect())
}

/// Which of these mailboxes have due envelopes held.
pub fn waiting(
    tx: &Connection,
    mailboxes: &[MailboxId],
    now: u64,
) -> Result<Vec<MailboxId>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM temp.live WHERE mailbox_id = ?1 AND until_secs >= ?2)",
    )?;
    let mut out = Vec::new();
    for m in mailboxes {
        if stmt.query_row(params![&m[..], secs(now)], |r| r.get::<_, bool>(0))? {
            out.push(*m);
        }
    }
    Ok(out)
}

/// Forgets what is past its hold.
pub fn expire(tx: &Connection, now: u64) -> Result<u64, StoreError> {
    let n = tx
        .prepare_cached("DELETE FROM temp.live WHERE until_secs < ?1")?
        .execute([secs(now)])?;
    Ok(count(i64::try_from(n).unwrap_or(i64::MAX)))
}
