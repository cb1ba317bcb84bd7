//! Bad input and faults: forged, replayed and oversize envelopes, key
//! packages running out, a client killed mid-send, and the server killed
//! with SIGKILL under load. The user sees a clear error; no acknowledged
//! message is lost or shown twice.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ServerProc, ok};
use umbra_client::{Client, Event};
use umbra_wire::invite::Invite;
use umbra_wire::noise::Keypair;
use umbra_wire::proto::{
    ClientFrame, ErrorCode, FetchDevices, SendEnvelope, ServerFrame, client_frame, server_frame,
};

/// `username` registered in `dir/username`, with no passphrase and no proxy.
async fn register(dir: &Path, invite: &str, username: &str) -> Client {
    Client::register(&dir.join(username), invite, username, None, None)
        .await
        .expect(username)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A raw protocol connection, for sending what a well-behaved client never would.
struct Raw {
    ch: umbra_net::Channel,
    next: u64,
}

impl Raw {
    async fn open(invite: &str) -> Self {
        let invite = Invite::parse(invite).expect("invite");
        let tcp = tokio::net::TcpStream::connect(invite.address())
            .await
            .expect("connect");
        let key = Keypair::generate().expect("key");
        let (ch, _) = umbra_net::connect(tcp, &key, &invite.server_key, Duration::from_secs(5))
            .await
            .expect("handshake");
        Self { ch, next: 1 }
    }

    async fn call(&mut self, body: client_frame::Body) -> server_frame::Body {
        let id = self.next;
        self.next += 1;
        self.ch
            .writer
            .send(&ClientFrame {
                request_id: id,
                body: Some(body),
            })
            .await
            .expect("send");
        loop {
            let f: ServerFrame = self.ch.reader.recv().await.expect("recv").expect("open");
            if f.request_id == id {
                return f.body.expect("body");
            }
        }
    }

    /// Looks `user` up, claiming packages of `suite` when given.
    async fn devices(&mut self, user: &str, suite: Option<u32>) -> umbra_wire::proto::Devices {
        match self
            .call(client_frame::Body::FetchDevices(FetchDevices {
                username: user.into(),
                claim_key_packages: suite.is_some(),
                suites: suite.into_iter().collect(),
            }))
            .await
        {
            server_frame::Body::Devices(d) => d,
            other => panic!("{other:?}"),
        }
    }

    async fn send(&mut self, mailbox: &[u8], sealed: Vec<u8>) -> server_frame::Body {
        self.call(client_frame::Body::Send(SendEnvelope {
            mailbox_id: mailbox.to_vec(),
            delivery_token: vec![],
            sealed,
            online_only: false,
        }))
        .await
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn warnings(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Warning { .. }))
        .count()
}

fn stored_envelopes(data_dir: &Path, mailbox: &[u8]) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(data_dir.join("umbra.db")).expect("db");
    let mut stmt = conn
        .prepare("SELECT sealed FROM envelopes WHERE mailbox_id = ?1 ORDER BY id")
        .expect("prepare");
    stmt.query_map([mailbox], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn forged_replayed_and_oversize_envelopes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("log"));
    rt().block_on(async {
        let mut alice = register(dir.path(), &server.invite, "alice").await;
        let mut bob = register(dir.path(), &server.invite, "bob").await;
        alice.send("bob", "the real one").await.expect("send");

        // Copy what the server holds for bob and send it again, twice.
        let captured = stored_envelopes(&data, bob.mailbox_id());
        assert_eq!(captured.len(), 3, "welcome, group meta, message");
        let mut raw = Raw::open(&server.invite).await;
        for _ in 0..2 {
            for env in &captured {
                assert!(matches!(
                    raw.send(bob.mailbox_id(), env.clone()).await,
                    server_frame::Body::Accepted(_)
                ));
            }
        }
        // Forgeries: random bytes, and a valid seal around junk.
        let devices = raw.devices("bob", None).await;
        let sealing: [u8; 32] = devices.devices[0]
            .keys
            .as_ref()
            .expect("keys")
            .sealing_key
            .clone()
            .try_into()
            .expect("32");
        raw.send(bob.mailbox_id(), vec![0x5a; 300]).await;
        raw.send(
            bob.mailbox_id(),
            umbra_crypto::seal::seal(&sealing, b"not a sealed content").expect("seal"),
        )
        .await;

        // Oversize: refused with a clear code, and the connection still works.
        match raw.send(bob.mailbox_id(), vec![1; 200 * 1024]).await {
            server_frame::Body::Error(e) => assert_eq!(e.code, ErrorCode::EnvelopeTooLarge as i32),
            other => panic!("{other:?}"),
        }
        // Unknown mailbox.
        match raw.send(&[9; 16], vec![1; 100]).await {
            server_frame::Body::Error(e) => assert_eq!(e.code, ErrorCode::UnknownMailbox as i32),
            other => panic!("{other:?}"),
        }

        let events = bob.sync().await.expect("bob sync");
        assert_eq!(texts(&events), vec!["the real one"], "{events:?}");
        assert_eq!(warnings(&events), 2, "two forgeries reported: {events:?}");
        assert!(
            stored_envelopes(&data, bob.mailbox_id()).is_empty(),
            "everything acknowledged"
        );

        // State is intact: the conversation goes on.
        alice.send("bob", "still fine").await.expect("send");
        assert_eq!(texts(&bob.sync().await.expect("sync")), vec!["still fine"]);
        assert_eq!(bob.history(Some("alice"), 100).expect("history").len(), 3);
    });
}

