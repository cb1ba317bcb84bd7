//! The server over real sockets on 127.0.0.1 with real SQLite in a tempdir,
//! driven with raw protocol frames.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, config, error_code, is_accepted, start};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use umbra_wire::noise::{ClientHandshake, Keypair};
use umbra_wire::proto::{self, ErrorCode, client_frame::Body as Req, server_frame::Body as Resp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_upload_and_claim_key_packages() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let alice = c.register("alice").await;
    // Taken username.
    let mut c2 = Client::connect(&srv.invite).await;
    let r = c2
        .call(Req::Register(proto::Register {
            username: "alice".into(),
            ..Default::default()
        }))
        .await;
    // Missing keys are refused before the name is even looked at.
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    let mut c3 = Client::connect(&srv.invite).await;
    let r = c3
        .call(Req::Register(proto::Register {
            username: "Alice!".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidUsername));

    // Uploads need a login.
    let r = c
        .call(Req::UploadKeyPackages(proto::UploadKeyPackages {
            key_packages: vec![vec![1]],
            last_resort: vec![],
            replace: false,
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotLoggedIn));

    let (li, backlog) = c.login(&alice).await;
    assert_eq!(li.mailbox_id, alice.mailbox_id);
    assert_eq!(li.key_packages_left, 0);
    assert!(backlog.is_empty());

    // No key packages at all yet.
    let mut anon = Client::connect(&srv.invite).await;
    let r = anon
        .call(Req::FetchDevices(proto::FetchDevices {
            username: "alice".into(),
            claim_key_packages: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::NoKeyPackages));

    let r = c
        .call(Req::UploadKeyPackages(proto::UploadKeyPackages {
            key_packages: vec![b"kp1".to_vec(), b"kp2".to_vec()],
            last_resort: b"last".to_vec(),
            replace: false,
            ..Default::default()
        }))
        .await;
    assert!(matches!(
        r,
        Resp::KeyPackagesStored(proto::KeyPackagesStored {
            key_packages_left: 2
        })
    ));

    let mut claims = Vec::new();
    for _ in 0..4 {
        let r = anon
            .call(Req::FetchDevices(proto::FetchDevices {
                username: "alice".into(),
                claim_key_packages: true,
                ..Default::default()
            }))
            .await;
        let Resp::Devices(d) = r else { panic!("{r:?}") };
        assert_eq!(d.username, "alice");
        assert_eq!(d.devices.len(), 1);
        let dev = &d.devices[0];
        assert_eq!(dev.device_id, alice.device_id);
        assert_eq!(dev.mailbox_id, alice.mailbox_id);
        assert_eq!(
            dev.keys.as_ref().unwrap().identity_key,
            alice.key.verifying_key().to_bytes().to_vec()
        );
        claims.push((dev.key_package.clone(), dev.key_package_is_last_resort));
    }
    assert_eq!(
        claims,
        vec![
            (b"kp1".to_vec(), false),
            (b"kp2".to_vec(), false),
            (b"last".to_vec(), true),
            (b"last".to_vec(), true),
        ]
    );
    // Packages of the post-quantum suite are kept and counted apart: a
    // claim preferring them takes them, one naming no suite (an older
    // client) or only classical ones never does, and a suite the server
    // does not know is refused.
    let r = c
        .call(Req::UploadKeyPackages(proto::UploadKeyPackages {
            key_packages: vec![b"pq1".to_vec()],
            last_resort: b"pq-last".to_vec(),
            suite: 0x004F,
            ..Default::default()
        }))
        .await;
    assert!(
        matches!(
            r,
            Resp::KeyPackagesStored(proto::KeyPackagesStored {
                key_packages_left: 1
            })
        ),
        "{r:?}"
    );
    let r = c
        .call(Req::UploadKeyPackages(proto::UploadKeyPackages {
            key_packages: vec![b"odd".to_vec()],
            suite: 0x7777,
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    let mut claim_of = async |suites: Vec<u32>| {
        let r = anon
            .call(Req::FetchDevices(proto::FetchDevices {
                username: "alice".into(),
                claim_key_packages: true,
                suites,
            }))
            .await;
        let Resp::Devices(d) = r else { panic!("{r:?}") };
        (d.devices[0].suite, d.devices[0].key_package.clone())
    };
    assert_eq!(claim_of(vec![]).await, (3, b"last".to_vec()));
    assert_eq!(claim_of(vec![3]).await, (3, b"last".to_vec()));
    assert_eq!(claim_of(vec![0x4F, 3]).await, (0x4F, b"pq1".to_vec()));
    assert_eq!(
        claim_of(vec![0x7777, 0x4F]).await,
        (0x4F, b"pq-last".to_vec())
    );
    let mut again = Client::connect(&srv.invite).await;
    let (li, _) = again.login(&alice).await;
    assert_eq!(li.key_packages_left, 0);
    assert_eq!(
        li.key_package_counts,
        vec![proto::KeyPackageCount {
            suite: 0x4F,
            left: 0
        }]
    );

    // Without claiming: no package.
    let r = anon
        .call(Req::FetchDevices(proto::FetchDevices {
            username: "alice".into(),
            claim_key_packages: false,
            ..Default::default()
        }))
        .await;
    let Resp::Devices(d) = r else { panic!("{r:?}") };
    assert!(d.devices[0].key_package.is_empty());

    let r = anon
        .call(Req::FetchDevices(proto::FetchDevices {
            username: "nobody".into(),
            claim_key_packages: false,
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownUser));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_delivery_then_ack_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let bob = c.register("bob").await;
    drop(c);

    let mut sender = Client::connect(&srv.invite).await;
    for i in 0..3u8 {
        let r = sender
            .send_envelope(&bob.mailbox_id, &bob.token, &[i; 100])
            .await;
        assert!(is_accepted(&r), "{r:?}");
    }
    let r = sender.send_envelope(&[7; 16], &bob.token, b"lost").await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownMailbox));

    let mut c = Client::connect(&srv.invite).await;
    let (_, got) = c.login(&bob).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].sealed, vec![1u8; 100]);
    assert!(got.iter().all(|d| !d.introduction));
    assert!(got.windows(2).all(|w| w[0].envelope_id < w[1].envelope_id));
    let ids: Vec<u64> = got.iter().map(|d| d.envelope_id).collect();
    let r = c
        .call(Req::Ack(proto::Ack {
            envelope_ids: ids[..2].to_vec(),
        }))
        .await;
    assert!(
        matches!(r, Resp::Acked(proto::Acked { deleted: 2 })),
        "{r:?}"
    );
    drop(c);

    let mut c = Client::connect(&srv.invite).await;
    let (_, got) = c.login(&bob).await;
    assert_eq!(
        got.iter().map(|d| d.envelope_id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    let r = c
        .call(Req::Ack(proto::Ack {
            envelope_ids: vec![ids[2]],
        }))
        .await;
    assert!(matches!(r, Resp::Acked(proto::Acked { deleted: 1 })));
    drop(c);
    let mut c = Client::connect(&srv.invite).await;
    let (_, got) = c.login(&bob).await;
    assert!(got.is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_only_touches_own_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let carol = c.register("carol").await;
    let dave = c.register("dave").await;
    let mut sender = Client::connect(&srv.invite).await;
    assert!(is_accepted(
        &sender
            .send_envelope(&carol.mailbox_id, &carol.token, b"x")
            .await
    ));
    let mut cc = Client::connect(&srv.invite).await;
    let (_, got) = cc.login(&carol).await;
    let id = got[0].envelope_id;
    let mut dc = Client::connect(&srv.invite).await;
    dc.login(&dave).await;
    let r = dc
        .call(Req::Ack(proto::Ack {
            envelope_ids: vec![id],
        }))
        .await;
    assert!(matches!(r, Resp::Acked(proto::Acked { deleted: 0 })));
    drop(cc);
    let mut cc = Client::connect(&srv.invite).await;
    let (_, got) = cc.login(&carol).await;
    assert_eq!(got.len(), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_device_gets_live_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut rc = Client::connect(&srv.invite).await;
    let erin = rc.register("erin").await;
    let (_, backlog) = rc.login(&erin).await;
    assert!(backlog.is_empty());
    let mut sender = Client::connect(&srv.invite).await;
    for i in 0..20u8 {
        assert!(is_accepted(
            &sender
                .send_envelope(&erin.mailbox_id, &erin.token, &[i])
                .await
        ));
    }
    let mut last = 0;
    for i in 0..20u8 {
        let d = tokio::time::timeout(common::TIMEOUT, rc.next_delivery())
            .await
            .unwrap();
        assert_eq!(d.sealed, vec![i]);
        assert!(d.envelope_id > last);
        last = d.envelope_id;
    }
    // Ping still answered on the logged-in session.
    let r = rc.call(Req::Ping(proto::Ping { nonce: 42 })).await;
    assert!(matches!(r, Resp::Pong(proto::Pong { nonce: 42 })));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pushes_to_a_slow_reader_are_neither_lost_nor_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut rc = Client::connect(&srv.invite).await;
    let fay = rc.register("fay").await;
    rc.login(&fay).await;
    let n = 1500u32;
    let mut sender = Client::connect(&srv.invite).await;
    // Pipeline every send, then read the replies.
    for i in 0..n {
        sender
            .send(Req::Send(proto::SendEnvelope {
                mailbox_id: fay.mailbox_id.clone(),
                delivery_token: fay.token.clone(),
                sealed: i.to_be_bytes().repeat(64),
                online_only: false,
            }))
            .await;
    }
    for _ in 0..n {
        let f = sender.recv().await.unwrap();
        assert!(is_accepted(&f.body.unwrap()));
    }
    // Only now start reading as the receiver.
    let mut seen = Vec::new();
    while seen.len() < n as usize {
        let d = rc.next_delivery().await;
        seen.push(u32::from_be_bytes(d.sealed[..4].try_into().unwrap()));
    }
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    let r = rc.call(Req::Ping(proto::Ping { nonce: 1 })).await;
    assert!(matches!(r, Resp::Pong(_)));
    assert!(rc.pushes.is_empty(), "no duplicates after the last one");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_signature_checks() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let gus = c.register("gus").await;
    // Signed by another key.
    let other = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let sig = c.login_signature(&other);
    let r = c
        .call(Req::Login(proto::Login {
            device_id: gus.device_id.clone(),
            signature: sig,
            signalling: false,
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::BadSignature));
    // Replay of a valid signature made for another session.
    let replay = c.login_signature(&gus.key);
    let mut c2 = Client::connect(&srv.invite).await;
    let r = c2
        .call(Req::Login(proto::Login {
            device_id: gus.device_id.clone(),
            signature: replay,
            signalling: false,
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::BadSignature));
    // Unknown device.
    let r = c2
        .call(Req::Login(proto::Login {
            device_id: vec![0; 16],
            signature: vec![0; 64],
            signalling: false,
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownDevice));
    // The right signature on the right session works.
    c2.login(&gus).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_envelope_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_envelope_bytes = 1000;
    cfg.max_frame_bytes = 4096;
    let srv = start(cfg).await;
    let mut c = Client::connect(&srv.invite).await;
    let hal = c.register("hal").await;
    let r = c
        .send_envelope(&hal.mailbox_id, &hal.token, &[0; 1001])
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::EnvelopeTooLarge));
    let r = c
        .send_envelope(&hal.mailbox_id, &hal.token, &[0; 1000])
        .await;
    assert!(is_accepted(&r));
    srv.stop().await;
}

/// Handshake by hand so the test can write arbitrary bytes afterwards.
async fn raw_session(
    invite: &umbra_wire::invite::Invite,
) -> (TcpStream, umbra_wire::noise::Session) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(invite.address()).await.unwrap();
    let me = Keypair::generate().unwrap();
    let (hs, msg1) = ClientHandshake::start(&me, &invite.server_key).unwrap();
    s.write_all(&msg1).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut msg2 = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg2).await.unwrap();
    let (session, _) = hs.finish(&msg2).unwrap();
    (s, session)
}

/// Reads until the server closes; returns the frames it sent.
async fn read_until_closed(
    s: &mut TcpStream,
    session: &mut umbra_wire::noise::Session,
) -> Vec<proto::ServerFrame> {
    use tokio::io::AsyncReadExt;
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(common::TIMEOUT, s.read(&mut buf))
            .await
            .expect("server closes in time")
            .unwrap_or(0);
        if n == 0 {
            return frames;
        }
        session.opener.feed(&buf[..n]).unwrap();
        while let Some(f) = session.opener.next_frame::<proto::ServerFrame>().unwrap() {
            frames.push(f);
        }
    }
}

fn is_protocol_error(frames: &[proto::ServerFrame]) -> bool {
    frames
        .iter()
        .any(|f| matches!(&f.body, Some(Resp::Error(e)) if e.code == ErrorCode::Protocol as i32))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_envelope_bytes = 1000;
    cfg.max_frame_bytes = 4096;
    let srv = start(cfg).await;
    let mut good = Client::connect(&srv.invite).await;
    let ivy = good.register("ivy").await;
    good.login(&ivy).await;

    // Valid encryption, garbage protobuf.
    let (mut s, mut session) = raw_session(&srv.invite).await;
    let mut wire = Vec::new();
    let mut plain = 5u32.to_be_bytes().to_vec();
    plain.extend_from_slice(&[0xff; 5]);
    session.sealer.seal_bytes(&plain, &mut wire).unwrap();
    s.write_all(&wire).await.unwrap();
    assert!(is_protocol_error(
        &read_until_closed(&mut s, &mut session).await
    ));

    // A length prefix above the limit.
    let (mut s, mut session) = raw_session(&srv.invite).await;
    let mut wire = Vec::new();
    session
        .sealer
        .seal_bytes(&(10u32 << 20).to_be_bytes(), &mut wire)
        .unwrap();
    s.write_all(&wire).await.unwrap();
    assert!(is_protocol_error(
        &read_until_closed(&mut s, &mut session).await
    ));

    // Bytes that are not Noise at all. Their first two unmask to some
    // length (prefixes are masked); once that many have come, they fail to
    // authenticate and the connection closes.
    let (mut s, mut session) = raw_session(&srv.invite).await;
    let garbage: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let _ = s.write_all(&garbage).await;
    let frames = read_until_closed(&mut s, &mut session).await;
    assert!(frames.is_empty() || is_protocol_error(&frames));

    // A frame without a body.
    let (mut s, mut session) = raw_session(&srv.invite).await;
    let mut wire = Vec::new();
    session
        .sealer
        .seal_frame(
            &proto::ClientFrame {
                request_id: 1,
                body: None,
            },
            &mut wire,
        )
        .unwrap();
    s.write_all(&wire).await.unwrap();
    assert!(is_protocol_error(
        &read_until_closed(&mut s, &mut session).await
    ));

    // The other connection still works, and still gets pushes.
    let r = good.call(Req::Ping(proto::Ping { nonce: 5 })).await;
    assert!(matches!(r, Resp::Pong(proto::Pong { nonce: 5 })));
    let mut sender = Client::connect(&srv.invite).await;
    assert!(is_accepted(
        &sender
            .send_envelope(&ivy.mailbox_id, &ivy.token, b"hi")
            .await
    ));
    assert_eq!(good.next_delivery().await.sealed, b"hi".to_vec());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let stream = TcpStream::connect(srv.invite.address()).await.unwrap();
    let me = Keypair::generate().unwrap();
    let wrong = Keypair::generate().unwrap();
    let r = umbra_net::connect(stream, &me, &wrong.public, common::TIMEOUT).await;
    assert!(matches!(
        r,
        Err(umbra_net::NetError::Wire(
            umbra_wire::WireError::ServerKeyMismatch
        ))
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introduction_budget_limits_tokenless_sends() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.introductions_per_hour = 3;
    let srv = start(cfg).await;
    let mut c = Client::connect(&srv.invite).await;
    let jan = c.register("jan").await;
    let mut sender = Client::connect(&srv.invite).await;
    for _ in 0..3 {
        assert!(is_accepted(
            &sender.send_envelope(&jan.mailbox_id, b"", b"hello").await
        ));
    }
    let r = sender.send_envelope(&jan.mailbox_id, b"", b"hello").await;
    assert_eq!(error_code(&r), Some(ErrorCode::RateLimited));
    let r = sender
        .send_envelope(&jan.mailbox_id, b"wrong token", b"hello")
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::RateLimited));
    assert!(is_accepted(
        &sender
            .send_envelope(&jan.mailbox_id, &jan.token, b"friend")
            .await
    ));

    // A new token replaces the old one.
    let (_, backlog) = c.login(&jan).await;
    assert_eq!(backlog.iter().filter(|d| d.introduction).count(), 3);
    assert_eq!(backlog.len(), 4);
    let new_token = b"new token".to_vec();
    use sha2::Digest;
    let r = c
        .call(Req::SetDeliveryToken(proto::SetDeliveryToken {
            delivery_token_hash: sha2::Sha256::digest(&new_token).to_vec(),
        }))
        .await;
    assert!(is_accepted(&r), "{r:?}");
    let r = sender
        .send_envelope(&jan.mailbox_id, &jan.token, b"old")
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::RateLimited));
    assert!(is_accepted(
        &sender
            .send_envelope(&jan.mailbox_id, &new_token, b"new")
            .await
    ));

    let d = c.next_delivery().await;
    assert_eq!(d.sealed, b"new".to_vec());
    assert!(!d.introduction);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_key_accounts_and_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let first_key = srv.invite.server_key;
    let mut c = Client::connect(&srv.invite).await;
    let kim = c.register("kim").await;
    let mut sender = Client::connect(&srv.invite).await;
    for i in 0..5u8 {
        assert!(is_accepted(
            &sender
                .send_envelope(&kim.mailbox_id, &kim.token, &[i])
                .await
        ));
    }
    drop((c, sender));
    srv.stop().await;

    let srv = start(config(dir.path())).await;
    assert_eq!(srv.invite.server_key, first_key);
    let mut c = Client::connect(&srv.invite).await;
    let (_, got) = c.login(&kim).await;
    assert_eq!(
        got.iter().map(|d| d.sealed[0]).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    // The mailbox cache was rebuilt: sending with the token works.
    let mut sender = Client::connect(&srv.invite).await;
    assert!(is_accepted(
        &sender
            .send_envelope(&kim.mailbox_id, &kim.token, b"again")
            .await
    ));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_counts() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let leo = c.register("leo").await;
    assert!(is_accepted(
        &c.send_envelope(&leo.mailbox_id, &leo.token, b"m").await
    ));
    let mut s = TcpStream::connect(srv.metrics_addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"));
    assert!(body.contains("umbra_envelopes_accepted_total 1"));
    assert!(body.contains("umbra_envelopes_stored 1"));
    assert!(body.contains("umbra_connections_open 1"));
    assert!(!body.contains("leo"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_connections = 1;
    let srv = start(cfg).await;
    let mut first = Client::connect(&srv.invite).await;
    let mut second = Client::connect(&srv.invite).await;
    let f = second.recv().await.expect("an error frame");
    assert!(matches!(f.body, Some(Resp::Error(e)) if e.code == ErrorCode::Busy as i32));
    assert!(second.recv().await.is_none());
    let r = first.call(Req::Ping(proto::Ping { nonce: 1 })).await;
    assert!(matches!(r, Resp::Pong(_)));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_anonymous_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.idle_timeout_secs = 1;
    let srv = start(cfg).await;
    let mut idle = Client::connect(&srv.invite).await;
    let mut logged = Client::connect(&srv.invite).await;
    let acct = logged.register("max").await;
    logged.login(&acct).await;
    let started = std::time::Instant::now();
    assert!(idle.recv().await.is_none());
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Logged-in sessions are not subject to the idle timeout.
    let r = logged.call(Req::Ping(proto::Ping { nonce: 2 })).await;
    assert!(matches!(r, Resp::Pong(_)));
    srv.stop().await;
}
