//! The schema, its version, and the connection settings.

use rusqlite::Connection;

use crate::StoreError;

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE accounts (
    username    TEXT PRIMARY KEY,
    created_day INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    device_id           BLOB PRIMARY KEY CHECK (length(device_id) = 16),
    username            TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    identity_key        BLOB NOT NULL CHECK (length(identity_key) = 32),
    sealing_key         BLOB NOT NULL CHECK (length(sealing_key) = 32),
    mailbox_id          BLOB NOT NULL UNIQUE CHECK (length(mailbox_id) = 16),
    delivery_token_hash BLOB NOT NULL CHECK (length(delivery_token_hash) = 32)
) WITHOUT ROWID;
CREATE INDEX devices_by_username ON devices(username);

CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY,
    device_id   BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    data        BLOB NOT NULL,
    last_resort INTEGER NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);

CREATE TABLE envelopes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id   BLOB NOT NULL REFERENCES devices(mailbox_id) ON DELETE CASCADE,
    sealed       BLOB NOT NULL,
    introduction INTEGER NOT NULL,
    stored_day   INTEGER NOT NULL
);
CREATE INDEX envelopes_by_mailbox ON envelopes(mailbox_id, id);
";

/// Connection settings: WAL, `synchronous=NORMAL`, foreign keys, busy timeout.
pub fn configure(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(
            "could not switch the database to WAL mode",
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )?;
    Ok(())
}

/// Creates the tables on a fresh file; refuses a file from a newer version.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let found: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    match found {
        None => {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION}); COMMIT;"
            ))?;
            Ok(())
        }
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(_) => Err(StoreError::Corrupt("unknown older schema version")),
    }
}
