//! The PostgreSQL backend, for several server nodes sharing one database.
//!
//! - [`schema`]: tables, versions and migrations (the same versions as the
//!   SQLite file's).
//! - [`tx`]: [`PgTx`], the [`StoreTx`](crate::StoreTx) implementation.
//! - [`blobs`]: [`PgBlobStore`], attachment blobs every node reads.
//!
//! One connection per store, used by the server's one storage thread: each
//! batch of commands is one transaction, committed with `synchronous_commit`
//! on, so an `Accepted` means the envelope is on the database's disk, as with
//! SQLite. Every statement is prepared once per connection. A connection that
//! broke (the database restarted) is opened again at the next batch, so a
//! node recovers by itself; the batch that found it broken is answered
//! "unavailable" and its clients send again.
//!
//! What differs from SQLite, because several nodes write at once: an
//! envelope's id is its number within its mailbox, taken from the device row
//! under that row's lock, so a mailbox's envelopes are numbered in the order
//! they commit (a reader that fetched up to number n never misses one that
//! commits later with a smaller number, as it could with one global
//! sequence); the row also counts what the mailbox holds, so the cap holds
//! across nodes; a batch locks its mailboxes' rows in one order
//! ([`StoreTx::lock_mailboxes`](crate::StoreTx::lock_mailboxes)) so batches
//! on two nodes never wait on each other in a circle; a key package is
//! claimed with `FOR UPDATE SKIP LOCKED`, so claims from every node at once
//! never hand one out twice.

pub mod blobs;
pub mod schema;
pub mod tx;

use postgres::{Client, NoTls, Statement};

use crate::StoreError;
use crate::model::Limits;
use crate::traits::{Store, StoreTx};
pub use blobs::PgBlobStore;
pub use tx::PgTx;

/// Every statement the backend runs, prepared once per connection.
pub(crate) struct Statements {
    pub(crate) insert_account: Statement,
    pub(crate) insert_device: Statement,
    pub(crate) account_exists: Statement,
    pub(crate) account_devices: Statement,
    pub(crate) set_device_list: Statement,
    pub(crate) delete_device: Statement,
    pub(crate) live_drop: Statement,
    pub(crate) device: Statement,
    pub(crate) devices_of: Statement,
    pub(crate) device_exists: Statement,
    pub(crate) mailbox: Statement,
    pub(crate) mailbox_exists: Statement,
    pub(crate) all_mailboxes: Statement,
    pub(crate) set_token: Statement,
    pub(crate) lock_mailboxes: Statement,
    pub(crate) start_session: Statement,
    pub(crate) session_of: Statement,
    pub(crate) intro_get: Statement,
    pub(crate) intro_set: Statement,
    pub(crate) newest: Statement,
    pub(crate) kp_left: Statement,
    pub(crate) kp_delete_all: Statement,
    pub(crate) kp_insert_many: Statement,
    pub(crate) kp_delete_last_resort: Statement,
    pub(crate) kp_insert_last_resort: Statement,
    pub(crate) kp_claim: Statement,
    pub(crate) kp_last_resort: Statement,
    pub(crate) store_envelope: Statement,
    pub(crate) store_envelopes: Statement,
    pub(crate) acknowledge: Statement,
    pub(crate) fetch: Statement,
    pub(crate) delete: Statement,
    pub(crate) expire: Statement,
    pub(crate) total: Statement,
    pub(crate) card_set: Statement,
    pub(crate) card_get: Statement,
    pub(crate) card_verify: Statement,
    pub(crate) cards_all: Statement,
    pub(crate) live_hold: Statement,
    pub(crate) live_take: Statement,
    pub(crate) live_waiting: Statement,
    pub(crate) live_expire: Statement,
    pub(crate) epoch_claim: Statement,
    pub(crate) epoch_get: Statement,
    pub(crate) epoch_expire: Statement,
}

const DEVICE_COLUMNS: &str =
    "device_id, username, identity_key, sealing_key, mailbox_id, delivery_token_hash";

