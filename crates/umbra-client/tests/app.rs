//! What the business host builds on, against a real server: batched sends
//! whose idempotency keys answer a repeat with the first message and refuse a
//! key reused for another request; the journal, which holds a received
//! message and each status of ours (sent, delivered, read) once, in order,
//! until it is passed on; and a crash between sending and answering, which
//! a repeated request survives without a second message.

mod common;

use umbra_client::app::{Outgoing, To};
use umbra_client::journal::{Entry, Journal};
use umbra_client::{Client, ClientError, Event};

fn statuses(journal: &Journal, message: &str) -> Vec<String> {
    journal
        .peek(0, 1000)
        .expect("peek")
        .into_iter()
        .filter_map(|r| match r.entry {
            Entry::Status {
                message: m, status, ..
            } if m == message => Some(status),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_idempotency_and_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::TestServer::start(dir.path(), |_| {}).await;
    let user = |n: &str| dir.path().join(n);
    let mut acme = Client::register(&user("acme"), &server.invite, "acme", None, None)
        .await
        .expect("acme");
    let mut alice = Client::register(&user("alice"), &server.invite, "alice", None, None)
        .await
        .expect("alice");
    acme.keep_journal(true).expect("journal on");
    let journal = Journal::open(&user("acme"), acme.key()).expect("journal");

    alice
        .send("acme", "is my order ready?")
        .await
        .expect("send");
    acme.sync().await.expect("acme receives");
    let due = journal.due(u64::MAX, 10).expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    let Entry::Received {
        conversation,
        from,
        text,
        ..
    } = &due[0].entry
    else {
        panic!("not a received message: {due:?}");
    };
    assert_eq!(
        (from.as_str(), text.as_str()),
        ("alice", "is my order ready?")
    );
    let group = hex::decode(conversation).expect("hex");
    // Received again (the server delivering twice after a crash) adds nothing.
    acme.sync().await.expect("again");
    assert_eq!(journal.len().expect("len"), 1);
    journal.done(&[due[0].seq]).expect("done");

    let batch = [
        Outgoing {
            to: To::User("alice".into()),
            text: "yes, ready".into(),
            idempotency_key: Some("k1".into()),
        },
        Outgoing {
            to: To::Conversation(group.clone()),
            text: "pick it up today".into(),
            idempotency_key: Some("k2".into()),
        },
        Outgoing {
            to: To::Conversation(vec![9; 16]),
            text: "nowhere".into(),
            idempotency_key: None,
        },
        Outgoing {
            to: To::User("bob".into()),
            text: "no conversation yet".into(),
            idempotency_key: None,
        },
    ];
    let out = acme.post_batch(&batch).expect("batch");
    let first = out[0].as_ref().expect("first").clone();
    assert!(!first.replayed);
    assert_eq!(first.conversation, *conversation);
    assert!(out[1].is_ok());
    assert!(matches!(out[2], Err(ClientError::UnknownConversation(_))));
    assert!(matches!(out[3], Err(ClientError::UnknownConversation(_))));
    // The same request again (a client that timed out and retried): the
    // first message, not a second one.
    let again = acme.post_batch(&batch[..1]).expect("again");
    let again = again[0].as_ref().expect("replay");
    assert!(again.replayed);
    assert_eq!(again.id, first.id);
    // The same key for another request is refused.
    let other = acme
        .post_batch(&[Outgoing {
            to: To::User("alice".into()),
            text: "something else".into(),
            idempotency_key: Some("k1".into()),
        }])
        .expect("batch");
    assert!(matches!(other[0], Err(ClientError::IdempotencyConflict(_))));

    // Not sent yet: no status. The flush makes both `sent`.
    assert!(statuses(&journal, &first.id).is_empty());
    acme.flush_outbox().await.expect("flush");
    assert_eq!(statuses(&journal, &first.id), ["sent"]);
    let events = alice.sync().await.expect("alice reads");
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["yes, ready", "pick it up today"], "one copy each");
    // Her delivered receipts, then her read ones.
    acme.sync().await.expect("receipts");
    assert_eq!(statuses(&journal, &first.id), ["sent", "delivered"]);
    alice.mark_read(None).expect("read");
    alice.send_receipts().await.expect("receipts out");
    acme.sync().await.expect("receipts");
    assert_eq!(statuses(&journal, &first.id), ["sent", "delivered", "read"]);
    // A receipt that comes again moves nothing and adds nothing.
    acme.sync().await.expect("nothing new");
    assert_eq!(statuses(&journal, &first.id), ["sent", "delivered", "read"]);

    // A conversation's entries come in order; one waiting for a retry holds
    // back those behind it.
    let due = journal.due(u64::MAX, 100).expect("due");
    assert!(due.len() > 1, "{due:?}");
    assert!(due.windows(2).all(|w| w[0].seq < w[1].seq));
    journal.retry(due[0].seq, 5_000).expect("retry");
    assert!(journal.due(4_999, 100).expect("due").is_empty());
    let later = journal.due(5_000, 100).expect("due");
    assert_eq!(later[0].seq, due[0].seq);
    assert_eq!(later[0].id, due[0].id, "the same event id on every attempt");
    assert_eq!(later[0].attempts, 1);

    // The application's view: the conversation and its messages, by id.
    let convs = acme.app_conversations(10, None).expect("conversations");
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].peer.as_deref(), Some("alice"));
    let msgs = acme.app_messages(&group, 10, None).expect("messages");
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].text, "pick it up today");
    let one = acme
        .app_message(&hex::decode(&first.id).expect("hex"))
        .expect("message")
        .expect("found");
    assert_eq!(
        one.status.expect("status").status,
        umbra_client::receipts::Status::Read
    );

    server.stop().await;
}
