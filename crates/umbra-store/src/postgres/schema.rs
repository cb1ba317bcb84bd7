//! The PostgreSQL schema, its versions and the migrations between them.
//!
//! The same versions as the SQLite file's (1: accounts, devices, key
//! packages, envelopes; 2: business cards; 3: sessions and introduction
//! budgets; 4: online-only envelopes held for a device on another node; 5:
//! the epoch ledger; 6: account keys and device lists; 7: key packages
//! per ciphersuite), so
//! both backends say the same
//! thing with `schema_version`; an older database upgrades in place, in one
//! transaction, and a newer one is refused. Differences from SQLite, for
//! several nodes writing at once: each device row keeps its mailbox's next
//! envelope number and how many it holds (`next_seq`, `stored`), so storing
//! an envelope takes that row's lock and numbers envelopes in the order they
//! commit, and the mailbox cap holds whatever node stores.

use postgres::Transaction;

use crate::StoreError;

/// The schema version this program writes (as the SQLite backend's).
pub const SCHEMA_VERSION: i64 = 8;

const SCHEMA_V1: &str = "
CREATE TABLE accounts (
    username    TEXT PRIMARY KEY,
    created_day INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id           BYTEA PRIMARY KEY CHECK (length(device_id) = 16),
    username            TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    identity_key        BYTEA NOT NULL CHECK (length(identity_key) = 32),
    sealing_key         BYTEA NOT NULL CHECK (length(sealing_key) = 32),
    mailbox_id          BYTEA NOT NULL UNIQUE CHECK (length(mailbox_id) = 16),
    delivery_token_hash BYTEA NOT NULL CHECK (length(delivery_token_hash) = 32),
    next_seq            BIGINT NOT NULL DEFAULT 0,
    stored              BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_username ON devices (username);
CREATE TABLE key_packages (
    id          BIGSERIAL PRIMARY KEY,
    device_id   BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    data        BYTEA NOT NULL,
    last_resort BOOLEAN NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device_id, last_resort, id);
CREATE TABLE envelopes (
    mailbox_id   BYTEA NOT NULL REFERENCES devices(mailbox_id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    sealed       BYTEA NOT NULL,
    introduction BOOLEAN NOT NULL,
    stored_day   INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, seq)
);
CREATE INDEX envelopes_by_day ON envelopes (stored_day);
";

const SCHEMA_V2: &str = "
CREATE TABLE business_cards (
    username     TEXT PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,
    card         BYTEA NOT NULL,
    verification BYTEA
);
";

/// Version 3, as SQLite's: each device's current main session (a later
/// login, on any node, supersedes the one before) and introduction budget.
const SCHEMA_V3: &str = "
ALTER TABLE devices ADD COLUMN session BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN intro_tokens DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN intro_at BIGINT NOT NULL DEFAULT 0;
";

/// Version 4: online-only envelopes (call signalling) held for seconds for
/// a device connected to another node, or to none yet. UNLOGGED: never
/// written to the WAL, so never in a replica, an archive or a base backup,
/// and emptied by a crash, as a node's memory would be. No reference to
/// `devices` (a permanent table may not be referenced from here on every
/// version, and a row outlives nothing: it goes when taken or when its hold
/// ends).
const SCHEMA_V4: &str = "
CREATE UNLOGGED TABLE live (
    id           BIGSERIAL PRIMARY KEY,
    mailbox_id   BYTEA NOT NULL CHECK (length(mailbox_id) = 16),
    sealed       BYTEA NOT NULL,
    introduction BOOLEAN NOT NULL,
    until_secs   BIGINT NOT NULL
);
CREATE INDEX live_by_mailbox ON live (mailbox_id, until_secs);
";

/// Version 5, as SQLite's: the commit that won each group epoch (opaque tag
/// and message), kept as long as envelopes are. A claim is one insert that
/// does nothing on a taken tag: of several nodes claiming at once, the
/// first to commit wins and the others read its commit.
const SCHEMA_V5: &str = "
CREATE TABLE epochs (
    tag        BYTEA PRIMARY KEY CHECK (length(tag) = 32),
    commit_msg BYTEA NOT NULL,
    stored_day INTEGER NOT NULL
);
CREATE INDEX epochs_by_day ON epochs (stored_day);
";

/// Version 6, as SQLite's: each account's key and latest signed device
/// list with its version; a new list is stored by one conditional update
/// (`list_version < new`), so of two nodes storing lists at once, the
/// newer one stays.
const SCHEMA_V6: &str = "
ALTER TABLE accounts ADD COLUMN account_key BYTEA CHECK (length(account_key) = 32);
ALTER TABLE accounts ADD COLUMN device_list BYTEA;
ALTER TABLE accounts ADD COLUMN list_version BIGINT NOT NULL DEFAULT 0;
";

/// Version 7, as SQLite's: each key package's MLS ciphersuite.
const SCHEMA_V7: &str = "
ALTER TABLE key_packages ADD COLUMN suite INTEGER NOT NULL DEFAULT 3;
DROP INDEX key_packages_by_device;
CREATE INDEX key_packages_by_device ON key_packages (device_id, suite, last_resort, id);
";

/// Version 8: attachment blobs, where every node reads them
/// ([`super::blobs`]); SQLite's version 8 has nothing to add, its node
/// keeping blobs as files beside it.
const SCHEMA_V8: &str = "
CREATE TABLE blobs (
    id          BYTEA PRIMARY KEY CHECK (length(id) = 16),
    size        BIGINT NOT NULL CHECK (size >= 0),
    write_hash  BYTEA NOT NULL CHECK (length(write_hash) = 32),
    created_day INTEGER NOT NULL,
    received    BIGINT NOT NULL DEFAULT 0,
    complete    BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX blobs_by_day ON blobs (created_day);
CREATE TABLE blob_pieces (
    blob_id BYTEA NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    at      BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (blob_id, at)
);
ALTER TABLE blob_pieces ALTER COLUMN data SET STORAGE EXTERNAL;
";

/// The migrations, in order: version `i + 1` is `STEPS[i]`.
const STEPS: [&str; 8] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
];

/// The version the database is at (0: empty).
pub fn version(tx: &mut Transaction<'_>) -> Result<i64, StoreError> {
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let v: Option<i64> = tx
        .query_one("SELECT max(version) FROM schema_version", &[])?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Brings the schema to `target` (at most [`SCHEMA_VERSION`]) in `tx`;
/// refuses a database from a newer version. Several nodes starting at once
/// take turns (an advisory lock held until `tx` ends).
pub fn migrate_to(tx: &mut Transaction<'_>, target: i64) -> Result<(), StoreError> {
    // One key for "umbra schema", so two nodes never migrate at once.
    tx.execute("SELECT pg_advisory_xact_lock(7746582131)", &[])?;
    let found = version(tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for v in (found + 1)..=target.min(SCHEMA_VERSION) {
        let step = STEPS
            .get(usize::try_from(v - 1).unwrap_or(usize::MAX))
            .ok_or(StoreError::Corrupt("unknown schema version"))?;
        tx.batch_execute(step)?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&v])?;
    }
    Ok(())
}