impl Statements {
    fn prepare(c: &mut Client) -> Result<Self, StoreError> {
        let mut p = |sql: &str| c.prepare(sql);
        Ok(Self {
            insert_account: p(
                "INSERT INTO accounts (username, created_day, account_key, device_list, list_version) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )?,
            account_devices: p(
                "SELECT account_key, device_list, list_version FROM accounts WHERE username = $1",
            )?,
            set_device_list: p("UPDATE accounts SET device_list = $3, list_version = $4 \
                 WHERE username = $1 AND account_key = $2 AND list_version < $4")?,
            delete_device: p("DELETE FROM devices WHERE device_id = $1")?,
            live_drop: p("DELETE FROM live WHERE mailbox_id = $1")?,
            insert_device: p(
                "INSERT INTO devices (device_id, username, identity_key, sealing_key, \
                 mailbox_id, delivery_token_hash) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )?,
            account_exists: p("SELECT 1 FROM accounts WHERE username = $1")?,
            device: p(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"
            ))?,
            devices_of: p(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE username = $1 ORDER BY device_id"
            ))?,
            device_exists: p("SELECT 1 FROM devices WHERE device_id = $1")?,
            mailbox: p(
                "SELECT mailbox_id, device_id, delivery_token_hash FROM devices WHERE mailbox_id = $1",
            )?,
            mailbox_exists: p("SELECT 1 FROM devices WHERE mailbox_id = $1")?,
            all_mailboxes: p("SELECT mailbox_id, device_id, delivery_token_hash FROM devices")?,
            set_token: p("UPDATE devices SET delivery_token_hash = $2 WHERE device_id = $1")?,
            // Rows are locked as the sort hands them over: in mailbox order,
            // whichever list named them. NO KEY UPDATE: the foreign keys of
            // envelopes and key packages written by other transactions
            // (KEY SHARE) never wait on it, so they cannot close a circle.
            lock_mailboxes: p("SELECT mailbox_id, session FROM devices \
                 WHERE mailbox_id = ANY($1) OR device_id = ANY($2) \
                 ORDER BY mailbox_id FOR NO KEY UPDATE")?,
            start_session: p(
                "UPDATE devices SET session = session + 1 WHERE device_id = $1 RETURNING session",
            )?,
            // FOR SHARE: a login elsewhere (which updates the row) waits for
            // this transaction, so what it fetches or acknowledges is still
            // this session's.
            session_of: p("SELECT session FROM devices WHERE mailbox_id = $1 FOR SHARE")?,
            intro_get: p(
                "SELECT intro_tokens, intro_at FROM devices WHERE mailbox_id = $1 FOR NO KEY UPDATE",
            )?,
            intro_set: p(
                "UPDATE devices SET intro_tokens = $2, intro_at = $3 WHERE mailbox_id = $1",
            )?,
            newest: p(
                "SELECT mailbox_id, max(seq) FROM envelopes WHERE mailbox_id = ANY($1) \
                 GROUP BY mailbox_id",
            )?,
            kp_left: p("SELECT count(*) FROM key_packages \
                 WHERE device_id = $1 AND suite = $2 AND NOT last_resort")?,
            kp_delete_all: p("DELETE FROM key_packages WHERE device_id = $1 AND suite = $2")?,
            kp_insert_many: p(
                "INSERT INTO key_packages (device_id, suite, data, last_resort) \
                 SELECT $1, $2, d, false FROM unnest($3::bytea[]) AS d",
            )?,
            kp_delete_last_resort: p(
                "DELETE FROM key_packages WHERE device_id = $1 AND suite = $2 AND last_resort",
            )?,
            kp_insert_last_resort: p(
                "INSERT INTO key_packages (device_id, suite, data, last_resort) \
                 VALUES ($1, $2, $3, true)",
            )?,
            kp_claim: p(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages \
                 WHERE device_id = $1 AND suite = $2 AND NOT last_resort ORDER BY id LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) RETURNING data",
            )?,
            kp_last_resort: p("SELECT data FROM key_packages \
                 WHERE device_id = $1 AND suite = $2 AND last_resort LIMIT 1")?,
            store_envelope: p(
                "WITH s AS (UPDATE devices SET next_seq = next_seq + 1, stored = stored + 1 \
                            WHERE mailbox_id = $1 AND stored < $2 RETURNING next_seq) \
                 INSERT INTO envelopes (mailbox_id, seq, sealed, introduction, stored_day) \
                 SELECT $1, next_seq, $3, $4, $5 FROM s RETURNING seq",
            )?,
            // Many envelopes in one statement: each mailbox's take numbered
            // in the order given (k), kept while under the cap, numbered on
            // from the mailbox's next_seq; the device rows are the batch's,
            // locked already (lock_mailboxes), so what `dev` reads is what
            // the update changes. One row per envelope, in order: its seq
            // (none if refused) and whether its mailbox exists.
            store_envelopes: p("WITH input AS (SELECT m, s, i, ord FROM \
                      unnest($1::bytea[], $2::bytea[], $3::bool[]) WITH ORDINALITY AS t(m, s, i, ord)), \
                  ranked AS (SELECT m, s, i, ord, row_number() OVER (PARTITION BY m ORDER BY ord) AS k \
                      FROM input), \
                  dev AS (SELECT mailbox_id, next_seq, stored FROM devices WHERE mailbox_id = ANY($1)), \
                  ok AS (SELECT r.ord, r.m, r.s, r.i, d.next_seq + r.k AS seq \
                      FROM ranked r JOIN dev d ON d.mailbox_id = r.m WHERE d.stored + r.k <= $4), \
                  cnt AS (SELECT m, count(*) AS n, max(seq) AS top FROM ok GROUP BY m), \
                  upd AS (UPDATE devices d SET next_seq = cnt.top, stored = d.stored + cnt.n \
                      FROM cnt WHERE d.mailbox_id = cnt.m), \
                  ins AS (INSERT INTO envelopes (mailbox_id, seq, sealed, introduction, stored_day) \
                      SELECT m, seq, s, i, $5 FROM ok) \
                 SELECT ok.seq, dev.mailbox_id IS NOT NULL FROM input \
                 LEFT JOIN ok ON ok.ord = input.ord LEFT JOIN dev ON dev.mailbox_id = input.m \
                 ORDER BY input.ord")?,
            // Many acknowledgements in one statement: $1/$2 each one's
            // mailbox and session, $3/$4 every acknowledged id with the
            // number (from 1) of the acknowledgement naming it. Only those
            // whose session is current delete (the rows are the batch's,
            // locked already, so no login slips in between); each mailbox's
            // count goes down by what it lost. One row per acknowledgement,
            // in order: whether its session was current, and how many
            // envelopes it deleted.
            acknowledge: p("WITH input AS (SELECT m, sess, ord FROM \
                      unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS t(m, sess, ord)), \
                  named AS (SELECT a, id FROM unnest($3::bigint[], $4::bigint[]) AS u(a, id)), \
                  cur AS (SELECT input.ord, input.m FROM input \
                      JOIN devices d ON d.mailbox_id = input.m AND d.session = input.sess), \
                  gone AS (DELETE FROM envelopes e USING named, cur \
                      WHERE named.a = cur.ord AND e.mailbox_id = cur.m AND e.seq = named.id \
                      RETURNING cur.ord, e.mailbox_id), \
                  per_ack AS (SELECT ord, count(*) AS n FROM gone GROUP BY ord), \
                  per_box AS (SELECT mailbox_id, count(*) AS n FROM gone GROUP BY mailbox_id), \
                  u AS (UPDATE devices d SET stored = d.stored - per_box.n FROM per_box \
                      WHERE d.mailbox_id = per_box.mailbox_id) \
                 SELECT cur.ord IS NOT NULL, coalesce(per_ack.n, 0)::BIGINT FROM input \
                 LEFT JOIN cur ON cur.ord = input.ord LEFT JOIN per_ack ON per_ack.ord = input.ord \
                 ORDER BY input.ord")?,
            fetch: p(
                "SELECT seq, sealed, introduction FROM envelopes WHERE mailbox_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
            )?,
            delete: p(
                "WITH gone AS (DELETE FROM envelopes WHERE mailbox_id = $1 AND seq = ANY($2) RETURNING 1), \
                      n AS (SELECT count(*) AS n FROM gone), \
                      u AS (UPDATE devices SET stored = stored - (SELECT n FROM n) \
                            WHERE mailbox_id = $1 AND (SELECT n FROM n) > 0) \
                 SELECT n FROM n",
            )?,
            expire: p(
                "WITH gone AS (DELETE FROM envelopes WHERE stored_day < $1 RETURNING mailbox_id), \
                      per AS (SELECT mailbox_id, count(*) AS n FROM gone GROUP BY mailbox_id), \
                      u AS (UPDATE devices d SET stored = d.stored - per.n FROM per \
                            WHERE d.mailbox_id = per.mailbox_id) \
                 SELECT coalesce(sum(n), 0)::BIGINT FROM per",
            )?,
            total: p("SELECT count(*) FROM envelopes")?,
            card_set: p(
                "INSERT INTO business_cards (username, card, verification) VALUES ($1, $2, NULL) \
                 ON CONFLICT (username) DO UPDATE SET card = EXCLUDED.card, \
                   verification = CASE WHEN $3 THEN business_cards.verification ELSE NULL END",
            )?,
            card_get: p(
                "SELECT username, card, verification FROM business_cards WHERE username = $1",
            )?,
            card_verify: p("UPDATE business_cards SET verification = $2 WHERE username = $1")?,
            cards_all: p(
                "SELECT username, card, verification FROM business_cards ORDER BY username",
            )?,
            // The batch holds the mailbox's device row (lock_mailboxes), so
            // two nodes never both see room under the cap.
            live_hold: p(
                "INSERT INTO live (mailbox_id, sealed, introduction, until_secs) \
                 SELECT $1, $2, $3, $5 WHERE (SELECT count(*) FROM live \
                 WHERE mailbox_id = $1 AND until_secs >= $4) < $6",
            )?,
            live_take: p(
                "DELETE FROM live WHERE mailbox_id = $1 RETURNING id, sealed, introduction, until_secs",
            )?,
            live_waiting: p(
                "SELECT DISTINCT mailbox_id FROM live WHERE mailbox_id = ANY($1) AND until_secs >= $2",
            )?,
            live_expire: p("DELETE FROM live WHERE until_secs < $1")?,
            epoch_claim: p(
                "INSERT INTO epochs (tag, commit_msg, stored_day) VALUES ($1, $2, $3) \
                 ON CONFLICT (tag) DO NOTHING",
            )?,
            epoch_get: p("SELECT commit_msg FROM epochs WHERE tag = $1")?,
            epoch_expire: p(
                "WITH gone AS (DELETE FROM epochs WHERE stored_day < $1 RETURNING 1) \
                 SELECT count(*) FROM gone",
            )?,
        })
    }
}

