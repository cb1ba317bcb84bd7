//! Calls through the real `umbra` binary, as the README runs them: `umbra
//! serve` (server and relay), `umbra listen --auto-answer` in one process,
//! `umbra call` in another, tones in and WAV files out; strangers silenced,
//! offline callees shown a missed call, declines, unknown users.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ServerProc, bin, call, ok, umbra};

/// The notes of the tone `umbra call --audio-in tone` sends.
const NOTES: [f32; 4] = [440.0, 660.0, 880.0, 1320.0];

/// A node and two users, Bob having written to Alice (so she is one of his
/// contacts: the default "who can call you").
fn acquainted(dir: &Path) -> (ServerProc, PathBuf, PathBuf) {
    let node = ServerProc::node(dir);
    let (alice, bob) = (dir.join("alice"), dir.join("bob"));
    common::register(&alice, &node.invite, "alice");
    common::register(&bob, &node.invite, "bob");
    ok(&bob, &["send", "alice", "call me"]);
    ok(&alice, &["sync"]);
    (node, alice, bob)
}

/// `umbra listen` in the background, its output collected.
struct Listener {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Listener {
    fn start(profile: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("--profile")
            .arg(profile)
            .arg("listen")
            .args(args)
            .env_remove("UMBRA_PROFILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let l = Self { child, out };
        l.wait_for("listening as");
        l
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.out.lock().unwrap().clone();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "listener never printed `{needle}`:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        common::wait_timeout(&mut self.child, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(100));
        self.out.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn has(events: &[serde_json::Value], kind: &str) -> bool {
    events.iter().any(|e| e["call"] == kind)
}

fn ended(events: &[serde_json::Value]) -> serde_json::Value {
    events
        .iter()
        .rev()
        .find(|e| e["call"] == "ended")
        .cloned()
        .unwrap_or_else(|| panic!("no `ended` event in {events:?}"))
}

fn calls(profile: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(ok(profile, &["--json", "calls"]).trim())
        .unwrap()
}

fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap();
    // A canonical 44-byte PCM header, as the call writes it.
    bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn a_call_carries_the_tones_and_protect_ip_on_one_side_relays_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, alice, bob) = acquainted(dir.path());
    let s = ok(&bob, &["settings", "protect-ip", "on"]);
    assert!(s.contains("protect IP address in calls: on"), "{s}");
    let bob_wav = dir.path().join("bob-heard.wav");
    let listener = Listener::start(
        &bob,
        &[
            "--auto-answer",
            "--audio-in",
            "silence",
            "--audio-out",
            bob_wav.to_str().unwrap(),
        ],
    );
    let (success, events, stderr) = call(&alice, &["bob", "--duration", "3"]);
    assert!(success, "{stderr}\n{events:?}");
    for kind in ["dialing", "ringing", "answered", "connected"] {
        assert!(has(&events, kind), "no `{kind}` in {events:?}");
    }
    let connected = events.iter().find(|e| e["call"] == "connected").unwrap();
    assert_eq!(connected["path"], "relayed", "{connected}");
    assert!(
        connected["why"]
            .as_str()
            .unwrap()
            .contains("bob protects their IP address"),
        "{connected}"
    );
    // Neither side ever moved to a direct path.
    assert!(
        events
            .iter()
            .filter(|e| e["call"] == "quality")
            .all(|e| e["path"] == "relayed"),
        "{events:?}"
    );
    let end = ended(&events);
    assert_eq!(end["outcome"], "answered", "{end}");
    assert!(end["seconds"].as_u64().unwrap() >= 2, "{end}");
    let text = listener.wait_for("call ended");
    assert!(text.contains("incoming call from alice"), "{text}");
    assert!(text.contains("connected, relayed"), "{text}");
    listener.stop();

    // What Bob heard is Alice's tone: 440, 660, 880, 1320 Hz notes.
    let heard = read_wav(&bob_wav);
    assert!(heard.len() >= 48_000 * 2, "{} samples", heard.len());
    let (matching, windows) = umbra_call::analysis::windows_on_notes(&heard, &NOTES, 15.0);
    assert!(
        matching * 10 >= windows * 7,
        "heard the notes in {matching} of {windows} windows"
    );
    // Both keep a record; the history says how it went.
    let a = calls(&alice);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["outcome"], "answered");
    assert_eq!(a[0]["outgoing"], true);
    assert_eq!(a[0]["path"], "relayed");
    let b = calls(&bob);
    assert_eq!(b[0]["outcome"], "answered");
    assert_eq!(b[0]["outgoing"], false);
    let h = ok(&alice, &["history", "bob", "--offline"]);
    assert!(h.contains("you called bob"), "{h}");
}

#[test]
fn protect_ip_on_the_callers_side_alone_keeps_the_call_relayed_too() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, alice, bob) = acquainted(dir.path());
    ok(&alice, &["settings", "protect-ip", "on"]);
    let listener = Listener::start(&bob, &["--auto-answer", "--audio-in", "silence"]);
    let (success, events, stderr) = call(&alice, &["bob", "--duration", "3"]);
    assert!(success, "{stderr}\n{events:?}");
    assert_eq!(ended(&events)["outcome"], "answered", "{events:?}");
    let connected: Vec<_> = events.iter().filter(|e| e["call"] == "connected").collect();
    assert!(!connected.is_empty(), "{events:?}");
    assert!(
        connected.iter().all(|e| e["path"] == "relayed"),
        "{connected:?}"
    );
    assert!(
        connected[0]["why"]
            .as_str()
            .unwrap()
            .contains("you protect your IP address"),
        "{connected:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["call"] == "quality")
            .all(|e| e["path"] == "relayed"),
        "{events:?}"
    );
    // Bob's side sees the same: the caller asked for it, so no direct path.
    let text = listener.wait_for("call ended");
    assert!(!text.contains("connected, direct"), "{text}");
    assert!(text.contains("alice protects their IP address"), "{text}");
    listener.stop();
    assert_eq!(calls(&alice)[0]["path"], "relayed");
}

