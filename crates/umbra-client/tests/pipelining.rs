//! Pipelined requests whose answers come back in another order: the server
//! answers a send to an unknown mailbox at once, while a send before it
//! waits for the storage thread's commit. Each answer must reach its own
//! request.

mod common;

use common::TestServer;
use umbra_client::Client;
use umbra_client::conn::ServerConn;
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;
use umbra_wire::proto::{ErrorCode, SendEnvelope, client_frame, server_frame};

fn send(mailbox: &[u8]) -> client_frame::Body {
    client_frame::Body::Send(SendEnvelope {
        mailbox_id: mailbox.to_vec(),
        delivery_token: Vec::new(),
        sealed: vec![7; 64],
        online_only: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_overtaking_one_another_reach_their_own_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), |_| {}).await;
    let bob = Client::register(&dir.path().join("bob"), &server.invite, "bob", None, None)
        .await
        .expect("register");
    let mailbox = bob.mailbox_id().to_vec();
    let invite = Invite::parse(&server.invite).expect("invite");
    let mut conn = ServerConn::open(&invite, &Route::Direct(invite.address()))
        .await
        .expect("connect");
    // Stored ones (answered after the commit) around refused ones (answered
    // at once), many times over.
    let mut bodies = Vec::new();
    for _ in 0..20 {
        bodies.push(send(&mailbox));
        bodies.push(send(&[0xAB; 16]));
    }
    let answers = conn.call_many(bodies).await.expect("every answer");
    assert_eq!(answers.len(), 40);
    for (i, a) in answers.iter().enumerate() {
        if i % 2 == 0 {
            assert!(
                matches!(a, Ok(server_frame::Body::Accepted(_))),
                "{i}: {a:?}"
            );
        } else {
            assert!(
                matches!(
                    a,
                    Err(umbra_client::ClientError::Server {
                        code: ErrorCode::UnknownMailbox,
                        ..
                    })
                ),
                "{i}: {a:?}"
            );
        }
    }
    conn.close().await;
    server.stop().await;
}
