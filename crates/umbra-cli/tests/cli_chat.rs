//! End to end through the real binary, as the README's quick start does it:
//! a server, users in separate profiles, 1:1 and group conversations,
//! membership changes, offline delivery, safety numbers, clear errors.

mod common;

use common::{ServerProc, fails, history, ok};

#[test]
fn two_users_chat_and_a_group_lives_its_life() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("server.log"),
    );
    let p = |n: &str| dir.path().join(n);

    for user in ["alice", "bob", "carol", "dave"] {
        let out = common::register(&p(user), &server.invite, user);
        assert!(out.contains(&format!("registered `{user}`")), "{out}");
    }
    // A second account in one profile is refused with a way out.
    let err = fails(
        &p("alice"),
        &[
            "register",
            "--no-passphrase",
            "--invite",
            &server.invite,
            "alice2",
        ],
    );
    assert!(err.contains("already holds the account `alice`"), "{err}");

    // 1:1, bob offline when alice writes.
    ok(&p("alice"), &["send", "bob", "hello bob"]);
    ok(&p("alice"), &["send", "bob", "are you there?"]);
    let synced = ok(&p("bob"), &["sync"]);
    assert!(synced.contains("alice: hello bob"), "{synced}");
    ok(&p("bob"), &["send", "alice", "yes, hi alice"]);
    assert_eq!(
        history(&p("alice"), "bob"),
        vec![
            ("alice".into(), "hello bob".into()),
            ("alice".into(), "are you there?".into()),
            ("bob".into(), "yes, hi alice".into())
        ]
    );
    // Syncing again shows nothing twice.
    assert_eq!(history(&p("bob"), "alice").len(), 3);

    // Group: create, converge, add, remove, leave.
    ok(&p("alice"), &["group", "create", "trip", "bob", "carol"]);
    ok(&p("alice"), &["group", "send", "trip", "train at 9"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("carol"), &["sync"]);
    ok(&p("carol"), &["group", "send", "trip", "carol here"]);
    ok(&p("alice"), &["group", "add", "trip", "dave"]);
    ok(&p("dave"), &["sync"]);
    ok(&p("dave"), &["group", "send", "trip", "dave joined"]);
    for u in ["alice", "bob", "carol"] {
        let h = history(&p(u), "trip");
        assert!(
            h.contains(&("dave".into(), "dave joined".into())),
            "{u}: {h:?}"
        );
    }
    // Dave sees only what was said after he joined.
    let dave = history(&p("dave"), "trip");
    assert!(!dave.iter().any(|(_, b)| b == "train at 9"), "{dave:?}");

    // Everyone converged on one epoch.
    let epoch = |u: &str| -> u64 {
        let out = ok(&p(u), &["--json", "conversations"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .find(|c| c["name"] == "trip")
            .and_then(|c| c["epoch"].as_u64())
            .expect("trip epoch")
    };
    let e = epoch("alice");
    for u in ["bob", "carol", "dave"] {
        assert_eq!(epoch(u), e, "{u} is on another epoch");
    }

    // Remove bob: he is told, cannot read on, and what he sends is rejected.
    ok(&p("alice"), &["group", "remove", "trip", "bob"]);
    ok(&p("alice"), &["group", "send", "trip", "bob is gone"]);
    let bob_sync = ok(&p("bob"), &["sync"]);
    assert!(bob_sync.contains("removed you"), "{bob_sync}");
    assert!(
        !history(&p("bob"), "trip")
            .iter()
            .any(|(_, b)| b == "bob is gone")
    );
    let err = fails(&p("bob"), &["group", "send", "trip", "let me back"]);
    assert!(err.contains("no conversation named `trip`"), "{err}");
    for u in ["carol", "dave"] {
        let h = history(&p(u), "trip");
        assert!(
            h.contains(&("alice".into(), "bob is gone".into())),
            "{u}: {h:?}"
        );
    }

    // Carol leaves; the others drop her; she hears no more.
    ok(&p("carol"), &["group", "leave", "trip"]);
    ok(&p("alice"), &["sync"]);
    ok(&p("dave"), &["sync"]);
    ok(&p("alice"), &["sync"]);
    ok(&p("dave"), &["group", "send", "trip", "just us now"]);
    let members = ok(&p("dave"), &["conversations"]);
    assert!(
        members.contains("trip") && !members.contains("carol,"),
        "{members}"
    );
    ok(&p("carol"), &["sync"]);
    assert!(
        !history(&p("carol"), "trip")
            .iter()
            .any(|(_, b)| b == "just us now")
    );
    assert!(history(&p("alice"), "trip").contains(&("dave".into(), "just us now".into())));

    // Safety numbers agree on both sides.
    let a = ok(&p("alice"), &["--json", "verify", "bob"]);
    let b = ok(&p("bob"), &["--json", "verify", "alice", "--mark-verified"]);
    let num = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s.trim()).expect("json")["safety_number"].clone()
    };
    assert_eq!(num(&a), num(&b));
    let contacts = ok(&p("bob"), &["contacts"]);
    assert!(
        contacts.contains("alice") && contacts.contains("verified"),
        "{contacts}"
    );

    assert!(server.stop().success(), "server did not shut down cleanly");
}