#[test]
fn last_resort_key_package_keeps_new_conversations_possible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("log"),
    );
    rt().block_on(async {
        let mut bob = register(dir.path(), &server.invite, "bob").await;
        let mut raw = Raw::open(&server.invite).await;
        // Both suites' packages used up: new conversations (post-quantum
        // ones) join through the last-resort package.
        for suite in [0x0003, 0x004F] {
            let mut last_resort_seen = 0;
            for _ in 0..60 {
                let d = raw.devices("bob", Some(suite)).await;
                assert!(
                    !d.devices[0].key_package.is_empty(),
                    "a key package is always handed out"
                );
                if d.devices[0].key_package_is_last_resort {
                    last_resort_seen += 1;
                }
            }
            assert!(
                last_resort_seen >= 10,
                "the last-resort package is reused once the others are gone"
            );
        }
        let mut alice = register(dir.path(), &server.invite, "alice").await;
        let mut carol = register(dir.path(), &server.invite, "carol").await;
        alice.send("bob", "from alice").await.expect("alice send");
        carol.send("bob", "from carol").await.expect("carol send");
        let mut got = texts(&bob.sync().await.expect("sync"));
        got.sort();
        assert_eq!(got, vec!["from alice", "from carol"]);
        // Bob's next login uploaded fresh key packages.
        for suite in [0x0003, 0x004F] {
            let d = raw.devices("bob", Some(suite)).await;
            assert!(!d.devices[0].key_package_is_last_resort);
        }
    });
}

