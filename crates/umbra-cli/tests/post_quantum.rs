//! Post-quantum conversations through the real binary: new clients make
//! their 1:1 chats and small groups with X-Wing and say so; a server that
//! withholds a user's post-quantum key packages (to read the conversation
//! once classical keys fall) is caught, not obeyed; a user whose devices
//! have no post-quantum keys cannot be added to a post-quantum group, and
//! is told why.

mod common;

use std::path::Path;

use common::{ServerProc, fails, history, ok};

/// `umbra --json conversations`: whether the conversation `name` is
/// post-quantum.
fn post_quantum(profile: &Path, name: &str) -> bool {
    common::conversation(profile, name)["post_quantum"]
        .as_bool()
        .expect("post_quantum")
}

/// The operator deletes `user`'s post-quantum key packages (suite 0x004F)
/// from the server's database, leaving the classical ones.
fn withhold(data: &Path, user: &str) -> usize {
    let db = rusqlite::Connection::open(data.join("umbra.db")).expect("db");
    db.execute(
        "DELETE FROM key_packages WHERE suite = 79 AND device_id IN \
         (SELECT device_id FROM devices WHERE username = ?1)",
        [user],
    )
    .expect("withhold")
}

#[test]
fn new_clients_talk_post_quantum_and_a_withholding_server_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("server.log"));
    let p = |n: &str| dir.path().join(n);
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        common::register(&p(user), &server.invite, user);
    }
    // Every registration left packages of both suites on the server.
    {
        let db = rusqlite::Connection::open(data.join("umbra.db")).expect("db");
        let suites: Vec<(i64, i64)> = db
            .prepare("SELECT suite, count(*) FROM key_packages GROUP BY suite ORDER BY suite")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(suites.len(), 2, "{suites:?}");
        assert_eq!((suites[0].0, suites[1].0), (3, 79));
        assert_eq!(suites[0].1, suites[1].1, "as many of each: {suites:?}");
    }

    ok(&p("alice"), &["send", "bob", "hello after Q-day"]);
    ok(&p("bob"), &["sync"]);
    assert_eq!(
        history(&p("bob"), "alice"),
        vec![("alice".to_string(), "hello after Q-day".to_string())]
    );
    assert!(post_quantum(&p("alice"), "bob"));
    assert!(post_quantum(&p("bob"), "alice"));
    let listed = ok(&p("bob"), &["conversations"]);
    assert!(listed.contains("[post-quantum]"), "{listed}");

    ok(&p("alice"), &["group", "create", "trio", "bob", "carol"]);
    ok(
        &p("alice"),
        &["group", "send", "trio", "three of us, post-quantum"],
    );
    ok(&p("carol"), &["sync"]);
    assert!(
        history(&p("carol"), "trio")
            .iter()
            .any(|(_, t)| t == "three of us, post-quantum")
    );
    assert!(post_quantum(&p("alice"), "trio"));
    assert!(post_quantum(&p("carol"), "trio"));

    // The operator hides dave's post-quantum packages so that alice would
    // fall back to classical keys: alice's client sees from dave's signed
    // leaf that his device has post-quantum keys, and refuses.
    assert!(withhold(&data, "dave") > 0);
    let err = fails(&p("alice"), &["send", "dave", "not like this"]);
    assert!(
        err.contains("offered only classical keys") && err.contains("dave"),
        "{err}"
    );
    let listed = ok(&p("alice"), &["conversations"]);
    assert!(!listed.contains("dave"), "{listed}");

    // Erin without post-quantum packages cannot join the post-quantum
    // group: the group's suite is fixed, and alice is told why.
    assert!(withhold(&data, "erin") > 0);
    let err = fails(&p("alice"), &["group", "add", "trio", "erin"]);
    assert!(
        err.contains("erin") && err.contains("without post-quantum keys"),
        "{err}"
    );
    // Dave's next login uploads post-quantum packages again, and then the
    // conversation starts, post-quantum.
    ok(&p("dave"), &["sync"]);
    ok(&p("alice"), &["send", "dave", "now it works"]);
    assert!(post_quantum(&p("alice"), "dave"));
    assert!(server.stop().success());
}