#[test]
fn errors_name_the_problem() {
    use common::proxy_proc::{ProxyProc, free_port};
    use common::{fails_with, said_once};

    let dir = tempfile::tempdir().expect("tempdir");
    // A small envelope limit, so that an oversize message fits on a command
    // line.
    let server = ServerProc::start_with(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("server.log"),
        &["--max-envelope-bytes", "16384"],
    );
    let p = |n: &str| dir.path().join(n);

    // Usage errors: clap's, a daemon given a client flag, a link that is
    // not one.
    let err = fails_with(&p("nobody"), &["send", "bob"], 2);
    assert!(err.contains("<TEXT>"), "{err}");
    let err = fails_with(&p("nobody"), &["serve"], 2);
    assert!(err.contains("--profile is for client commands"), "{err}");
    let err = fails_with(
        &p("bad"),
        &[
            "register",
            "--no-passphrase",
            "--invite",
            "https://example.org",
            "zed",
        ],
        2,
    );
    assert!(err.contains("not an Umbra invite link"), "{err}");
    said_once(&err);
    let err = fails_with(
        &p("bad"),
        &[
            "register",
            "--no-passphrase",
            "--invite",
            &server.invite,
            "A!",
        ],
        2,
    );
    assert!(err.contains("not a valid username"), "{err}");

    // No profile yet.
    let err = fails_with(&p("nobody"), &["send", "bob", "hi"], 3);
    assert!(err.contains("umbra register"), "{err}");
    said_once(&err);

    common::register(&p("alice"), &server.invite, "alice");
    common::register(&p("bob"), &server.invite, "bob");
    let err = fails_with(&p("alice"), &["send", "nosuchuser", "hi"], 5);
    assert!(err.contains("there is no user `nosuchuser`"), "{err}");
    said_once(&err);
    let err = fails_with(
        &p("other"),
        &[
            "register",
            "--no-passphrase",
            "--invite",
            &server.invite,
            "alice",
        ],
        5,
    );
    assert!(err.to_lowercase().contains("taken"), "{err}");
    said_once(&err);

    // A message over the server's limit is refused before anything is
    // written: it is not in the history, and the next message goes through.
    ok(&p("alice"), &["send", "bob", "first"]);
    let long = "x".repeat(40_000);
    let err = fails_with(&p("alice"), &["send", "bob", &long], 5);
    assert!(err.contains("too large for this server"), "{err}");
    assert!(err.contains("at most 16384"), "{err}");
    said_once(&err);
    ok(&p("alice"), &["send", "bob", "second"]);
    let bodies: Vec<String> = history(&p("bob"), "alice")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    assert_eq!(
        history(&p("alice"), "bob")
            .into_iter()
            .map(|(_, b)| b)
            .collect::<Vec<_>>(),
        ["first", "second"]
    );

    // A wrong pinned key: the client refuses and says why.
    let key = server.invite.split("key=").nth(1).expect("key").to_string();
    let mut wrong = key.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let bad_invite = server
        .invite
        .replace(&key, &String::from_utf8(wrong).expect("utf8"));
    let err = fails_with(
        &p("mallory"),
        &[
            "register",
            "--no-passphrase",
            "--invite",
            &bad_invite,
            "mallory",
        ],
        5,
    );
    assert!(err.contains("does not match"), "{err}");
    said_once(&err);

    // A proxy that turns the client away: its link has another secret.
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let proxy = ProxyProc::start(
        &dir.path().join("proxy"),
        &server.listen,
        &listen,
        false,
        "127.0.0.1",
    );
    let secret = proxy.link.split("secret=").nth(1).expect("secret");
    let secret = secret.split('&').next().expect("secret");
    let mut other = secret.to_string().into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let stale = proxy
        .link
        .replace(secret, &String::from_utf8(other).expect("utf8"));
    let err = fails_with(&p("alice"), &["--proxy", &stale, "sync"], 5);
    assert!(
        err.contains("the proxy turned this connection away"),
        "{err}"
    );
    said_once(&err);
    drop(proxy);

    // Nothing listening.
    server.kill();
    let err = fails_with(&p("alice"), &["sync"], 4);
    assert!(err.contains("cannot reach the server"), "{err}");
    said_once(&err);
    // What was being sent is kept, said once, and the code is the same.
    let err = fails_with(&p("alice"), &["send", "bob", "later"], 4);
    said_once(&err);
}
