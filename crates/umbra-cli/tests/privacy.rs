//! The privacy contract, tested: after a scripted exchange through the real
//! binary, the server's SQLite files and its complete log output hold no
//! message plaintext, no sender username and no client IP address, and no
//! stored row pairs two users (so no table pairs a sender with a recipient).

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;

use common::{ServerProc, ok};

const USERS: [&str; 3] = ["alicia", "bobbyt", "carolyn"];
const CLIENT_IP: &str = "127.0.0.1";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every identifier the server could hold for a user.
fn identifiers(db: &Path) -> HashMap<String, Vec<Vec<u8>>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let mut ids: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT username, device_id, mailbox_id, identity_key, sealing_key FROM devices")
        .expect("devices");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                vec![r.get::<_, Vec<u8>>(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
            ))
        })
        .expect("query");
    for row in rows {
        let (user, keys) = row.expect("row");
        let all = ids.entry(user.clone()).or_default();
        all.extend(keys);
        all.push(user.as_bytes().to_vec());
    }
    // And each account's key, which signs its device list.
    let mut stmt = conn
        .prepare("SELECT username, account_key FROM accounts")
        .expect("accounts");
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .expect("query");
    for row in rows {
        let (user, key) = row.expect("row");
        ids.entry(user).or_default().push(key);
    }
    ids
}

/// Checks every row of every table: at most one user's identifiers per row;
/// usernames only where accounts are kept; no plaintext anywhere.
fn check_rows(db: &Path, ids: &HashMap<String, Vec<Vec<u8>>>, plaintexts: &[String]) -> usize {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    let mut rows_checked = 0;
    for table in &tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("select");
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            rows_checked += 1;
            let mut users_in_row = Vec::new();
            for (i, column) in columns.iter().enumerate() {
                let value: Vec<u8> = match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        t.to_vec()
                    }
                    other => format!("{other:?}").into_bytes(),
                };
                for p in plaintexts {
                    assert!(
                        !contains(&value, p.as_bytes()),
                        "plaintext in {table}.{column}"
                    );
                }
                assert!(
                    !contains(&value, CLIENT_IP.as_bytes()),
                    "client IP in {table}.{column}"
                );
                for (user, keys) in ids {
                    if keys.iter().any(|k| contains(&value, k)) {
                        if !users_in_row.contains(user) {
                            users_in_row.push(user.clone());
                        }
                        // A username appears only as an account's own name,
                        // inside the user's own published key packages, or
                        // in the account's own signed device list (in the
                        // account's own row).
                        if contains(&value, user.as_bytes()) {
                            assert!(
                                matches!(
                                    (table.as_str(), column.as_str()),
                                    ("accounts", "username")
                                        | ("accounts", "device_list")
                                        | ("devices", "username")
                                        | ("key_packages", "data")
                                ),
                                "username of {user} stored in {table}.{column}"
                            );
                        }
                    }
                }
            }
            assert!(
                users_in_row.len() <= 1,
                "a row of `{table}` links several users: {users_in_row:?}"
            );
        }
    }
    // The envelope table has exactly these columns: one mailbox, no sender.
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('envelopes')")
        .expect("pragma")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("cols");
    assert_eq!(
        cols,
        ["id", "mailbox_id", "sealed", "introduction", "stored_day"]
    );
    rows_checked
}

