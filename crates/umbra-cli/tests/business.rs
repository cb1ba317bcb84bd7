//! Business accounts through the real binary: a business registers its card,
//! a customer sees its name before writing, the operator verifies it and the
//! badge shows where its chats appear; a rename drops the badge; and a
//! verification the pinned server key did not sign is refused with a warning
//! and no badge.

mod common;

use std::path::Path;

use common::{ServerProc, ok};

fn operator(data: &Path, args: &[&str]) -> String {
    let out = common::operator(data, &[&["business"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "umbra server business {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The label history gives the business's last message to `profile`.
fn label_in_history(profile: &Path, conversation: &str) -> serde_json::Value {
    let h = json(&ok(
        profile,
        &["--json", "history", conversation, "--offline"],
    ));
    h.as_array()
        .expect("array")
        .iter()
        .rev()
        .find(|e| e["kind"] == "text" && e["outgoing"] == false)
        .map(|e| e["business"].clone())
        .expect("a message from the business")
}

#[test]
fn a_verified_business_shows_its_badge_and_a_forged_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProc::start(&data, "127.0.0.1:0", &dir.path().join("server.log"));
    assert!(server.invite.contains("&sign="), "{}", server.invite);
    let p = |n: &str| dir.path().join(n);
    for u in ["acme", "alice", "shady"] {
        common::register(&p(u), &server.invite, u);
    }

    let out = ok(
        &p("acme"),
        &[
            "business",
            "register",
            "--name",
            "Acme Shop",
            "--field",
            "website=https://acme.example",
        ],
    );
    assert!(out.contains("customers see \"Acme Shop\""), "{out}");
    assert!(out.contains("not verified"), "{out}");
    assert!(operator(&data, &["list"]).contains("Acme Shop"));

    // Before writing, the customer sees whom she writes to.
    let card = json(&ok(&p("alice"), &["--json", "business", "show", "acme"]));
    assert_eq!(card["business"]["name"], "Acme Shop");
    assert_eq!(card["business"]["verified"], false);
    let personal = ok(&p("alice"), &["business", "show", "shady"]);
    assert!(personal.contains("personal account"), "{personal}");
    // The chat's label comes from the statement in the business's leaf: a
    // business registered from its own machine runs its own endpoint.
    let sent = ok(&p("alice"), &["send", "acme", "where is my order?"]);
    assert!(
        sent.contains("end-to-end encrypted with Acme Shop (acme)"),
        "{sent}"
    );
    let convs = json(&ok(&p("alice"), &["--json", "conversations"]));
    assert_eq!(convs[0]["business"]["name"], "Acme Shop");
    assert_eq!(convs[0]["business"]["verified"], false);
    assert_eq!(convs[0]["hosting"][0]["kind"], "self");
    let own = ok(&p("acme"), &["business", "hosting"]);
    assert!(own.contains("runs its own endpoint"), "{own}");
    let history = ok(&p("alice"), &["history", "acme", "--offline"]);
    assert!(
        history.starts_with("-- end-to-end encrypted with Acme Shop (acme) --"),
        "{history}"
    );

    // The operator verifies it; its next message carries the badge.
    let out = operator(&data, &["verify", "acme"]);
    assert!(out.contains("verified `acme` as \"Acme Shop\""), "{out}");
    ok(&p("acme"), &["sync"]);
    ok(&p("acme"), &["send", "alice", "on its way"]);
    let shown = ok(&p("alice"), &["sync"]);
    assert!(
        shown.contains("Acme Shop ✓ (acme) is now verified by this server"),
        "{shown}"
    );
    assert!(shown.contains("Acme Shop ✓ (acme): on its way"), "{shown}");
    assert_eq!(label_in_history(&p("alice"), "acme")["verified"], true);
    let text = ok(&p("alice"), &["conversations"]);
    assert!(
        text.contains("Acme Shop ✓ verified by this server"),
        "{text}"
    );

    // A new name drops the badge until the operator verifies it again.
    ok(&p("acme"), &["business", "register", "--name", "Acme Bank"]);
    assert!(operator(&data, &["list"]).contains("not verified"));
    ok(&p("acme"), &["send", "alice", "we are a bank now"]);
    let shown = ok(&p("alice"), &["sync"]);
    assert!(
        shown.contains("changed its name from \"Acme Shop\" and is no longer verified"),
        "{shown}"
    );
    assert_eq!(label_in_history(&p("alice"), "acme")["verified"], false);

    // Verified again, then taken back: the server stops listing the badge,
    // and the business's next message goes without it.
    operator(&data, &["verify", "acme"]);
    ok(&p("acme"), &["sync"]);
    ok(&p("acme"), &["send", "alice", "verified again"]);
    let shown = ok(&p("alice"), &["sync"]);
    assert!(
        shown.contains("Acme Bank ✓ (acme) is now verified"),
        "{shown}"
    );
    let out = operator(&data, &["unverify", "acme"]);
    assert!(out.contains("runs out within a week"), "{out}");
    ok(&p("acme"), &["sync"]);
    ok(&p("acme"), &["send", "alice", "no badge now"]);
    let shown = ok(&p("alice"), &["sync"]);
    assert!(shown.contains("is no longer verified"), "{shown}");
    assert_eq!(label_in_history(&p("alice"), "acme")["verified"], false);

    // A verification signed by a key other than the one the invite pinned
    // (the operator's key swapped, or a statement from another server): the
    // customer is warned, and no badge shows. The server signs each listing
    // with the key it runs with, so it is restarted (same address) on
    // another key.
    ok(
        &p("shady"),
        &["business", "register", "--name", "Shady Ltd"],
    );
    let listen = server.listen.clone();
    server.stop();
    std::fs::write(data.join("sign.key"), "11".repeat(32)).expect("swap the key");
    let _server = ServerProc::start(&data, &listen, &dir.path().join("server2.log"));
    operator(&data, &["verify", "shady"]);
    ok(&p("shady"), &["sync"]);
    let err = common::fails(&p("alice"), &["business", "show", "shady"]);
    assert!(
        err.contains(
            "`shady` is not what it claims: its verified badge was not given by this server"
        ),
        "{err}"
    );
    common::said_once(&err);
    // Shady's own app will not send a badge its server's key did not sign.
    ok(&p("shady"), &["send", "alice", "trust me"]);
    let shown = ok(&p("alice"), &["sync"]);
    assert!(
        shown.contains("Shady Ltd (shady) is a business account, not verified by this server"),
        "{shown}"
    );
    assert!(!shown.contains('✓'), "{shown}");
    let convs = json(&ok(&p("alice"), &["--json", "conversations"]));
    let shady = convs
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == "shady")
        .expect("shady");
    assert_eq!(shady["business"]["verified"], false, "{shady}");
}
