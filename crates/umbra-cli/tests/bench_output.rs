//! `umbra bench` with its output going to pipes, as `umbra bench … | cat`
//! or a CI log would take it: the result on stdout, progress on stderr as
//! plain lines, and not one carriage return or escape sequence in either.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::ServerProc;

/// `umbra bench ARGS` with stdout and stderr to pipes.
fn bench(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .arg("bench")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
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