/// What the database says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The schema version found (0: empty).
    pub schema_version: i64,
    /// Its `synchronous_commit` setting (this program sets `on` for its own
    /// connections).
    pub synchronous_commit: String,
    /// Its clock, seconds since the Unix epoch.
    pub now_unix: f64,
    /// Its version.
    pub server_version: String,
}

/// A connection to the shared database, with its statements.
struct Connected {
    client: Client,
    statements: Statements,
}

/// The server's state in a PostgreSQL database.
pub struct PgStore {
    url: String,
    limits: Limits,
    conn: Option<Connected>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("PgStore")
            .field("limits", &self.limits)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    let config: postgres::Config = url.parse()?;
    let mut client = config.connect(NoTls)?;
    // An answer only once the commit is on disk (the default, said so).
    client.batch_execute("SET synchronous_commit = on")?;
    // Every statement here finds its rows through an index. A prepared
    // statement's generic plan, cached once it ran five times, keeps the
    // estimates of that moment: a node that started on a young database
    // went on scanning the whole devices table for each batch's fifty rows
    // (10 ms a batch at 10,000 devices) until statistics caught up. Planning
    // afresh each time avoids it but costs a third of the throughput;
    // ruling sequential scans out keeps the plans cached and right.
    client.batch_execute("SET enable_seqscan = off")?;
    // A node that stops dead mid-batch (frozen by SIGSTOP, its machine
    // suspended, its network gone) would hold its mailboxes' row locks
    // until it woke, and every other node storing for those devices would
    // wait as long. A batch never idles inside its transaction (its
    // commands are all there before it begins), so the database ends such a
    // session after a few seconds; the stalled node finds its connection
    // closed, answers that batch "unavailable" and connects afresh.
    client.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = {}",
        STALLED_SESSION.as_millis()
    ))?;
    Ok(client)
}

