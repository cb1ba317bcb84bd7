//! API tokens, one or more per business, in the host's own database
//! (`DATA_DIR/host.db`).
//!
//! A token is shown once, when it is made (`umbra business token create`);
//! the host keeps only its SHA-256, with the business it is for and a label,
//! so a copy of the database lets nobody call the API. A token is looked up
//! afresh on every request, so one made or revoked while the host runs
//! counts at once.

use std::path::Path;

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Where tokens are kept.
pub const DB_FILE: &str = "host.db";
/// What every token starts with (so a leaked one is easy to recognise and
/// search for).
pub const PREFIX: &str = "umbra_bt_";

/// Why the token store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The database failed.
    #[error("the host's token database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The data directory could not be made.
    #[error("the host's data directory: {0}")]
    Io(#[from] std::io::Error),
}

/// One token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// The first characters of its hash, to name it when revoking.
    pub id: String,
    /// The business (account username) it is for.
    pub business: String,
    /// What its maker called it.
    pub label: String,
    /// When it was made.
    pub created_unix: u64,
}

/// The host's token store.
pub struct Tokens {
    conn: Connection,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Tokens {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, TokenError> {
        std::fs::create_dir_all(data_dir)?;
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tokens (
                 hash BLOB PRIMARY KEY,
                 business TEXT NOT NULL,
                 label TEXT NOT NULL,
                 created_unix INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )?;
        Ok(Self { conn })
    }

    /// Makes a token for `business`; returns it (shown once, never kept).
    pub fn create(&self, business: &str, label: &str, now_unix: u64) -> Result<String, TokenError> {
        let mut raw = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = format!("{PREFIX}{}", hex::encode(raw));
        self.conn.execute(
            "INSERT INTO tokens (hash, business, label, created_unix) VALUES (?1, ?2, ?3, ?4)",
            params![hash(&token), business, label, now_unix as i64],
        )?;
        Ok(token)
    }

    /// The business `token` is for, if it is a live token.
    pub fn check(&self, token: &str) -> Result<Option<String>, TokenError> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        Ok(self
            .conn
            .prepare_cached("SELECT business FROM tokens WHERE hash = ?1")?
            .query_row([hash(token)], |r| r.get(0))
            .optional()?)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let mut stmt = self.conn.prepare(
            "SELECT hash, business, label, created_unix FROM tokens ORDER BY created_unix",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                id: hex::encode(&r.get::<_, Vec<u8>>(0)?[..6]),
                business: r.get(1)?,
                label: r.get(2)?,
                created_unix: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes the tokens whose id (as listed) is `id`; returns how many.
    pub fn revoke(&self, id: &str) -> Result<usize, TokenError> {
        let Ok(prefix) = hex::decode(id) else {
            return Ok(0);
        };
        if prefix.len() < 6 {
            return Ok(0);
        }
        let hashes: Vec<Vec<u8>> = {
            let mut stmt = self.conn.prepare("SELECT hash FROM tokens")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|h| h.starts_with(&prefix))
                .collect()
        };
        for h in &hashes {
            self.conn
                .execute("DELETE FROM tokens WHERE hash = ?1", [h])?;
        }
        Ok(hashes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_business_only_until_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tokens::open(dir.path()).expect("open");
        let acme = t.create("acme", "crm", 1).expect("create");
        let bank = t.create("bank", "ops", 2).expect("create");
        assert!(acme.starts_with(PREFIX));
        assert_eq!(t.check(&acme).expect("check").as_deref(), Some("acme"));
        assert_eq!(t.check(&bank).expect("check").as_deref(), Some("bank"));
        assert_eq!(t.check("umbra_bt_00").expect("check"), None);
        assert_eq!(t.check("Bearer x").expect("check"), None);
        // The database holds no token, only hashes.
        let raw = std::fs::read(dir.path().join(DB_FILE)).expect("read");
        assert!(!raw.windows(acme.len()).any(|w| w == acme.as_bytes()));
        let listed = t.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(t.revoke(&listed[0].id).expect("revoke"), 1);
        assert_eq!(t.check(&acme).expect("check"), None);
        assert_eq!(t.check(&bank).expect("check").as_deref(), Some("bank"));
        assert_eq!(t.revoke("zz").expect("not hex"), 0);
    }
}
