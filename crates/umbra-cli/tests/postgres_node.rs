//! One `umbra server` on PostgreSQL (`--database`), through the real binary:
//! users chat 1:1 and in a group as on SQLite, what waits survives a restart
//! of the server, the operator's commands reach the same database, nothing
//! of the state lands in the data directory, and no table holds a message's
//! text or pairs two users.

mod common;

use std::path::Path;

use common::{ServerProc, history, ok};
use umbra_store::pgtest::Cluster;

/// Every value of every table of the database at `url`, as bytes.
fn every_value(url: &str) -> Vec<(String, Vec<u8>)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let tables: Vec<String> = c
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        // Each row as text (bytea in hex, decoded back), so every column of
        // every type is looked at.
        for r in c
            .query(&format!("SELECT row_to_json(x)::text FROM {t} x"), &[])
            .expect("rows")
        {
            let row: String = r.get(0);
            out.push((t.clone(), row.into_bytes()));
        }
    }
    out
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn operator(data: &Path, url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(["server", "business"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .args(["--database", url])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_server_on_postgresql_keeps_everything_there_and_nothing_it_should_not() {
    let cluster = Cluster::start().expect("a PostgreSQL server (apt-get install postgresql)");
    let url = cluster.database("node").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let log = dir.path().join("server.log");
    let server = ServerProc::start_with(&data, "127.0.0.1:0", &log, &["--database", &url]);
    let p = |n: &str| dir.path().join(n);
    for u in ["alice", "bob", "carol"] {
        common::register(&p(u), &server.invite, u);
    }
    ok(&p("alice"), &["send", "bob", "hello bob"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("bob"), &["send", "alice", "hi alice"]);
    ok(&p("alice"), &["group", "create", "trip", "bob", "carol"]);
    ok(&p("alice"), &["group", "send", "trip", "train at 9"]);
    // Carol is offline: what waits for her is in PostgreSQL, and outlives a
    // restart of the server.
    let listen = server.listen.clone();
    assert!(server.stop().success());
    let server = ServerProc::start_with(&data, &listen, &log, &["--database", &url]);
    ok(&p("carol"), &["sync"]);
    assert_eq!(
        history(&p("carol"), "trip"),
        [("alice".to_string(), "train at 9".to_string())]
    );
    assert_eq!(
        history(&p("alice"), "bob"),
        [
            ("alice".to_string(), "hello bob".to_string()),
            ("bob".to_string(), "hi alice".to_string())
        ]
    );
    // The operator's commands use the same database.
    ok(
        &p("alice"),
        &["business", "register", "--name", "Alice's Shop"],
    );
    assert!(operator(&data, &url, &["list"]).contains("Alice's Shop"));
    assert!(operator(&data, &url, &["verify", "alice"]).contains("verified `alice`"));
    drop(server);

    // The data directory keeps the keys and no database.
    assert!(!data.join("umbra.db").exists());
    // No table holds a text, in clear or as hex, and no row names two users.
    let rows = every_value(&url);
    assert!(
        rows.iter().any(|(t, _)| t == "devices"),
        "the state is in PostgreSQL"
    );
    for text in ["hello bob", "hi alice", "train at 9"] {
        for (t, row) in &rows {
            let row = String::from_utf8_lossy(row);
            assert!(
                !row.contains(text) && !row.contains(&hex_of(text)),
                "`{text}` in {t}"
            );
        }
    }
    for (t, row) in &rows {
        let row = String::from_utf8_lossy(row);
        let named = ["alice", "bob", "carol"]
            .iter()
            .filter(|u| row.contains(&format!("\"{u}\"")))
            .count();
        assert!(named <= 1, "a row of {t} names two users: {row}");
    }
}

/// A node on PostgreSQL that cannot start after opening the database (its
/// port is taken, as by another node on the same machine) says why and
/// exits; it does not panic while closing the database connection.
#[test]
fn a_node_whose_port_is_taken_says_so() {
    let cluster = Cluster::start().expect("a PostgreSQL server (apt-get install postgresql)");
    let url = cluster.database("taken").expect("database");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(common::bin())
        .args([
            "server",
            "--listen",
            &port,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--database", &url])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it cannot listen: {err}");
    assert!(
        err.contains(&format!("listening on {port}")) && err.contains("in use"),
        "says what failed: {err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
}
