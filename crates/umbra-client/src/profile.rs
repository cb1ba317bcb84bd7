//! A profile: one account on one device, in one directory.
//!
//! `DIR/profile.db` (SQLite, WAL) holds everything: settings (server invite,
//! keys, mailbox), contacts, conversations, message history, the hashes of
//! envelopes already applied (for exactly-once display), the outbox, call
//! records, receipts owed and received, blocked accounts, what each
//! business member's leaf says of who hosts it (`hosting`), the journal an
//! application passes on (`journal`) and the idempotency keys of its sends
//! (`idempotency`), which
//! group members we have given our delivery token to, the attachments
//! messages carried (what fetching and opening each needs, and where it
//! was saved), and the MLS state
//! (openmls's own tables). `DIR/media/` holds attachments fetched but not
//! yet saved, still sealed under keys only the database holds. The directory is created private (0700). The
//! database is encrypted under the profile's data key ([`crate::profile_key`]):
//! every connection to it starts by giving SQLCipher that key.
//! Several processes may use one profile at once (`listen` in one terminal,
//! `send` in another): every change runs in an IMMEDIATE transaction and MLS
//! state is always reloaded inside it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::ClientError;
use crate::mls_store;
use crate::profile_key::DataKey;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    username TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    mailbox_id BLOB,
    sealing_key BLOB,
    delivery_token BLOB,
    verified INTEGER NOT NULL DEFAULT 0,
    added_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    group_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    name TEXT NOT NULL,
    peer TEXT,
    created_ms INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL,
    message_id BLOB NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'event')),
    sent_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    outgoing INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_group ON history (group_id, id);
CREATE TABLE IF NOT EXISTS attachments (
    message_id BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    blob_id BLOB NOT NULL,
    key BLOB NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    kind INTEGER NOT NULL,
    path TEXT,
    write_token BLOB
);
CREATE TABLE IF NOT EXISTS seen (
    hash BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    mailbox_id BLOB NOT NULL,
    delivery_token BLOB,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS announced (
    group_id BLOB NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (group_id, username)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS calls (
    call_id BLOB PRIMARY KEY,
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    talk_ms INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    path TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_status (
    message_id BLOB NOT NULL,
    username TEXT NOT NULL,
    level INTEGER NOT NULL,
    at_ms INTEGER,
    PRIMARY KEY (message_id, username)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts_out (
    group_id BLOB NOT NULL,
    author TEXT NOT NULL,
    message_id BLOB NOT NULL,
    level INTEGER NOT NULL,
    PRIMARY KEY (message_id, level)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_gaps (
    group_id BLOB PRIMARY KEY,
    gap INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocked (
    username TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosting (
    group_id BLOB NOT NULL,
    username TEXT NOT NULL,
    kind TEXT NOT NULL,
    host_name TEXT,
    host_key BLOB,
    PRIMARY KEY (group_id, username)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL,
    conversation BLOB NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS journal_by_conversation ON journal (conversation, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    message_id BLOB NOT NULL,
    group_id BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_ms);
CREATE TABLE IF NOT EXISTS deferred (
    id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    mls BLOB NOT NULL
);
";

/// An open profile.
pub struct Profile {
    dir: PathBuf,
    conn: Connection,
    key: Option<DataKey>,
}

impl Profile {
    /// Opens (creating if needed) the profile in `dir`, encrypted under
    /// `key` (`None`: a profile made before profiles were encrypted).
    pub fn open(dir: &Path, key: Option<&DataKey>) -> Result<Self, ClientError> {
        make_dir(dir)?;
        let mut conn = connect(dir, key)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        add_column(&conn, "outbox", "message_id", "BLOB")?;
        add_column(&conn, "history", "read", "INTEGER NOT NULL DEFAULT 0")?;
        add_column(&conn, "contacts", "business_card", "BLOB")?;
        add_column(&conn, "conversations", "hosting_unseen", "TEXT")?;
        add_column(&conn, "outbox", "recipient", "TEXT")?;
        // Attachments: a voice message's length, and whether the sealed
        // blob is in `media/` (1), not yet (0), or gone from the server (-1).
        add_column(
            &conn,
            "attachments",
            "duration_ms",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        add_column(
            &conn,
            "attachments",
            "fetched",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        conn.execute_batch("CREATE INDEX IF NOT EXISTS outbox_by_message ON outbox (message_id)")?;
        // Group commits waiting for their epoch at the server (`ledger`),
        // and the envelopes they hold back.
        add_column(&conn, "outbox", "held", "BLOB")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS claims (
                 tag BLOB PRIMARY KEY,
                 group_id BLOB NOT NULL,
                 commit_msg BLOB NOT NULL
             )",
        )?;
        // Linked devices: `contacts.identity_key` is the account key; the
        // devices it vouches for, with their addresses, are here.
        add_column(
            &conn,
            "contacts",
            "list_version",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS contact_devices (
                 username TEXT NOT NULL,
                 identity_key BLOB NOT NULL,
                 sealing_key BLOB NOT NULL,
                 mailbox_id BLOB,
                 delivery_token BLOB,
                 PRIMARY KEY (username, identity_key)
             ) WITHOUT ROWID",
        )?;
        mls_store::migrate(&mut conn)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            key: key.cloned(),
        })
    }

    /// The key the database is encrypted under.
    pub fn key(&self) -> Option<&DataKey> {
        self.key.as_ref()
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read access.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts a write transaction (IMMEDIATE: takes the write lock at once,
    /// so concurrent processes queue instead of failing).
    pub fn write(&self) -> Result<Transaction<'_>, ClientError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }
}

/// Creates the profile directory if needed, private to its owner.
pub fn make_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A connection to the profile's database in `dir`, keyed (before anything
/// is read) and waiting for other connections' writes.
pub fn connect(dir: &Path, key: Option<&DataKey>) -> Result<Connection, ClientError> {
    let conn = Connection::open(dir.join("profile.db"))?;
    if let Some(key) = key {
        conn.execute_batch(&key.pragmas())?;
    }
    conn.busy_handler(Some(wait_for_lock))?;
    Ok(conn)
}

/// Waits for another connection's write to the profile: a millisecond at a
/// time, up to 30 s. (SQLite's own timeout sleeps up to 100 ms between
/// tries, which shows as latency when several connections of one process,
/// as the business host's, write often.)
pub fn wait_for_lock(tries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(1));
    tries < 30_000
}

/// Adds `column` to `table` in a profile made before it existed.
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), ClientError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        params![table, column],
        |r| r.get(0),
    )?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// Reads a setting.
pub fn get_setting(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Writes a setting.
pub fn set_setting(conn: &Connection, key: &str, value: &[u8]) -> Result<(), ClientError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Writes a conversation event into the history.
pub fn record_event(
    conn: &Connection,
    group_id: &[u8],
    actor: &str,
    text: &str,
) -> Result<(), ClientError> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let now = crate::now_ms() as i64;
    conn.execute(
        "INSERT INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing)
         VALUES (?1, ?2, ?3, ?4, 'event', ?5, ?5, 0)",
        params![group_id, id.to_vec(), actor, text, now],
    )?;
    Ok(())
}