#[test]
fn a_stranger_is_silenced_and_an_offline_callee_sees_a_missed_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProc::node(dir.path());
    let (bob, carol, dave) = (
        dir.path().join("bob"),
        dir.path().join("carol"),
        dir.path().join("dave"),
    );
    common::register(&bob, &node.invite, "bob");
    common::register(&carol, &node.invite, "carol");
    common::register(&dave, &node.invite, "dave");
    // Carol is a stranger to Bob: she may write, but not ring him.
    ok(&carol, &["send", "bob", "hello?"]);
    let listener = Listener::start(&bob, &["--auto-answer"]);
    listener.wait_for("hello?");
    let (_, events, _) = call(&carol, &["bob", "--ring-timeout", "3"]);
    assert!(!has(&events, "ringing"), "a silenced call rang: {events:?}");
    assert!(!has(&events, "answered"), "{events:?}");
    assert_eq!(ended(&events)["outcome"], "missed");
    let text = listener.wait_for("silenced a call from carol");
    assert!(!text.contains("incoming call"), "{text}");
    listener.stop();
    assert_eq!(calls(&bob)[0]["outcome"], "silenced");

    // "nobody" silences even contacts.
    ok(&bob, &["send", "carol", "ok, you may call"]);
    ok(&bob, &["settings", "who-can-call", "nobody"]);
    let listener = Listener::start(&bob, &["--auto-answer"]);
    let (_, events, _) = call(&carol, &["bob", "--ring-timeout", "2"]);
    assert!(!has(&events, "ringing"), "{events:?}");
    listener.wait_for("silenced a call from carol");
    listener.stop();

    // Dave is offline: the call rings out, and he sees it when he is back.
    ok(&dave, &["send", "carol", "hi"]);
    ok(&carol, &["sync"]);
    let (_, events, _) = call(&carol, &["dave", "--ring-timeout", "2"]);
    assert_eq!(ended(&events)["outcome"], "missed", "{events:?}");
    let s = ok(&dave, &["sync"]);
    assert!(s.contains("missed call from carol"), "{s}");
    let d = calls(&dave);
    assert_eq!(d[0]["outcome"], "missed", "{d:?}");
    assert_eq!(d[0]["outgoing"], false);
}

