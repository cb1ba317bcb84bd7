//! What a storage operation can report.

use thiserror::Error;

/// A storage failure or a refused operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Registering a username that already exists.
    #[error("username already taken")]
    UsernameTaken,
    /// A freshly generated random id collided with an existing one; retry.
    #[error("generated id already in use")]
    IdCollision,
    /// The account does not exist.
    #[error("unknown user")]
    UnknownUser,
    /// The device does not exist.
    #[error("unknown device")]
    UnknownDevice,
    /// The mailbox does not exist.
    #[error("unknown mailbox")]
    UnknownMailbox,
    /// The mailbox already holds the maximum number of envelopes.
    #[error("mailbox is full")]
    MailboxFull,
    /// A claim found a device without any key package, not even a last-resort one.
    #[error("a device has no key packages left")]
    NoKeyPackages,
    /// A device list no newer than the stored one.
    #[error("a newer device list is already stored")]
    StaleDeviceList,
    /// The device would hold more key packages than allowed.
    #[error("too many key packages (at most {max} per device)")]
    TooManyKeyPackages {
        /// The per-device cap.
        max: u32,
    },
    /// The database file was written by a newer schema.
    #[error("database schema version {found} is newer than this program's ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Version this program writes.
        supported: i64,
    },
    /// No such blob (or not this uploader's).
    #[error("no such blob")]
    UnknownBlob,
    /// A blob written at another offset than what it holds.
    #[error("the blob holds {expected} bytes: write from there")]
    BlobOffset {
        /// What the blob holds.
        expected: u64,
    },
    /// A write past a blob's declared size.
    #[error("more bytes than the blob's declared size")]
    BlobTooLong,
    /// A file of the blob store failed.
    #[error("blob storage: {0}")]
    Io(String),
    /// Stored data is not what the schema promises (corrupt file).
    #[error("corrupt stored data: {0}")]
    Corrupt(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL database failed (or could not be reached).
    #[error("PostgreSQL error: {}", postgres_detail(.0))]
    Postgres(#[from] postgres::Error),
}

/// What the server said (the client's own text for a server error is just
/// "db error"), else the client's text.
fn postgres_detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
