//! The openmls provider for one SQLite transaction.
//!
//! openmls has no transactions of its own: it writes through the storage
//! provider as it goes. Building the provider over the transaction's
//! connection makes one openmls operation, plus the history, outbox and
//! seen-envelope rows written beside it, a single atomic commit.

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

use crate::ClientError;

/// JSON encoding of openmls's stored values.
#[derive(Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// Crypto from RustCrypto, storage in the given connection (a transaction).
pub struct Provider<'a> {
    crypto: &'a RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, &'a Connection>,
}

impl<'a> Provider<'a> {
    /// A provider writing through `conn`.
    pub fn new(crypto: &'a RustCrypto, conn: &'a Connection) -> Self {
        Self {
            crypto,
            storage: SqliteStorageProvider::new(conn),
        }
    }
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, &'a Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

/// Creates openmls's tables.
pub fn migrate(conn: &mut Connection) -> Result<(), ClientError> {
    SqliteStorageProvider::<JsonCodec, &mut Connection>::new(conn)
        .run_migrations()
        .map_err(|e| ClientError::Protocol(format!("MLS storage migration failed: {e}")))
}