#[test]
fn declining_and_calling_an_unknown_user() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, alice, bob) = acquainted(dir.path());

    let out = umbra(&alice, &["call", "nosuchuser"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no user `nosuchuser`"), "{err}");
    let out = umbra(&alice, &["call", "alice"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot call yourself"));

    let mut listener = Listener::start(&bob, &[]);
    let caller = std::thread::spawn({
        let alice = alice.clone();
        move || call(&alice, &["bob", "--ring-timeout", "20"])
    });
    listener.wait_for("answer the call from alice? [y/N]");
    listener.type_line("n");
    let (_, events, _) = caller.join().unwrap();
    assert!(has(&events, "ringing"), "{events:?}");
    assert_eq!(ended(&events)["outcome"], "declined", "{events:?}");
    listener.wait_for("call ended: declined");
    listener.stop();
    assert_eq!(calls(&bob)[0]["outcome"], "declined");
    assert_eq!(calls(&alice)[0]["outcome"], "declined");
}

#[test]
fn calls_through_a_proxy_reach_the_relay_only_through_it() {
    use common::proxy_proc::{ProxyProc, free_port};
    let dir = tempfile::tempdir().unwrap();
    let relay_listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    // The relay URL the server hands out is a tripwire: a client that used
    // it instead of the proxy would send it a datagram.
    let wire = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    wire.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let wire_url = format!("turn:{}?transport=udp", wire.local_addr().unwrap());
    let node = ServerProc::start_command(
        "serve",
        &dir.path().join("node"),
        "127.0.0.1:0",
        &dir.path().join("node.log"),
        &[
            "--relay-listen",
            &relay_listen,
            "--relay-tls-listen",
            "127.0.0.1:0",
            "--relay-metrics-listen",
            "127.0.0.1:0",
            "--relay-url",
            &wire_url,
        ],
    );
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let proxy = ProxyProc::start_with(
        &dir.path().join("proxy"),
        &node.listen,
        &listen,
        true,
        "127.0.0.1",
        &["--relay-upstream", &relay_listen],
    );
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    for (p, u) in [(&alice, "alice"), (&bob, "bob")] {
        ok(
            p,
            &[
                "--proxy",
                &proxy.link,
                "register",
                "--no-passphrase",
                "--invite",
                &node.invite,
                u,
            ],
        );
    }
    ok(&bob, &["send", "alice", "call me"]);
    ok(&alice, &["sync"]);
    let bob_wav = dir.path().join("bob-heard.wav");
    let listener = Listener::start(
        &bob,
        &["--auto-answer", "--audio-out", bob_wav.to_str().unwrap()],
    );
    let (success, events, stderr) = call(&alice, &["bob", "--duration", "3"]);
    assert!(success, "{stderr}\n{events:?}");
    assert_eq!(ended(&events)["outcome"], "answered", "{events:?}");
    let connected = events.iter().find(|e| e["call"] == "connected").unwrap();
    assert!(
        connected["why"]
            .as_str()
            .unwrap()
            .contains("via your proxy"),
        "{connected}"
    );
    listener.wait_for("call ended");
    listener.stop();
    let heard = read_wav(&bob_wav);
    let (matching, windows) = umbra_call::analysis::windows_on_notes(&heard, &NOTES, 15.0);
    assert!(
        matching * 10 >= windows * 7,
        "heard the notes in {matching} of {windows} windows"
    );
    let mut buf = [0u8; 2048];
    assert!(
        wire.recv_from(&mut buf).is_err(),
        "a client sent a datagram to the relay's own address instead of the proxy"
    );
    drop(proxy);
}

#[test]
fn an_unreachable_relay_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A relay address where nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("turn:{}?transport=udp", silent.local_addr().unwrap());
    let node = ServerProc::start_command(
        "serve",
        &dir.path().join("node"),
        "127.0.0.1:0",
        &dir.path().join("node.log"),
        &[
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-tls-listen",
            "127.0.0.1:0",
            "--relay-metrics-listen",
            "127.0.0.1:0",
            "--relay-url",
            &url,
        ],
    );
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    common::register(&alice, &node.invite, "alice");
    common::register(&bob, &node.invite, "bob");
    let started = Instant::now();
    let out = umbra(&alice, &["call", "bob"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the call relay did not answer within 10 s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}
