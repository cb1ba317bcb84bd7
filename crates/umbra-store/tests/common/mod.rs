//! What the store tests share: a device to register, its account's first
//! device list, and running one test on both backends.

#![allow(dead_code)]

use umbra_store::pgtest::Cluster;
use umbra_store::{AccountDevices, Day, Limits, NewDevice, PgStore, SqliteStore, Store};

/// Device `n` of `name`, every id and key derived from `n`.
pub fn device(name: &str, n: u8) -> NewDevice {
    NewDevice {
        username: name.to_string(),
        device_id: [n; 16],
        mailbox_id: [n.wrapping_add(100); 16],
        identity_key: [n; 32],
        sealing_key: [n.wrapping_add(1); 32],
        delivery_token_hash: [n.wrapping_add(2); 32],
    }
}

/// The first device list of the account whose first device is `n`
/// (opaque to the store).
pub fn list(n: u8) -> AccountDevices {
    AccountDevices {
        account_key: [n.wrapping_add(50); 32],
        version: 1,
        list: vec![n],
    }
}

pub const TODAY: Day = Day(20_000);

pub const LIMITS: Limits = Limits {
    mailbox_cap: 5,
    key_package_cap: 3,
};

/// Opens the store under test (again: the same file or database).
pub type Open<'a> = &'a dyn Fn() -> Box<dyn Store>;

pub fn on_sqlite(test: impl FnOnce(Open<'_>)) {
    on_sqlite_with(LIMITS, test)
}

pub fn on_sqlite_with(limits: Limits, test: impl FnOnce(Open<'_>)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    test(&|| Box::new(SqliteStore::open(&path, limits).expect("open")))
}

pub fn on_postgres(name: &str, test: impl FnOnce(Open<'_>)) {
    on_postgres_with(name, LIMITS, test)
}

pub fn on_postgres_with(name: &str, limits: Limits, test: impl FnOnce(Open<'_>)) {
    let cluster = Cluster::start().expect("a PostgreSQL server (apt-get install postgresql)");
    let url = cluster.database(name).expect("database");
    test(&|| Box::new(PgStore::connect(&url, limits).expect("connect")))
}

pub fn with_tx<T>(
    store: &mut Box<dyn Store>,
    f: impl FnOnce(&mut dyn umbra_store::StoreTx) -> T,
) -> T {
    let mut tx = store.begin().expect("begin");
    let out = f(&mut *tx);
    tx.commit().expect("commit");
    out
}
