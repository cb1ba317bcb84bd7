//! Linked devices through the real binary: alice links two more devices
//! to her account (the code and the fingerprint passed between processes as
//! a user would), talks with bob and carol in a 1:1 chat and a group from
//! all three, one device offline for a while, one unlinked midway (it reads
//! nothing sent after); a device the server adds to bob's account on its
//! own is refused with a warning.

mod common;

use std::path::Path;

use common::{ServerProc, fails, history, history_offline, link_device, ok};

fn texts(profile: &Path, conversation: &str) -> Vec<String> {
    history(profile, conversation)
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

#[test]
fn three_devices_of_one_user_in_chats_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("server.log"));
    let p = |n: &str| dir.path().join(n);
    for user in ["alice", "bob", "carol"] {
        common::register(&p(user), &server.invite, user);
    }
    ok(&p("alice"), &["send", "bob", "before the laptop"]);
    ok(&p("alice"), &["group", "create", "trio", "bob", "carol"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("carol"), &["sync"]);
    // A conversation alice has not received yet is the new device's too.
    ok(&p("carol"), &["send", "alice", "carol starts a chat"]);

    // A second device: it joins every conversation alice is in.
    let laptop = link_device(&p("alice"), &p("laptop"));
    let devices = ok(&p("alice"), &["devices"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    assert!(devices.contains(&laptop), "{devices}");
    ok(&p("laptop"), &["sync"]);
    let convs = ok(&p("laptop"), &["conversations"]);
    let names: Vec<&str> = convs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for c in ["bob", "trio", "carol"] {
        assert!(names.contains(&c), "{convs}");
    }
    // Only the account key's device can link.
    let err = fails(&p("laptop"), &["devices", "link", "--timeout", "1"]);
    assert!(
        err.contains("only the device that created the account"),
        "{err}"
    );

    // What bob sends reaches both devices; what the laptop sends reaches
    // bob, and alice's first device shows it as hers.
    ok(&p("bob"), &["sync"]);
    ok(&p("bob"), &["send", "alice", "hi both of you"]);
    ok(&p("alice"), &["sync"]);
    ok(&p("laptop"), &["sync"]);
    assert!(texts(&p("alice"), "bob").contains(&"hi both of you".to_string()));
    assert_eq!(
        texts(&p("laptop"), "bob"),
        vec!["hi both of you".to_string()]
    );
    ok(&p("laptop"), &["send", "bob", "from the laptop"]);
    ok(&p("bob"), &["sync"]);
    assert!(texts(&p("bob"), "alice").contains(&"from the laptop".to_string()));
    ok(&p("alice"), &["sync"]);
    assert!(
        history(&p("alice"), "bob").contains(&("alice".into(), "from the laptop".into())),
        "alice's first device shows what her laptop sent"
    );
    // The group too.
    ok(&p("carol"), &["sync"]);
    ok(&p("carol"), &["group", "send", "trio", "carol to the trio"]);
    ok(&p("laptop"), &["sync"]);
    assert!(texts(&p("laptop"), "trio").contains(&"carol to the trio".to_string()));

    // A third device, which then stays offline while the others talk.
    let phone = link_device(&p("alice"), &p("phone"));
    ok(&p("phone"), &["sync"]);
    ok(&p("bob"), &["sync"]);
    ok(&p("carol"), &["sync"]);
    ok(&p("laptop"), &["sync"]);
    for i in 0..3 {
        ok(
            &p("bob"),
            &["send", "alice", &format!("while the phone sleeps {i}")],
        );
        ok(
            &p("carol"),
            &["group", "send", "trio", &format!("trio while asleep {i}")],
        );
    }

    // The laptop is unlinked: it reads nothing sent after.
    let id = &laptop[..9];
    let out = ok(&p("alice"), &["devices", "unlink", id]);
    assert!(out.contains("unlinked"), "{out}");
    let devices = ok(&p("alice"), &["devices"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    assert!(!devices.contains(&laptop), "{devices}");
    ok(&p("bob"), &["sync"]);
    ok(&p("bob"), &["send", "alice", "after the laptop left"]);
    // Carol has not heard of the unlinking yet: her copy for the laptop
    // finds no mailbox, which is not her message failing.
    let out = common::umbra(
        &p("carol"),
        &["group", "send", "trio", "trio after the laptop left"],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !said.contains("refused"), "{said}");
    // The laptop can no longer even log in, and says why; what it kept is
    // all it has.
    let err = common::fails_with(&p("laptop"), &["sync"], 5);
    assert!(err.contains("no longer one of `alice`'s devices"), "{err}");
    let kept = history_offline(&p("laptop"), "bob");
    assert!(
        !kept
            .iter()
            .any(|(_, t)| t.contains("after the laptop left"))
    );
    let kept = history_offline(&p("laptop"), "trio");
    assert!(
        !kept
            .iter()
            .any(|(_, t)| t.contains("after the laptop left"))
    );

    // The phone comes back: everything, once.
    ok(&p("phone"), &["sync"]);
    let bob_texts = texts(&p("phone"), "bob");
    for i in 0..3 {
        let t = format!("while the phone sleeps {i}");
        assert_eq!(
            bob_texts.iter().filter(|x| **x == t).count(),
            1,
            "{bob_texts:?}"
        );
    }
    assert!(bob_texts.contains(&"after the laptop left".to_string()));
    let trio = texts(&p("phone"), "trio");
    assert!(
        trio.contains(&"trio after the laptop left".to_string()),
        "{trio:?}"
    );
    ok(&p("alice"), &["sync"]);
    assert!(texts(&p("alice"), "bob").contains(&"after the laptop left".to_string()));
    assert!(phone.len() > 4);

    // Leaving a group from one device takes the account out: every device.
    ok(&p("phone"), &["group", "leave", "trio"]);
    for who in ["bob", "carol", "bob", "carol", "alice"] {
        ok(&p(who), &["sync"]);
    }
    let trio = common::conversation(&p("alice"), "trio");
    assert_eq!(trio["active"], false, "{trio}");
    let trio = common::conversation(&p("bob"), "trio");
    assert!(
        !trio["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m == "alice"),
        "{trio}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_device_the_account_key_did_not_sign_is_refused_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("server.log"));
    let p = |n: &str| dir.path().join(n);
    for user in ["bob", "carol"] {
        common::register(&p(user), &server.invite, user);
    }
    // The operator slips a device of its own into bob's account, with a
    // key package, beside the list bob's account key signed.
    let db = rusqlite::Connection::open(data.join("umbra.db")).expect("db");
    db.execute(
        "INSERT INTO devices (device_id, username, identity_key, sealing_key, mailbox_id, delivery_token_hash)
         VALUES (?1, 'bob', ?2, ?3, ?4, ?5)",
        rusqlite::params![[0xEEu8; 16], [0xE1u8; 32], [0xE2u8; 32], [0xE3u8; 16], [0xE4u8; 32]],
    )
    .expect("forged device");
    db.execute(
        "INSERT INTO key_packages (device_id, data, last_resort) VALUES (?1, x'00', 1)",
        [[0xEEu8; 16]],
    )
    .expect("forged key package");
    drop(db);
    let out = common::umbra(&p("carol"), &["send", "bob", "only to bob's own device"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("did not sign") && err.contains("ignored"),
        "no warning about the forged device: {err}"
    );
    // Nothing went to the forged mailbox.
    let db = rusqlite::Connection::open(data.join("umbra.db")).expect("db");
    let forged: i64 = db
        .query_row(
            "SELECT count(*) FROM envelopes WHERE mailbox_id = ?1",
            [[0xE3u8; 16]],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(forged, 0);
    ok(&p("bob"), &["sync"]);
    assert_eq!(
        texts(&p("bob"), "carol"),
        vec!["only to bob's own device".to_string()]
    );
    assert!(server.stop().success());
}
