//! The operator's checks, through the real binary: `umbra server doctor`
//! says what is right and what is wrong (and exits 1 when anything is), on
//! SQLite and on a cluster's PostgreSQL and NATS; `umbra server backup`
//! copies the embedded database consistently while the server takes mail,
//! and a server started on the copy has the accounts.

mod common;

use std::path::Path;

use common::cluster::NatsProc;
use common::{ServerProc, ok};
use umbra_store::pgtest::Cluster as Postgres;

fn server(args: &[&str], data: &Path) -> (bool, String) {
    let out = common::operator(data, args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn doctor_says_what_is_right_and_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A new node on SQLite: nothing wrong, what will be made is said.
    let (fine, out) = server(&["doctor"], &dir.path().join("fresh"));
    assert!(fine, "{out}");
    assert!(
        out.contains("will be made on first start (SQLite)"),
        "{out}"
    );

    // A database that is not there.
    let (fine, out) = server(
        &["doctor", "--database", "postgres://umbra@127.0.0.1:1/none"],
        &dir.path().join("a"),
    );
    assert!(!fine);
    assert!(
        out.contains("PROBLEM database postgres://umbra@127.0.0.1:1/none cannot be reached"),
        "{out}"
    );

    // A cluster node: the database, its schema and clock, NATS, the key.
    let pg = Postgres::start().expect("postgres");
    let url = pg.database("doctor").expect("db");
    let nats = NatsProc::start();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "ab".repeat(32)).expect("key");
    let data = dir.path().join("node");
    let nats_url = nats.url();
    let cluster = [
        "--database",
        &url,
        "--nats",
        &nats_url,
        "--cluster-key-file",
        key.to_str().expect("path"),
    ];
    // Before any node started: this one is the first, which makes the keys.
    let (fine, out) = server(&[&["doctor"], &cluster[..]].concat(), &data);
    assert!(fine, "{out}");
    assert!(out.contains("this is the first node"), "{out}");
    assert!(out.contains("cluster key"), "{out}");
    let node = ServerProc::start_with(&data, "127.0.0.1:0", &dir.path().join("node.log"), &cluster);
    let (fine, out) = server(&[&["doctor"], &cluster[..]].concat(), &data);
    assert!(fine, "{out}");
    let version = format!(
        "schema version {}",
        umbra_store::postgres::schema::SCHEMA_VERSION
    );
    assert!(out.contains(&version), "{out}");
    assert!(out.contains("clock within"), "{out}");
    assert!(out.contains("a message went round"), "{out}");
    // NATS gone, and a node without the cluster's keys.
    drop(nats);
    let (fine, out) = server(
        &[
            "doctor",
            "--database",
            &url,
            "--nats",
            "nats://127.0.0.1:1",
            "--cluster-key-file",
            key.to_str().expect("path"),
        ],
        &dir.path().join("new-node"),
    );
    assert!(!fine);
    assert!(out.contains("PROBLEM NATS at nats://127.0.0.1:1"), "{out}");
    assert!(out.contains("copy it from there"), "{out}");
    drop(node);
}

#[test]
fn a_backup_taken_while_the_server_writes_is_a_whole_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let node = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("server.log"));
    let p = |n: &str| dir.path().join(n);
    for u in ["alice", "bob"] {
        common::register(&p(u), &node.invite, u);
    }
    // Alice keeps writing while the backup is taken.
    let writer = {
        let alice = p("alice");
        std::thread::spawn(move || {
            for i in 0..15 {
                ok(&alice, &["send", "bob", &format!("message {i}")]);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let copy = dir.path().join("copy.db");
    let (fine, out) = server(&["backup", "--to", copy.to_str().expect("path")], &data);
    assert!(fine, "{out}");
    writer.join().expect("writer");
    // Not over an existing file.
    let (fine, out) = server(&["backup", "--to", copy.to_str().expect("path")], &data);
    assert!(!fine && out.contains("exists already"), "{out}");
    let conn = rusqlite::Connection::open(&copy).expect("open the copy");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let accounts: i64 = conn
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .expect("accounts");
    assert_eq!(accounts, 2);
    drop(conn);
    // A server starts on the copy (with the keys), as the same server.
    let original_invite = node.invite.clone();
    drop(node);
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).expect("dir");
    for f in ["server.key", "sign.key"] {
        std::fs::copy(data.join(f), restored.join(f)).expect("keys");
    }
    std::fs::copy(&copy, restored.join("umbra.db")).expect("db");
    let node = ServerProc::start(&restored, "127.0.0.1:0", &dir.path().join("restored.log"));
    let key = |invite: &str| invite.split("key=").nth(1).map(str::to_string);
    assert_eq!(key(&node.invite), key(&original_invite));
    drop(node);
    // PostgreSQL is backed up with its own tools.
    let (fine, out) = server(
        &[
            "backup",
            "--to",
            "/tmp/x.db",
            "--database",
            "postgres://umbra@127.0.0.1:1/x",
        ],
        &data,
    );
    assert!(!fine && out.contains("pg_dump"), "{out}");
}
