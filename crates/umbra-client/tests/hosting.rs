//! Who can read a business chat, against a real server: the label comes from
//! the hosting statement in the business's MLS leaf; a change of host is a
//! commit that shows a line and stops the customer's next message until it
//! has been seen; a new customer gets the current statement from the key
//! packages the server hands out; a statement that does not check, or none
//! at all from a business, is flagged and never shown as end to end.

mod common;

use ed25519_dalek::{Signer, SigningKey};
use umbra_client::business_account::HostSigner;
use umbra_client::{Client, ClientError, Event};

fn texts(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| match e {
            Event::Info { text, .. } | Event::Warning { text } => format!("{text}\n"),
            Event::Message { text, .. } => format!("message: {text}\n"),
            _ => String::new(),
        })
        .collect()
}

fn host_signer(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |m| key.sign(m).to_bytes().to_vec()
}

/// The kind of label `client` shows for `conversation`.
fn label(client: &Client, conversation: &str) -> Option<umbra_client::hosting::HostingLabel> {
    client
        .conversations()
        .expect("conversations")
        .into_iter()
        .find(|c| c.name == conversation)
        .and_then(|c| c.hosting.into_iter().next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_follows_the_leaf_and_a_change_of_host_is_seen_before_the_next_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::TestServer::start(dir.path(), |_| {}).await;
    let invite = server.invite.clone();
    let user = |n: &str| dir.path().join(n);
    let mut acme = Client::register(&user("acme"), &invite, "acme", None, None)
        .await
        .expect("acme");
    let mut alice = Client::register(&user("alice"), &invite, "alice", None, None)
        .await
        .expect("alice");
    acme.register_business("Acme Shop", &[])
        .await
        .expect("card");
    let own = acme.make_hosting(None).expect("statement");
    acme.set_hosting(own).await.expect("self-hosted");
    assert_eq!(acme.hosting().expect("hosting"), Some(None));

    // Alice writes first: the label comes from the key package she claimed.
    let events = alice.send("acme", "hello").await.expect("send");
    assert!(
        texts(&events).contains("end-to-end encrypted with"),
        "{}",
        texts(&events)
    );
    assert_eq!(label(&alice, "acme").expect("label").kind, "self");
    acme.sync().await.expect("acme reads");
    acme.send("alice", "welcome").await.expect("acme answers");
    let events = alice.sync().await.expect("alice reads");
    assert!(texts(&events).contains("message: welcome"));
    assert_eq!(label(&alice, "acme").expect("label").kind, "self");

    // The business moves to a host: a commit in the chat. Alice's next
    // message does not go out; she is told who can read it now.
    let host = SigningKey::from_bytes(&[42; 32]);
    let sign = host_signer(&host);
    let hosted = acme
        .make_hosting(Some(&HostSigner {
            name: "HostCo",
            key: host.verifying_key().to_bytes(),
            sign: &sign,
        }))
        .expect("hosted statement");
    let done = acme.set_hosting(hosted).await.expect("moved");
    assert_eq!(done.host.as_deref(), Some("HostCo"));
    assert_eq!(done.conversations, 1);
    match alice.send("acme", "my card number is ...").await {
        Err(ClientError::HostingChanged { line, .. }) => {
            assert!(
                line.starts_with("HostCo can now read messages you send"),
                "{line}"
            );
        }
        other => panic!("the send went on: {other:?}"),
    }
    let l = label(&alice, "acme").expect("label");
    assert_eq!(l.kind, "hosted");
    assert_eq!(l.host.as_deref(), Some("HostCo"));
    assert_eq!(
        l.host_key.as_deref(),
        Some(hex::encode(host.verifying_key().to_bytes()).as_str())
    );
    // The line sits in the history before anything she sends next.
    alice.send("acme", "ok, noted").await.expect("send again");
    let history = alice.history(Some("acme"), 10).expect("history");
    let line_at = history
        .iter()
        .position(|h| h.body.starts_with("HostCo can now read"))
        .expect("the line");
    let next = history
        .iter()
        .position(|h| h.body == "ok, noted")
        .expect("the message");
    assert!(line_at < next);
    assert!(history.iter().all(|h| h.body != "my card number is ..."));
    let events = acme.sync().await.expect("acme reads");
    let got = texts(&events);
    assert!(got.contains("message: ok, noted"), "{got}");
    assert!(!got.contains("card number"), "{got}");

    // A new customer gets the hosted statement from the start: the key
    // packages carrying the old one were withdrawn.
    let mut bob = Client::register(&user("bob"), &invite, "bob", None, None)
        .await
        .expect("bob");
    let events = bob.send("acme", "hi").await.expect("bob sends");
    assert!(
        texts(&events).contains("uses HostCo to manage this chat: HostCo can read what you send"),
        "{}",
        texts(&events)
    );

    // Back to its own endpoint: the host no longer reads, and keeps what it
    // had.
    let own = acme.make_hosting(None).expect("statement");
    acme.set_hosting(own).await.expect("back");
    // Alice's app shows what it receives (as `umbra sync` does).
    alice.shows_messages(true);
    let events = alice.sync().await.expect("alice reads");
    assert!(
        texts(&events).contains(
            "HostCo can no longer read messages you send, but keeps what it already received"
        ),
        "{}",
        texts(&events)
    );
    assert_eq!(label(&alice, "acme").expect("label").kind, "self");
    // Shown by sync: her next message goes.
    alice.send("acme", "thanks").await.expect("send");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_missing_statement_is_flagged_never_shown_as_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::TestServer::start(dir.path(), |_| {}).await;
    let invite = server.invite.clone();
    let user = |n: &str| dir.path().join(n);
    let mut alice = Client::register(&user("alice"), &invite, "alice", None, None)
        .await
        .expect("alice");

    // A business whose app sends no statement at all.
    let mut plain = Client::register(&user("plain"), &invite, "plain", None, None)
        .await
        .expect("plain");
    plain
        .register_business("Plain Ltd", &[])
        .await
        .expect("card");
    plain.send("alice", "hello").await.expect("send");
    let events = alice.sync().await.expect("alice reads");
    assert!(
        events.iter().any(|e| matches!(e, Event::Warning { text }
            if text.contains("carries no hosting statement: who can read it is not known"))),
        "{}",
        texts(&events)
    );
    assert_eq!(label(&alice, "plain").expect("label").kind, "unknown");

    // A business whose statement names a host that never signed it (its app
    // altered to claim what it likes).
    let mut shady = Client::register(&user("shady"), &invite, "shady", None, None)
        .await
        .expect("shady");
    shady
        .register_business("Shady Ltd", &[])
        .await
        .expect("card");
    let own = shady.make_hosting(None).expect("statement");
    shady.set_hosting(own).await.expect("self");
    shady.send("alice", "hello").await.expect("send");
    alice.sync().await.expect("alice reads");
    assert_eq!(label(&alice, "shady").expect("label").kind, "self");
    let host = SigningKey::from_bytes(&[7; 32]);
    let impostor = SigningKey::from_bytes(&[8; 32]);
    let sign = host_signer(&impostor);
    let forged = shady
        .make_hosting(Some(&HostSigner {
            name: "TrustedHost",
            key: host.verifying_key().to_bytes(),
            sign: &sign,
        }))
        .expect("made");
    // Its own library refuses it...
    assert!(matches!(
        shady.set_hosting(forged.clone()).await,
        Err(ClientError::Invalid(_))
    ));
    drop(shady);
    // ...so it is written into the profile behind its back.
    let key = umbra_client::profile_key::unlock(&user("shady"), None).expect("key");
    let db = umbra_client::profile::connect(&user("shady"), key.as_ref()).expect("db");
    db.execute(
        "UPDATE settings SET value = ?1 WHERE key = 'hosting'",
        [&forged],
    )
    .expect("forge");
    drop(db);
    let mut shady = Client::open(&user("shady"), None).expect("reopen");
    shady.send("alice", "trust me").await.expect("send");
    let events = alice.sync().await.expect("alice reads");
    assert!(
        events.iter().any(|e| matches!(e, Event::Warning { text }
            if text.contains("hosting statement was refused (its hosting statement names a host that did not sign it)"))),
        "{}",
        texts(&events)
    );
    let l = label(&alice, "shady").expect("label");
    assert_eq!(l.kind, "unknown");
    assert!(l.host.is_none(), "the claimed host is not shown: {l:?}");

    server.stop().await;
}
