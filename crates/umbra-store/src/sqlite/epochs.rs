//! Group epochs: the one commit that won each (see [`crate::StoreTx::claim_epoch`]).

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::EpochClaim;
use crate::{Day, StoreError};

/// Claims `tag` for `commit`.
pub fn claim(
    tx: &Connection,
    tag: &[u8; 32],
    commit: &[u8],
    today: Day,
) -> Result<EpochClaim, StoreError> {
    tx.prepare_cached(
        "INSERT INTO epochs (tag, commit_msg, stored_day) VALUES (?1, ?2, ?3)
         ON CONFLICT (tag) DO NOTHING",
    )?
    .execute(params![&tag[..], commit, today.0])?;
    let holder = get(tx, tag)?.ok_or(StoreError::Corrupt("a claimed epoch is missing"))?;
    Ok(EpochClaim::of(commit, holder))
}

/// The commit that won `tag`.
pub fn get(tx: &Connection, tag: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT commit_msg FROM epochs WHERE tag = ?1")?
        .query_row([&tag[..]], |r| r.get(0))
        .optional()?)
}

/// Forgets epochs claimed before `today - max_age_days`.
pub fn expire(tx: &Connection, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
    let cutoff = today.0.saturating_sub(max_age_days);
    let n = tx
        .prepare_cached("DELETE FROM epochs WHERE stored_day < ?1")?
        .execute([cutoff])?;
    Ok(n as u64)
}
