//! A profile encrypted at rest, tried as a thief would try it: the whole
//! directory copied away (database, WAL, key file) and searched for what the
//! owner said and to whom, opened as a SQLite file, and opened with `umbra`
//! without the passphrase and with a wrong one (which must change nothing);
//! then the owner's own use of it: the passphrase from the environment and
//! from a file descriptor, changed while another command runs on the
//! profile, removed, and asked for when a script gives none.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{ServerProc, ok};

/// The contact's name in the stolen-profile test: long enough that finding
/// it in the encrypted file means a leak, not chance (a 3-byte name turns
/// up by chance in about one of every 16 MiB of ciphertext).
const BOB: &str = "bartholomew";
const ALICE_PASS: &str = "a long walk by the grey river";
const SECRET_TEXT: &str = "the key is under the third flowerpot";
const REPLY_TEXT: &str = "noted, see you at the harbour";

/// `umbra --profile DIR ARGS` with `env` set (and UMBRA_PASSPHRASE only if
/// given there), stdin from `stdin`.
fn run(profile: &Path, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Output {
    let mut cmd = common::command(profile);
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn with_pass(profile: &Path, args: &[&str], pass: &str) -> Output {
    run(profile, args, &[("UMBRA_PASSPHRASE", pass)], Stdio::null())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    all.sort();
    all
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (name, bytes) in files(from) {
        std::fs::write(to.join(name), bytes).unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_copied_profile_reveals_nothing_without_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    let alice = dir.path().join("alice");
    let bob = dir.path().join("bob");
    let out = with_pass(
        &alice,
        &["register", "--invite", &node.invite, "alice"],
        ALICE_PASS,
    );
    assert!(out.status.success(), "{}", text(&out));
    common::register(&bob, &node.invite, BOB);
    let out = with_pass(&alice, &["send", BOB, SECRET_TEXT], ALICE_PASS);
    assert!(out.status.success(), "{}", text(&out));
    ok(&bob, &["sync"]);
    ok(&bob, &["send", "alice", REPLY_TEXT]);
    let out = with_pass(&alice, &["sync"], ALICE_PASS);
    assert!(out.status.success(), "{}", text(&out));

    // The thief copies the whole directory, the WAL included, while it is
    // at rest.
    let stolen = dir.path().join("stolen");
    copy_dir(&alice, &stolen);
    let before = files(&stolen);
    assert!(
        before.iter().any(|(n, _)| n == "profile.db"),
        "{:?}",
        before.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let invite_key = node
        .invite
        .split("key=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    for (name, bytes) in &before {
        for needle in [
            SECRET_TEXT,
            REPLY_TEXT,
            "alice",
            BOB,
            "127.0.0.1",
            invite_key.as_str(),
            "SQLite format 3",
            "CREATE TABLE",
        ] {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "the stolen {name} holds {needle:?}"
            );
        }
    }
    // SQLite itself (or SQLCipher without the key) sees no database.
    let conn = rusqlite::Connection::open(stolen.join("profile.db")).unwrap();
    let read = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    });
    assert!(read.is_err(), "the stolen database opened: {read:?}");
    drop(conn);

    // Without the passphrase, and with a wrong one: a clear error, exit 6.
    let out = run(&stolen, &["history", BOB], &[], Stdio::null());
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("locked with a passphrase") && err.contains("UMBRA_PASSPHRASE"),
        "{err}"
    );
    common::said_once(&err);
    let out = with_pass(&stolen, &["history", BOB], "a long walk by the gray river");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("wrong passphrase") && err.contains("nothing was changed"),
        "{err}"
    );
    common::said_once(&err);
    let out = with_pass(&stolen, &["send", BOB, "from the thief"], "guess");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert_eq!(
        files(&stolen),
        before,
        "a refused passphrase changed the files"
    );

    // With the passphrase, on a file descriptor (stdin here), the copy is
    // the whole profile.
    let pass_file = dir.path().join("pass.txt");
    std::fs::write(&pass_file, format!("{ALICE_PASS}\n")).unwrap();
    let out = run(
        &stolen,
        &["history", BOB, "--passphrase-fd", "0"],
        &[],
        std::fs::File::open(&pass_file).unwrap().into(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(SECRET_TEXT) && shown.contains(REPLY_TEXT),
        "{shown}"
    );
    drop(node);
}

#[test]
fn the_passphrase_changes_without_disturbing_a_running_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    let alice = dir.path().join("alice");
    let bob = dir.path().join("bob");

    // A script that gives no passphrase is told how, and nothing is made.
    let out = run(
        &alice,
        &["register", "--invite", &node.invite, "alice"],
        &[],
        Stdio::null(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("UMBRA_PASSPHRASE") && err.contains("--no-passphrase"),
        "{err}"
    );
    assert!(!alice.join("profile.db").exists());

    let out = with_pass(
        &alice,
        &["register", "--invite", &node.invite, "alice"],
        "first",
    );
    assert!(out.status.success(), "{}", text(&out));
    common::register(&bob, &node.invite, "bob");
    ok(&bob, &["send", "alice", "before the change"]);

    // A listener runs on the profile, unlocked with the first passphrase.
    let mut listener = common::command(&alice)
        .args(["--json", "listen"])
        .env("UMBRA_PASSPHRASE", "first")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(listener.stdout.take().unwrap());

    let out = run(
        &alice,
        &["passphrase", "set"],
        &[
            ("UMBRA_PASSPHRASE", "first"),
            ("UMBRA_NEW_PASSPHRASE", "second"),
        ],
        Stdio::null(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = with_pass(&alice, &["whoami"], "first");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let out = with_pass(&alice, &["whoami"], "second");
    assert!(out.status.success(), "{}", text(&out));

    // The listener, unlocked before, still receives.
    ok(&bob, &["send", "alice", "after the change"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("after the change")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the listener stopped receiving: {seen:?}"),
        }
    }
    let _ = listener.kill();
    let _ = listener.wait();

    // A new passphrase from a file descriptor; then none at all.
    let pass_file = dir.path().join("new.txt");
    std::fs::write(&pass_file, "third\n").unwrap();
    let out = run(
        &alice,
        &["passphrase", "set", "--new-passphrase-fd", "0"],
        &[("UMBRA_PASSPHRASE", "second")],
        std::fs::File::open(&pass_file).unwrap().into(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = with_pass(&alice, &["--json", "passphrase", "status"], "third");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"protection\":\"passphrase\""),
        "{}",
        text(&out)
    );
    let out = with_pass(&alice, &["passphrase", "remove"], "third");
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&alice, &["history", "bob"], &[], Stdio::null());
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("before the change") && shown.contains("after the change"),
        "{shown}"
    );
    drop(node);
}
