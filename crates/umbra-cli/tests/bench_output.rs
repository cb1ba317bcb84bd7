//! `umbra bench` with its output going to pipes, as `umbra bench … | cat`
//! or a CI log would take it: the result on stdout, progress on stderr as
//! plain lines, and not one carriage return or escape sequence in either.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::ServerProc;

#[test]
fn bench_output_in_a_pipe_has_no_control_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    // About 12 s of sending, so the plain progress line (every 10 s) shows.
    let out = Command::new(common::bin())
        .args(["bench", "--invite", &node.invite])
        .args(["--clients", "4", "--messages", "12000", "--rate", "1000"])
        .args(["--idle-connections", "0", "--max-secs", "40"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
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
