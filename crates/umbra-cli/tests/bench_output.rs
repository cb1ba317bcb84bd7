//! `umbra bench` with its output going to pipes, as `umbra bench … | cat`
//! or a CI log would take it: the result on stdout, progress on stderr as
//! plain lines, and not one carriage return or escape sequence in either;
//! and a reader that goes away (`umbra bench … | head -1`) ends the command
//! quietly.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::ServerProc;

/// `umbra ARGS` with stdout to `stdout` and stderr to a pipe.
fn umbra(args: &[&str], stdout: Stdio) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// `umbra bench ARGS` with stdout and stderr to pipes.
fn bench(args: &[&str]) -> std::process::Output {
    umbra(&[&["bench"], args].concat(), Stdio::piped())
}

#[test]
fn bench_output_in_a_pipe_has_no_control_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    // About 12 s of sending, so the plain progress line (every 10 s) shows.
    let out = bench(&[
        "--invite",
        &node.invite,
        "--clients",
        "4",
        "--messages",
        "12000",
        "--rate",
        "1000",
        "--idle-connections",
        "0",
        "--max-secs",
        "40",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "control sequences on {name}: {text:?}"
        );
    }
    assert!(
        stderr.lines().any(|l| l.starts_with("delivered: ")),
        "no progress line: {stderr}"
    );
    assert!(
        stdout.contains("delivered 12000 envelopes"),
        "no result: {stdout}"
    );
    drop(node);
}

#[test]
fn bench_under_json_prints_the_result_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    // Long enough (11 s) that a progress line would show.
    let out = bench(&[
        "--json",
        "--invite",
        &node.invite,
        "--clients",
        "2",
        "--messages",
        "11000",
        "--rate",
        "1000",
        "--idle-connections",
        "20",
        "--max-secs",
        "40",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "stderr under --json: {stderr:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert!(v.is_object(), "{stdout}");
    drop(node);
}

/// Runs `umbra ARGS` with stdout into a pipe whose reader has already gone,
/// as `| head -1` leaves it once it has its line; stderr is kept.
fn with_reader_gone(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    umbra(args, writer.into())
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    let profile = dir.path().join("alice");
    let out = with_reader_gone(&[
        "--profile",
        profile.to_str().unwrap(),
        "register",
        "--no-passphrase",
        "--invite",
        &node.invite,
        "alice",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "register: {:?} {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The account was made all the same: the output was all that was lost.
    let whoami = common::umbra(&profile, &["whoami"]);
    assert!(whoami.status.success(), "{whoami:?}");
    for args in [
        vec!["--profile", profile.to_str().unwrap(), "whoami"],
        vec![
            "bench",
            "--invite",
            &node.invite,
            "--clients",
            "2",
            "--messages",
            "2000",
            "--idle-connections",
            "0",
            "--max-secs",
            "30",
        ],
    ] {
        let out = with_reader_gone(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    drop(node);
}