#[test]
fn client_killed_mid_send_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("log"));
    let p = |n: &str| dir.path().join(n);
    common::register(&p("alice"), &server.invite, "alice");
    common::register(&p("bob"), &server.invite, "bob");
    ok(&p("alice"), &["send", "bob", "hello"]);

    // Kill `umbra send` at different moments.
    let mut confirmed = Vec::new();
    let mut attempted = Vec::new();
    for i in 0..12u64 {
        let text = format!("message {i}");
        let mut child = std::process::Command::new(common::bin())
            .arg("--profile")
            .arg(p("alice"))
            .args(["send", "bob", &text])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(i * 6));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            confirmed.push(text.clone());
        }
        attempted.push(text);
    }
    // Alice's next command flushes what was left in her outbox.
    ok(&p("alice"), &["sync"]);
    let history = common::history(&p("bob"), "alice");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, body) in &history {
        *counts.entry(body.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "shown twice: {counts:?}");
    for c in &confirmed {
        assert_eq!(counts.get(c.as_str()), Some(&1), "confirmed `{c}` missing");
    }
    // Alice's own history agrees with what bob got.
    let alice_side: Vec<String> = common::history(&p("alice"), "bob")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    for (_, body) in &history {
        assert!(alice_side.contains(body));
    }
    for body in &alice_side {
        assert_eq!(
            counts.get(body.as_str()),
            Some(&1),
            "alice shows `{body}` as sent but bob never got it"
        );
    }

    // The same envelope sent twice (an `Accepted` lost before the outbox row
    // was deleted) is shown once.
    let alice_key = umbra_client::profile_key::unlock(&p("alice"), None).expect("alice's key");
    let alice_db =
        umbra_client::profile::connect(&p("alice"), alice_key.as_ref()).expect("alice db");
    server.kill();
    let out = common::umbra(&p("alice"), &["send", "bob", "while the server is down"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
    let queued: i64 = alice_db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert_eq!(queued, 1, "the message waits in the outbox");
    alice_db
        .execute("INSERT INTO outbox (mailbox_id, delivery_token, sealed) SELECT mailbox_id, delivery_token, sealed FROM outbox", [])
        .expect("duplicate");
    let server = ServerProc::start(
        &data,
        &server_listen(&server_invite_port(&p("alice"))),
        &dir.path().join("log"),
    );
    ok(&p("alice"), &["sync"]);
    let again = common::history(&p("bob"), "alice");
    assert_eq!(
        again
            .iter()
            .filter(|(_, b)| b == "while the server is down")
            .count(),
        1
    );
    drop(server);
}

fn server_invite_port(profile: &Path) -> String {
    let out = ok(profile, &["--json", "whoami"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let invite = Invite::parse(v["invite"].as_str().expect("invite")).expect("parse");
    invite.port.to_string()
}

fn server_listen(port: &str) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn server_killed_under_load_loses_no_acknowledged_message() {
    const SENDERS: [&str; 3] = ["anna", "bert", "cleo"];
    const PER_SENDER: usize = 60;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let log = dir.path().join("log");
    let server = ServerProc::start(&data, "127.0.0.1:0", &log);
    let invite = server.invite.clone();
    let listen = server.listen.clone();
    rt().block_on(async {
        let mut bob = register(dir.path(), &invite, "bob").await;
        let mut senders = Vec::new();
        for s in SENDERS {
            let mut c = register(dir.path(), &invite, s).await;
            c.send("bob", &format!("{s} hello"))
                .await
                .expect("first message");
            senders.push(c);
        }
        // Bob joins the three conversations, which hands each sender his
        // delivery token; from then on their envelopes are not introductions.
        bob.sync().await.expect("bob joins");
        for c in &mut senders {
            c.sync().await.expect("sender learns bob's token");
            let has_token = c
                .contacts()
                .expect("contacts")
                .iter()
                .any(|k| k.username == "bob" && k.has_token);
            assert!(has_token, "bob's token did not arrive");
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let threads: Vec<_> = SENDERS
        .iter()
        .map(|s| {
            let profile = dir.path().join(s);
            let s = s.to_string();
            std::thread::spawn(move || {
                rt().block_on(async move {
                    let mut c = Client::open(&profile, None).expect("open");
                    let mut acknowledged = Vec::new();
                    for i in 0..PER_SENDER {
                        let text = format!("{s} {i}");
                        // send = one local transaction (history + outbox), then the flush.
                        match c.send("bob", &text).await {
                            Ok(_) => acknowledged.push(text),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    // Whatever the outage left in the outbox goes out now.
                    while Instant::now() < deadline {
                        if c.flush_outbox().await.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    acknowledged
                })
            })
        })
        .collect();

    // Let the load run, then kill the server without warning, then restart it.
    let stored = || -> i64 {
        rusqlite::Connection::open(data.join("umbra.db"))
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM envelopes", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    while stored() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    let server = ServerProc::start(&data, &listen, &log);

    let mut acknowledged = Vec::new();
    for t in threads {
        acknowledged.extend(t.join().expect("sender thread"));
    }
    assert!(
        acknowledged.len() < SENDERS.len() * PER_SENDER,
        "the kill should have interrupted some sends"
    );

    let pending_before_sync = stored();
    let sync = common::umbra(&dir.path().join("bob"), &["sync"]);
    let sync_out = format!(
        "stored before bob's sync: {pending_before_sync}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&sync.stdout),
        String::from_utf8_lossy(&sync.stderr)
    );
    let history = common::history(&dir.path().join("bob"), "anna")
        .into_iter()
        .chain(common::history(&dir.path().join("bob"), "bert"))
        .chain(common::history(&dir.path().join("bob"), "cleo"))
        .map(|(_, b)| b)
        .collect::<Vec<_>>();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for b in &history {
        *counts.entry(b.as_str()).or_default() += 1;
    }
    for a in &acknowledged {
        assert_eq!(
            counts.get(a.as_str()),
            Some(&1),
            "acknowledged `{a}` not delivered exactly once\n{sync_out}"
        );
    }
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    // A send that failed after its local transaction left the message in
    // the outbox, and the final flush delivered it: all of them arrive.
    assert_eq!(
        history.len(),
        SENDERS.len() * (PER_SENDER + 1),
        "{sync_out}"
    );
    drop(server);
}

#[test]
fn listen_reconnects_when_the_server_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let log = dir.path().join("log");
    let server = ServerProc::start(&data, "127.0.0.1:0", &log);
    let (invite, listen_addr) = (server.invite.clone(), server.listen.clone());
    rt().block_on(async {
        let mut alice = register(dir.path(), &invite, "alice").await;
        let mut bob = register(dir.path(), &invite, "bob").await;
        alice.send("bob", "before the restart").await.expect("send");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let events = std::cell::RefCell::new(Vec::new());
        let listener = bob.listen(|e| events.borrow_mut().push(e.clone()), async {
            let _ = stopped.await;
        });
        let driver = async {
            let wait_for = |text: &'static str| {
                let events = &events;
                async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !texts(&events.borrow()).iter().any(|t| t == text) {
                        assert!(
                            Instant::now() < deadline,
                            "`{text}` never arrived: {:?}",
                            events.borrow()
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            wait_for("before the restart").await;
            server.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let restarted = ServerProc::start(&data, &listen_addr, &log);
            alice
                .send("bob", "after the restart")
                .await
                .expect("send after restart");
            wait_for("after the restart").await;
            let _ = stop.send(());
            restarted
        };
        let (result, restarted) = tokio::join!(listener, driver);
        result.expect("listen ends cleanly when stopped");
        let warned = events
            .borrow()
            .iter()
            .any(|e| matches!(e, Event::Warning { text } if text.contains("reconnecting")));
        assert!(warned, "the user was told about the reconnection");
        drop(restarted);
    });
}