fn raw_files_clean(data_dir: &Path, plaintexts: &[String]) {
    for entry in std::fs::read_dir(data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        // The blob store's directories, and whatever else is under the
        // data directory, are read too.
        if path.is_dir() {
            raw_files_clean(&path, plaintexts);
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        for p in plaintexts {
            assert!(
                !contains(&bytes, p.as_bytes()),
                "plaintext in {}",
                path.display()
            );
        }
        assert!(
            !contains(&bytes, CLIENT_IP.as_bytes()),
            "client IP in {}",
            path.display()
        );
    }
}

#[test]
fn server_storage_and_logs_hold_no_content_sender_or_client_ip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let log = dir.path().join("server.log");
    // The server listens on 127.0.0.3, clients connect from 127.0.0.1: the
    // two addresses differ, so finding the client's one anywhere is a leak.
    let server = ServerProc::start(&data, "127.0.0.3:0", &log);
    let probe = TcpStream::connect(&server.listen).expect("probe connect");
    assert_eq!(
        probe.local_addr().expect("local").ip().to_string(),
        CLIENT_IP
    );
    drop(probe);

    let p = |n: &str| dir.path().join(n);
    for u in USERS {
        common::register(&p(u), &server.invite, u);
    }
    let [a, b, c] = USERS;
    let mut plaintexts: Vec<String> = Vec::new();
    let say = |plaintexts: &mut Vec<String>, from: &str, args: &[&str], text: &str| {
        let mut full: Vec<&str> = args.to_vec();
        full.push(text);
        ok(&p(from), &full);
        plaintexts.push(text.to_string());
    };
    say(&mut plaintexts, a, &["send", b], "secret-1on1-first-Kq83");
    ok(&p(b), &["sync"]);
    say(&mut plaintexts, b, &["send", a], "secret-1on1-reply-Zx19");
    ok(&p(a), &["group", "create", "secret-group-name-Pw27", b, c]);
    plaintexts.push("secret-group-name-Pw27".into());
    say(
        &mut plaintexts,
        a,
        &["group", "send", "secret-group-name-Pw27"],
        "secret-group-msg-Lm44",
    );
    // A second device of the first user: linked through the server's link
    // slots and added to both conversations through the epoch ledger.
    common::link_device(&p(a), &p("second-device"));
    ok(&p("second-device"), &["sync"]);
    say(
        &mut plaintexts,
        "second-device",
        &["group", "send", "secret-group-name-Pw27"],
        "secret-second-device-Wd58",
    );
    ok(&p(b), &["sync"]);
    say(
        &mut plaintexts,
        b,
        &["group", "send", "secret-group-name-Pw27"],
        "secret-group-reply-Hv62",
    );

    // Carol is offline: her envelopes sit in the database now.
    let db = data.join("umbra.db");
    let ids = identifiers(&db);
    assert_eq!(ids.len(), 3);
    let pending: i64 = rusqlite::Connection::open(&db)
        .expect("db")
        .query_row("SELECT COUNT(*) FROM envelopes", [], |r| r.get(0))
        .expect("count");
    assert!(
        pending >= 3,
        "carol's envelopes should be stored, found {pending}"
    );
    let rows = check_rows(&db, &ids, &plaintexts);
    assert!(rows > 10);
    // The tables linking filled were among those read: the epoch ledger's
    // claims, and the first user's two devices with its signed list.
    let conn = rusqlite::Connection::open(&db).expect("db");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert!(count("SELECT count(*) FROM epochs") > 0);
    assert_eq!(count("SELECT count(*) FROM devices"), 4);
    drop(conn);
    raw_files_clean(&data, &plaintexts);

    ok(&p(c), &["sync"]);
    say(
        &mut plaintexts,
        c,
        &["group", "send", "secret-group-name-Pw27"],
        "secret-group-late-Qe05",
    );
    ok(&p(a), &["sync"]);
    ok(&p(b), &["sync"]);
    check_rows(&db, &ids, &plaintexts);
    raw_files_clean(&data, &plaintexts);

    assert!(server.stop().success());
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        log_text.contains("umbra://join"),
        "the log should be the server's real output"
    );
    assert!(
        log_text.lines().count() > 5,
        "expected debug logging:\n{log_text}"
    );
    for p in &plaintexts {
        assert!(!log_text.contains(p.as_str()), "plaintext in the log");
    }
    for u in USERS {
        assert!(!log_text.contains(u), "username {u} in the log");
    }
    assert!(!log_text.contains(CLIENT_IP), "client IP in the log");
    for keys in ids.values() {
        for k in keys {
            assert!(
                !log_text.contains(&hex::encode(k)),
                "an identifier in hex in the log"
            );
        }
    }
}
