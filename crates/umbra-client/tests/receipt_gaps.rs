//! Receipts in a group are sealed to the author alone, so the other members
//! never see those MLS generations of the reader's sender ratchet, and
//! openmls follows a ratchet at most 1,000 generations ahead. Bob reads
//! 1,100 of Alice's group messages one sync at a time (one receipt each),
//! then writes to the group: Carol, who got none of his receipts, still
//! reads him, because every 500 receipts he sends an empty message to all.

mod common;

use umbra_client::receipts::Status;
use umbra_client::{Client, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_to_one_member_never_cut_the_others_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Everyone here writes to everyone: no introduction limit in the way.
    let server =
        common::TestServer::start(dir.path(), |c| c.introductions_per_hour = 100_000).await;
    let invite = server.invite.clone();
    let user = |n: &str| dir.path().join(n);
    let mut alice = Client::register(&user("alice"), &invite, "alice", None, None)
        .await
        .expect("alice");
    let mut bob = Client::register(&user("bob"), &invite, "bob", None, None)
        .await
        .expect("bob");
    let mut carol = Client::register(&user("carol"), &invite, "carol", None, None)
        .await
        .expect("carol");
    alice
        .group_create("team", &["bob", "carol"])
        .await
        .expect("group");
    bob.sync().await.expect("bob joins");
    carol.sync().await.expect("carol joins");
    bob.shows_messages(true);

    const READ: usize = 1_100;
    for i in 0..READ {
        alice
            .group_send("team", &format!("m{i}"))
            .await
            .expect("alice sends");
        bob.sync().await.expect("bob reads");
    }
    bob.group_send("team", "bob here").await.expect("bob sends");
    let events = carol.sync().await.expect("carol reads");
    let dropped: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Warning { .. }))
        .collect();
    assert!(dropped.is_empty(), "carol dropped messages: {dropped:?}");
    let from_bob: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { sender, text, .. } if sender == "bob" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(from_bob, ["bob here"]);
    let from_alice = events
        .iter()
        .filter(|e| matches!(e, Event::Message { sender, .. } if sender == "alice"))
        .count();
    assert_eq!(from_alice, READ);
    // Alice got every read receipt.
    let not_read_by_bob = |alice: &Client| {
        let history = alice.history(Some("team"), READ + 10).expect("history");
        history
            .iter()
            .filter(|h| h.outgoing && h.kind == "text")
            .filter(|h| {
                h.status.as_ref().is_none_or(|s| {
                    s.recipients
                        .iter()
                        .any(|r| r.username == "bob" && r.status != Status::Read)
                })
            })
            .count()
    };
    let unread = not_read_by_bob(&alice);
    alice.sync().await.expect("alice syncs");
    let still = not_read_by_bob(&alice);
    assert!(unread > 0, "receipts showed before alice received them");
    assert_eq!(
        still, 0,
        "messages bob read that alice does not see as read"
    );
    server.stop().await;
}
