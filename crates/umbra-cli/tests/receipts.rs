//! Delivery and read receipts, and blocking, through the real binary: what
//! a sender sees of each message (sent, delivered, read; per member in a
//! group), read receipts turned off (both ways), and a blocked account that
//! gets nothing shown and no receipt back.

mod common;

use std::path::Path;

use common::{ServerProc, fails, history, ok};

/// Status of our text `body` in `conversation`, from `history --offline
/// --json`: the overall status and each recipient's.
fn status(profile: &Path, conversation: &str, body: &str) -> (String, Vec<(String, String)>) {
    let out = ok(
        profile,
        &[
            "--json",
            "history",
            conversation,
            "--offline",
            "--limit",
            "1000",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let entry = v
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["body"] == body && e["outgoing"] == true)
        .unwrap_or_else(|| panic!("no message {body:?} of ours in {out}"));
    let s = &entry["status"];
    let each = s["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["username"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (s["status"].as_str().unwrap_or_default().to_string(), each)
}

#[test]
fn senders_see_delivered_and_read_and_blocked_accounts_get_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("server.log"),
    );
    let p = |n: &str| dir.path().join(n);
    for u in ["alice", "bob", "carol"] {
        common::register(&p(u), &server.invite, u);
    }

    // Bob keeps read receipts to himself: alice learns only that her
    // message reached his device.
    let out = ok(&p("bob"), &["settings", "read-receipts", "off"]);
    assert!(out.contains("read receipts: off"), "{out}");
    ok(&p("alice"), &["send", "bob", "one"]);
    assert_eq!(status(&p("alice"), "bob", "one").0, "sent");
    ok(&p("bob"), &["sync"]);
    ok(&p("alice"), &["sync"]);
    assert_eq!(status(&p("alice"), "bob", "one").0, "delivered");

    // With read receipts on, reading is told.
    ok(&p("bob"), &["settings", "read-receipts", "on"]);
    ok(&p("alice"), &["send", "bob", "two"]);
    let shown = ok(&p("bob"), &["history", "alice"]);
    assert!(shown.contains("alice: two"), "{shown}");
    let out = ok(&p("alice"), &["sync"]);
    assert!(out.contains("bob read your message"), "{out}");
    assert_eq!(status(&p("alice"), "bob", "two").0, "read");
    // What was shown while read receipts were off stays unread for alice.
    assert_eq!(status(&p("alice"), "bob", "one").0, "delivered");
    let text = ok(&p("alice"), &["history", "bob", "--offline"]);
    assert!(text.contains("alice: two  (read)"), "{text}");
    assert!(text.contains("alice: one  (delivered)"), "{text}");

    // It works both ways: with hers off, alice sees nobody's.
    ok(&p("alice"), &["settings", "read-receipts", "off"]);
    assert_eq!(status(&p("alice"), "bob", "two").0, "delivered");
    ok(&p("alice"), &["settings", "read-receipts", "on"]);
    assert_eq!(status(&p("alice"), "bob", "two").0, "read");

    // A group: each member's status, the message's the least advanced one.
    ok(&p("alice"), &["group", "create", "team", "bob", "carol"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("carol"), &["sync"]);
    ok(&p("alice"), &["group", "send", "team", "hi team"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("alice"), &["sync"]);
    let (all, each) = status(&p("alice"), "team", "hi team");
    assert_eq!(all, "sent");
    assert_eq!(
        each,
        [
            ("bob".to_string(), "read".to_string()),
            ("carol".to_string(), "sent".to_string())
        ]
    );
    let text = ok(&p("alice"), &["history", "team", "--offline"]);
    assert!(
        text.contains("hi team  (sent, delivered to 1 of 2, read by 1)"),
        "{text}"
    );
    ok(&p("carol"), &["sync"]);
    ok(&p("alice"), &["sync"]);
    assert_eq!(status(&p("alice"), "team", "hi team").0, "read");
    // Bob's receipt went to alice alone: carol was shown nothing of it.
    let out = ok(&p("carol"), &["sync"]);
    assert!(!out.contains("read"), "{out}");

    // Bob blocks alice: her messages are not shown, and she gets no receipt.
    let out = ok(&p("bob"), &["block", "alice"]);
    assert!(out.contains("blocked `alice`"), "{out}");
    ok(&p("alice"), &["send", "bob", "are you there"]);
    ok(&p("alice"), &["group", "send", "team", "anyone?"]);
    let out = ok(&p("bob"), &["sync"]);
    assert!(out.contains("nothing new"), "{out}");
    let bob_sees: Vec<String> = history(&p("bob"), "alice")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(bob_sees, ["one", "two"]);
    assert!(
        !history(&p("bob"), "team")
            .iter()
            .any(|(_, b)| b == "anyone?"),
        "a blocked member's group message was shown"
    );
    ok(&p("carol"), &["sync"]);
    ok(&p("alice"), &["sync"]);
    assert_eq!(status(&p("alice"), "bob", "are you there").0, "sent");
    let (_, each) = status(&p("alice"), "team", "anyone?");
    assert_eq!(
        each,
        [
            ("bob".to_string(), "sent".to_string()),
            ("carol".to_string(), "read".to_string())
        ]
    );
    // Nothing goes to a blocked account either.
    let err = fails(&p("bob"), &["send", "alice", "hello?"]);
    assert!(err.contains("you blocked `alice`"), "{err}");
    assert_eq!(ok(&p("bob"), &["--json", "blocked"]).trim(), "[\"alice\"]");

    // Unblocked: what comes next is shown again.
    ok(&p("bob"), &["unblock", "alice"]);
    ok(&p("alice"), &["send", "bob", "back"]);
    let bob_sees: Vec<String> = history(&p("bob"), "alice")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(bob_sees, ["one", "two", "back"]);
    ok(&p("alice"), &["sync"]);
    assert_eq!(status(&p("alice"), "bob", "back").0, "read");

    // The server's database holds none of it in the clear.
    drop(server);
    let mut db = Vec::new();
    for f in ["umbra.db", "umbra.db-wal"] {
        db.extend(std::fs::read(dir.path().join("server").join(f)).unwrap_or_default());
    }
    assert!(!db.is_empty(), "no server database");
    for word in ["hi team", "anyone?", "are you there"] {
        assert!(
            !db.windows(word.len()).any(|w| w == word.as_bytes()),
            "the server's database holds {word:?}"
        );
    }
}
