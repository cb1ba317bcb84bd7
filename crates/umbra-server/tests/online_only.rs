//! Online-only envelopes (call signalling) over the real protocol: delivered
//! at once to a connected device, to its signalling session when one is open,
//! held briefly for a device that is not connected, never written to the
//! server's files, never acknowledged, and answered the same way whether or
//! not the recipient is online (so a sender cannot probe presence).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Client, config, is_accepted, start};
use umbra_wire::proto::{self, client_frame::Body as Req, server_frame::Body as Resp};

async fn send_live(c: &mut Client, mailbox: &[u8], token: &[u8], sealed: &[u8]) -> Resp {
    c.call(Req::Send(proto::SendEnvelope {
        mailbox_id: mailbox.to_vec(),
        delivery_token: token.to_vec(),
        sealed: sealed.to_vec(),
        online_only: true,
    }))
    .await
}

/// Every byte the server wrote under its data directory.
fn disk_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.extend(std::fs::read(entry).unwrap_or_default());
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_envelopes_reach_the_connected_device_and_never_touch_disk() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut bob = Client::connect(&srv.invite).await;
    let bob_acct = bob.register("bob").await;
    bob.login(&bob_acct).await;

    let marker = b"LIVE-SIGNAL-MARKER-0123456789abcdef".repeat(4);
    let mut anon = Client::connect(&srv.invite).await;
    let r = send_live(&mut anon, &bob_acct.mailbox_id, &bob_acct.token, &marker).await;
    assert!(is_accepted(&r), "{r:?}");
    let d = tokio::time::timeout(Duration::from_secs(5), bob.next_delivery())
        .await
        .unwrap();
    assert!(d.online_only);
    assert_eq!(d.envelope_id, 0);
    assert_eq!(d.sealed, marker);
    assert!(!d.introduction);

    // A stored envelope after it still works, with its own id.
    let r = anon
        .send_envelope(&bob_acct.mailbox_id, &bob_acct.token, b"stored")
        .await;
    assert!(is_accepted(&r));
    let d = bob.next_delivery().await;
    assert!(!d.online_only && d.envelope_id > 0);

    // The server's files (database, WAL, keys) never held the live bytes.
    srv.stop().await;
    let bytes = disk_bytes(dir.path());
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, &marker[..32]),
        "live envelope reached disk"
    );
    assert!(
        contains(&bytes, b"stored"),
        "the check can see stored envelopes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_the_same_whether_or_not_the_recipient_is_online() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let online = c.register("online").await;
    c.login(&online).await;
    let mut c2 = Client::connect(&srv.invite).await;
    let offline = c2.register("offline").await;
    drop(c2);

    let mut prober = Client::connect(&srv.invite).await;
    // Without a token (as a stranger would send) and with one.
    for token in [Vec::new(), online.token.clone()] {
        let a = send_live(&mut prober, &online.mailbox_id, &token, b"x").await;
        let b = send_live(&mut prober, &offline.mailbox_id, &token, b"x").await;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
    // An unknown mailbox is refused like a stored envelope would be.
    let r = send_live(&mut prober, &[9; 16], &[], b"x").await;
    assert!(!is_accepted(&r));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalling_session_takes_live_envelopes_without_replacing_the_main_one() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut main = Client::connect(&srv.invite).await;
    let acct = main.register("ann").await;
    main.login(&acct).await;
    let mut call = Client::connect(&srv.invite).await;
    let sig = call.login_signature(&acct.key);
    let r = call
        .call(Req::Login(proto::Login {
            device_id: acct.device_id.clone(),
            signature: sig,
            signalling: true,
        }))
        .await;
    assert!(matches!(r, Resp::LoggedIn(_)), "{r:?}");

    let mut anon = Client::connect(&srv.invite).await;
    let r = anon
        .send_envelope(&acct.mailbox_id, &acct.token, b"stored-one")
        .await;
    assert!(is_accepted(&r));
    let r = send_live(&mut anon, &acct.mailbox_id, &acct.token, b"answer").await;
    assert!(is_accepted(&r));

    let d = call.next_delivery().await;
    assert!(d.online_only);
    assert_eq!(d.sealed, b"answer");
    let d = main.next_delivery().await;
    assert_eq!(d.sealed, b"stored-one");
    // The main session is still open and got nothing live.
    let r = main.call(Req::Ping(proto::Ping { nonce: 5 })).await;
    assert!(matches!(r, Resp::Pong(_)));
    assert!(main.pushes.is_empty());

    // Once the signalling session ends, live envelopes go to the main one.
    drop(call);
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_live(&mut anon, &acct.mailbox_id, &acct.token, b"ring").await;
    let d = main.next_delivery().await;
    assert!(d.online_only);
    assert_eq!(d.sealed, b"ring");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_connects_within_seconds_still_gets_the_live_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let acct = c.register("cal").await;
    drop(c);
    let mut anon = Client::connect(&srv.invite).await;
    let r = send_live(&mut anon, &acct.mailbox_id, &acct.token, b"offer").await;
    assert!(is_accepted(&r));
    let mut c = Client::connect(&srv.invite).await;
    let (_, backlog) = c.login(&acct).await;
    // Nothing stored; the held live envelope follows the drained backlog.
    assert!(backlog.iter().all(|d| !d.online_only));
    let d = c.next_delivery().await;
    assert!(d.online_only);
    assert_eq!(d.sealed, b"offer");
    srv.stop().await;
}
