//! Business accounts' cards.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::model::StoredCard;

/// Sets `username`'s card; its verification is kept only if `keep_verified`.
/// [`StoreError::UnknownUser`] if there is no such account.
pub fn set_card(
    conn: &Connection,
    username: &str,
    card: &[u8],
    keep_verified: bool,
) -> Result<(), StoreError> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::UnknownUser);
    }
    conn.prepare_cached(
        "INSERT INTO business_cards (username, card, verification) VALUES (?1, ?2, NULL)
         ON CONFLICT (username) DO UPDATE SET card = excluded.card,
           verification = CASE WHEN ?3 THEN business_cards.verification ELSE NULL END",
    )?
    .execute(params![username, card, keep_verified])?;
    Ok(())
}

/// `username`'s card, if it is a business account.
pub fn card(conn: &Connection, username: &str) -> Result<Option<StoredCard>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT username, card, verification FROM business_cards WHERE username = ?1",
        )?
        .query_row([username], |r| {
            Ok(StoredCard {
                username: r.get(0)?,
                card: r.get(1)?,
                verification: r.get(2)?,
            })
        })
        .optional()?)
}

/// Sets or clears the verification of a business account; `false` if it is
/// not one.
pub fn set_verification(
    conn: &Connection,
    username: &str,
    verification: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE business_cards SET verification = ?2 WHERE username = ?1")?
        .execute(params![username, verification])?;
    Ok(n == 1)
}

/// Every business account's card, by username.
pub fn all(conn: &Connection) -> Result<Vec<StoredCard>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT username, card, verification FROM business_cards ORDER BY username",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredCard {
            username: r.get(0)?,
            card: r.get(1)?,
            verification: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
