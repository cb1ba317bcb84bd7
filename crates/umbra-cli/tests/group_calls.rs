//! Group calls through the real `umbra` binary, as the README runs them:
//! `umbra serve`, members in a group conversation running `umbra call
//! GROUP` (tones in, WAV files out, `--json`), others running `umbra
//! listen`.
//!
//! - A member listening sees the call start and end; one whose "who can
//!   call you" is `nobody` is not rung.
//! - A late joiner gets in while the call goes on; a member whose process
//!   was killed comes back in (its old place is removed first).
//! - The forwarding unit shutting down mid-call: every member is told, and
//!   the call ends by itself.
//! - Calling a name that is neither a group nor a user says so.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::events;
use common::{ServerProc, bin, ok, wait_timeout};

/// `umbra --profile P ARGS` in the background, stdout and stderr to a file.
struct Bg {
    child: Child,
    log: PathBuf,
}

impl Bg {
    fn start(profile: &Path, args: &[&str], log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("--profile")
            .arg(profile)
            .args(args)
            .env_remove("UMBRA_PROFILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C, then the exit.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        (status, self.text())
    }

    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = wait_timeout(&mut self.child, limit);
        (status, self.text())
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `umbra call team` for `who`, in the background.
fn call(d: &Path, who: &str, tag: &str, extra: &[&str]) -> Bg {
    let mut args = vec!["--json", "call", "team", "--audio-in", "tone"];
    args.extend_from_slice(extra);
    Bg::start(&d.join(who), &args, d.join(format!("{who}-{tag}.log")))
}

fn joined(log: &str) -> serde_json::Value {
    events(log)
        .into_iter()
        .find(|e| e["call"] == "group_joined")
        .unwrap_or_else(|| panic!("never joined:\n{log}"))
}

#[test]
fn members_start_join_rejoin_and_leave_a_group_call_and_others_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let node = ServerProc::node(d);
    let users = ["ann", "bob", "cat", "eve", "fay"];
    for u in users {
        common::register(&d.join(u), &node.invite, u);
    }
    ok(
        &d.join("ann"),
        &["group", "create", "team", "bob", "cat", "eve", "fay"],
    );
    for u in &users[1..] {
        ok(&d.join(u), &["sync"]);
    }
    ok(&d.join("fay"), &["settings", "who-can-call", "nobody"]);
    let eve = Bg::start(&d.join("eve"), &["listen"], d.join("eve-listen.log"));
    let fay = Bg::start(&d.join("fay"), &["listen"], d.join("fay-listen.log"));
    std::thread::sleep(Duration::from_secs(1));

    // Ann finds no call going on and starts one.
    let ann = call(d, "ann", "1", &[]);
    ann.wait_for("\"call\":\"connected\"", Duration::from_secs(30));
    assert_eq!(joined(&ann.text())["started"], true);
    eve.wait_for(
        "ann started a group call in `team`: join with `umbra call team`",
        Duration::from_secs(10),
    );
    fay.wait_for(
        "not ringing: who can call you is nobody",
        Duration::from_secs(10),
    );
    assert!(!fay.text().contains("`team`: join with"), "{}", fay.text());

    // Bob joins late, hears Ann, and leaves after his duration.
    let bob = call(d, "bob", "1", &["--duration", "3"]);
    let (status, log) = bob.finish(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    let j = joined(&log);
    assert_eq!(j["started"], false, "{log}");
    assert_eq!(j["participants"], serde_json::json!(["ann"]), "{log}");
    let heard = events(&log)
        .into_iter()
        .rev()
        .find(|e| e["call"] == "participants" && e["participants"][0]["speaking"] == true);
    assert!(heard.is_some(), "bob never heard ann:\n{log}");
    ann.wait_for(
        "\"call\":\"participant_left\",\"conversation\":\"team\",\"who\":\"bob\"",
        Duration::from_secs(10),
    );

    // Cat's process is killed mid-call; she calls again and is let back in.
    let cat = call(d, "cat", "1", &[]);
    cat.wait_for("\"call\":\"connected\"", Duration::from_secs(30));
    drop(cat);
    let cat = call(d, "cat", "2", &["--duration", "3"]);
    let (status, log) = cat.finish(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert_eq!(
        joined(&log)["participants"],
        serde_json::json!(["ann"]),
        "{log}"
    );
    let ann_log = ann.text();
    let cat_joins = events(&ann_log)
        .iter()
        .filter(|e| e["call"] == "participant_joined" && e["who"] == "cat")
        .count();
    assert_eq!(cat_joins, 2, "{ann_log}");

    // Ann, alone again, leaves with Ctrl-C: the call is over for everyone.
    let (status, log) = ann.interrupt();
    assert!(status.success(), "{log}");
    let left = events(&log)
        .into_iter()
        .find(|e| e["call"] == "group_left")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(left["error"].is_null(), "{left}");
    eve.wait_for("the group call in `team` ended", Duration::from_secs(10));
    drop((eve, fay));

    // A name that is neither a group nor a user: said.
    let out = common::umbra(&d.join("bob"), &["call", "nosuchgroup"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no user `nosuchgroup`"), "{err}");
    drop(node);
}

#[test]
fn when_the_forwarding_unit_shuts_down_every_member_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let node = ServerProc::node(d);
    for u in ["ann", "bob"] {
        common::register(&d.join(u), &node.invite, u);
    }
    ok(&d.join("ann"), &["group", "create", "team", "bob"]);
    ok(&d.join("bob"), &["sync"]);
    let ann = call(d, "ann", "1", &[]);
    ann.wait_for("\"call\":\"connected\"", Duration::from_secs(30));
    let bob = call(d, "bob", "1", &[]);
    bob.wait_for("\"call\":\"connected\"", Duration::from_secs(30));
    ann.wait_for("\"who\":\"bob\"", Duration::from_secs(10));
    let stopped = Instant::now();
    assert!(node.stop().success());
    for m in [ann, bob] {
        let (status, log) = m.finish(Duration::from_secs(20));
        assert!(stopped.elapsed() < Duration::from_secs(15), "{log}");
        assert!(status.code().is_some(), "killed, not ended: {log}");
        let left = events(&log)
            .into_iter()
            .find(|e| e["call"] == "group_left")
            .unwrap_or_else(|| panic!("{log}"));
        let error = left["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("restarting"), "{left}");
    }
}
