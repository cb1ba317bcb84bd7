//! The embedded SQLite backend.
//!
//! - [`schema`]: tables, pragmas and the schema version.
//! - [`tx`]: [`SqliteTx`], the [`StoreTx`](crate::StoreTx) implementation,
//!   which delegates to one module per table family:
//! - [`accounts`]: accounts, devices and mailbox lookups.
//! - [`key_packages`]: MLS key package upload and claim.
//! - [`business`]: business accounts' cards and verifications.
//! - [`envelopes`]: sealed envelopes (store, fetch, delete, expire).
//! - [`convert`]: turning blobs back into fixed-size ids and keys.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit survives
//! a killed process (not necessarily a power cut), and readers never block the
//! writer.

pub mod accounts;
pub mod business;
pub mod convert;
pub mod envelopes;
pub mod key_packages;
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
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn, limits })
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
