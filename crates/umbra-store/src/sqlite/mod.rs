//! The embedded SQLite backend.
//!
//! - [`schema`]: tables, pragmas and the schema version.
//! - [`tx`]: [`SqliteTx`], the [`StoreTx`](crate::StoreTx) implementation,
//!   which delegates to one module per table family:
//! - [`accounts`]: accounts, devices and mailbox lookups.
//! - [`key_packages`]: MLS key package upload and claim.
//! - [`business`]: business accounts' cards and verifications.
//! - [`envelopes`]: sealed envelopes (store, fetch, delete, expire).
//! - [`live`]: online-only envelopes held for seconds, in memory.
//! - [`convert`]: turning blobs back into fixed-size ids and keys.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit survives
//! a killed process (not necessarily a power cut), and readers never block the
//! writer.

pub mod accounts;
pub mod business;
pub mod convert;
pub mod envelopes;
pub mod epochs;
pub mod key_packages;
pub mod live;
pub mod schema;
pub mod tx;

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;
use crate::model::Limits;
use crate::traits::{Store, StoreTx};
pub use tx::SqliteTx;

/// A SQLite database file holding the server's state.
pub struct SqliteStore {
    conn: Connection,
    limits: Limits,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path, limits: Limits) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&conn)?;
        live::create(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn, limits })
    }

    /// Writes a consistent copy of the database at `from` to the new file
    /// `to`, while a server may be writing it: one read transaction sees one
    /// moment of the database (`VACUUM INTO`), whatever commits meanwhile.
    pub fn backup(from: &Path, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::Corrupt(
                "the backup file exists already: choose a new name",
            ));
        }
        let conn = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        Ok(())
    }

    /// The schema version of the file at `path` (0: a new file).
    pub fn schema_version(path: &Path) -> Result<i64, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let has: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'schema_version')",
            [],
            |r| r.get(0),
        )?;
        if !has {
            return Ok(0);
        }
        Ok(conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0))
    }

    /// The caps in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

impl Store for SqliteStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(Box::new(SqliteTx::new(tx, self.limits)))
    }
}