/// How long a node's session may sit idle inside a transaction before the
/// database ends it and releases its locks.
pub const STALLED_SESSION: std::time::Duration = std::time::Duration::from_secs(5);

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host/db`) and
    /// brings its schema up to date.
    pub fn connect(url: &str, limits: Limits) -> Result<Self, StoreError> {
        Self::migrate(url, schema::SCHEMA_VERSION)?;
        let mut s = Self {
            url: url.to_string(),
            limits,
            conn: None,
        };
        s.ensure()?;
        Ok(s)
    }

    /// Brings the schema of the database at `url` to `version` (tests make
    /// older databases with it).
    pub fn migrate(url: &str, version: i64) -> Result<(), StoreError> {
        let mut client = connect(url)?;
        let mut tx = client.transaction()?;
        schema::migrate_to(&mut tx, version)?;
        tx.commit()?;
        Ok(())
    }

    /// The schema version of the database at `url`.
    pub fn schema_version(url: &str) -> Result<i64, StoreError> {
        let mut client = connect(url)?;
        let mut tx = client.transaction()?;
        let v = schema::version(&mut tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// What `umbra server doctor` reports of the database at `url`.
    pub fn health(url: &str) -> Result<Health, StoreError> {
        let mut client = connect(url)?;
        let synchronous_commit: String = client.query_one("SHOW synchronous_commit", &[])?.get(0);
        let now_unix: f64 = client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])?
            .get(0);
        let server_version: String = client.query_one("SHOW server_version", &[])?.get(0);
        let mut tx = client.transaction()?;
        let schema_version = schema::version(&mut tx)?;
        tx.commit()?;
        Ok(Health {
            schema_version,
            synchronous_commit,
            now_unix,
            server_version,
        })
    }

    /// The caps in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The connection, opened again if it broke.
    fn ensure(&mut self) -> Result<&mut Connected, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut client = connect(&self.url)?;
            let statements = Statements::prepare(&mut client)?;
            self.conn = Some(Connected { client, statements });
        }
        self.conn
            .as_mut()
            .ok_or(StoreError::Corrupt("no database connection"))
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The blocking client drives a runtime of its own to close, which
        // tokio forbids on a thread that runs async code: a server whose
        // start fails after opening the store would panic instead of saying
        // why. There, the connection closes on a thread of its own.
        if let Some(conn) = self.conn.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(conn)));
            let theirs = slot.clone();
            let closing = std::thread::Builder::new()
                .name("umbra-pg-close".into())
                .spawn(move || {
                    if let Ok(mut c) = theirs.lock() {
                        drop(c.take());
                    }
                });
            if closing.is_err()
                && let Ok(mut c) = slot.lock()
            {
                // No thread to close it on: the socket is left to the
                // process's end rather than a panic.
                std::mem::forget(c.take());
            }
        }
    }
}

impl Store for PgStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        let limits = self.limits;
        self.ensure()?;
        let Some(c) = self.conn.as_mut() else {
            return Err(StoreError::Corrupt("no database connection"));
        };
        // A connection that broke fails here; the next batch finds it
        // closed and connects afresh.
        let tx = c.client.transaction()?;
        Ok(Box::new(PgTx::new(tx, &c.statements, limits)))
    }
}
