//! The schema, its version, and the connection settings.

use rusqlite::Connection;

use crate::StoreError;

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = 8;

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

/// Version 2: business accounts' cards (the card and the operator's
/// verification, both signed elsewhere and opaque here).
const SCHEMA_V2: &str = "
CREATE TABLE business_cards (
    username     TEXT PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,
    card         BLOB NOT NULL,
    verification BLOB
) WITHOUT ROWID;
";

/// Version 3: what several nodes need of a device (kept by SQLite too, so
/// both backends behave alike): the number of its current main session
/// (`session`: a session superseded by a later login can neither fetch nor
/// acknowledge), and its introduction budget (a token bucket: `intro_tokens`
/// left, NULL when full, as of `intro_at`, unix seconds).
const SCHEMA_V3: &str = "
ALTER TABLE devices ADD COLUMN session INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN intro_tokens REAL;
ALTER TABLE devices ADD COLUMN intro_at INTEGER NOT NULL DEFAULT 0;
";

/// Version 4: online-only envelopes held for a device on another node
/// (PostgreSQL's unlogged `live` table). SQLite keeps them in a temporary
/// in-memory table made at each open ([`super::live`]), so its step changes
/// nothing in the file; the number keeps both backends' versions alike.
const SCHEMA_V4: &str = "";

/// Version 5: the commit that won each group epoch (`tag`: opaque, derived
/// by the members from the epoch's secrets; `commit_msg`: the MLS message,
/// opaque), kept as long as envelopes are.
const SCHEMA_V5: &str = "
CREATE TABLE epochs (
    tag        BLOB PRIMARY KEY CHECK (length(tag) = 32),
    commit_msg BLOB NOT NULL,
    stored_day INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX epochs_by_day ON epochs (stored_day);
";

/// Version 6: each account's key and latest signed device list (opaque,
/// checked by the server before it is stored) with its version. An account
/// made before has neither (NULL): it keeps its one device and cannot link
/// another.
const SCHEMA_V6: &str = "
ALTER TABLE accounts ADD COLUMN account_key BLOB CHECK (length(account_key) = 32);
ALTER TABLE accounts ADD COLUMN device_list BLOB;
ALTER TABLE accounts ADD COLUMN list_version INTEGER NOT NULL DEFAULT 0;
";

/// Version 7: each key package's MLS ciphersuite (its code point; 3, the
/// classical suite, for every package stored before), so a device keeps
/// packages of each suite it supports and a claim names the suite.
const SCHEMA_V7: &str = "
ALTER TABLE key_packages ADD COLUMN suite INTEGER NOT NULL DEFAULT 3;
DROP INDEX key_packages_by_device;
CREATE INDEX key_packages_by_device ON key_packages(device_id, suite, last_resort, id);
";

/// Version 8, as PostgreSQL's: attachment blobs, which a single node keeps
/// as files beside this database (`FsBlobStore`): nothing to add here.
const SCHEMA_V8: &str = "";

/// The migrations, in order: version `i + 1` is `STEPS[i]`.
const STEPS: [&str; 8] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
];

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

/// Creates the tables on a fresh file, upgrades an older one in place (in
/// one transaction), refuses a file from a newer version.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the schema to `target` (tests make older files with it).
pub fn migrate_to(conn: &Connection, target: i64) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let found: i64 = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let target = target.min(SCHEMA_VERSION);
    if found >= target {
        return Ok(());
    }
    let mut sql = String::from("BEGIN;");
    for v in (found + 1)..=target {
        let step = STEPS
            .get(usize::try_from(v - 1).unwrap_or(usize::MAX))
            .ok_or(StoreError::Corrupt("unknown older schema version"))?;
        sql.push_str(step);
        sql.push_str(&format!(
            "INSERT INTO schema_version (version) VALUES ({v});"
        ));
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_upgrades_in_place() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(&format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); {SCHEMA_V1}
             INSERT INTO schema_version (version) VALUES (1);
             INSERT INTO accounts (username, created_day) VALUES ('alice', 1);"
        ))
        .expect("v1");
        migrate(&conn).expect("migrate");
        let v: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .expect("accounts");
        assert_eq!(kept, 1);
        conn.execute(
            "INSERT INTO business_cards (username, card) VALUES ('alice', x'01')",
            [],
        )
        .expect("the new table");
        // Migrating again changes nothing.
        migrate(&conn).expect("again");
    }
}
