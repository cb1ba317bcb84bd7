//! The messaging server hands logged-in clients time-limited credentials
//! for the call relay in the TURN REST scheme (coturn's static-auth-secret),
//! with a random token in the username, never the account name.

mod common;

use common::{ServerProc, fails, ok};

/// A forwarding unit's link, as `umbra relay` prints it.
const UNIT: &str =
    "umbra://unit?host=127.0.0.1&port=3479&key=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc";

#[test]
fn logged_in_clients_get_rest_credentials_without_their_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("relay.secret");
    std::fs::write(&secret_file, "shared-relay-secret\n").expect("secret");
    let secret_arg = secret_file.to_string_lossy().into_owned();
    let server = ServerProc::start_with(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("log"),
        &[
            "--relay-secret-file",
            &secret_arg,
            "--relay-url",
            "turn:127.0.0.1:3478?transport=udp",
            "--relay-url",
            "turns:127.0.0.1:5349?transport=tcp",
            "--relay-credential-ttl-secs",
            "600",
            "--unit",
            UNIT,
        ],
    );
    let alice = dir.path().join("alice");
    common::register(&alice, &server.invite, "alice");
    let out = ok(&alice, &["--json", "ice-servers"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let ice = &v["iceServers"][0];
    assert_eq!(ice["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    assert_eq!(ice["urls"][1], "turns:127.0.0.1:5349?transport=tcp");
    assert_eq!(v["iceTransportPolicy"], "relay");
    // The group call unit, which takes the same credentials.
    assert_eq!(v["unit"], UNIT);
    let username = ice["username"].as_str().expect("username");
    let credential = ice["credential"].as_str().expect("credential");
    assert!(
        !username.contains("alice"),
        "account name leaked into the relay username"
    );
    let (expiry, token) = username.split_once(':').expect("expiry:token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry: u64 = expiry.parse().expect("expiry is a number");
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "expiry {expiry} vs now {now}"
    );
    assert_eq!(token.len(), 32);
    assert_eq!(
        credential,
        umbra_turn::credentials::rest::password(b"shared-relay-secret", username)
    );
    assert!(umbra_turn::credentials::rest::check_username(username, now).is_ok());
    // Each request gets a fresh token: the relay cannot link two calls by name.
    let again = ok(&alice, &["--json", "ice-servers"]);
    assert!(!again.contains(username));
    drop(server);

    // Without a configured relay the answer says so.
    let plain = ServerProc::start(
        &dir.path().join("server2"),
        "127.0.0.1:0",
        &dir.path().join("log2"),
    );
    let bob = dir.path().join("bob");
    common::register(&bob, &plain.invite, "bob");
    let err = fails(&bob, &["ice-servers"]);
    assert!(err.contains("no call relay configured"), "{err}");
}

#[test]
fn anonymous_sessions_get_no_relay_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("relay.secret");
    std::fs::write(&secret_file, "s3cret").expect("secret");
    let secret_arg = secret_file.to_string_lossy().into_owned();
    let server = ServerProc::start_with(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("log"),
        &["--relay-secret-file", &secret_arg],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use umbra_wire::proto::{
            ClientFrame, ErrorCode, GetRelayCredentials, ServerFrame, client_frame, server_frame,
        };
        let invite = umbra_wire::invite::Invite::parse(&server.invite).expect("invite");
        let tcp = tokio::net::TcpStream::connect(invite.address())
            .await
            .expect("connect");
        let key = umbra_wire::noise::Keypair::generate().expect("key");
        let (mut ch, _) = umbra_net::connect(
            tcp,
            &key,
            &invite.server_key,
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("handshake");
        ch.writer
            .send(&ClientFrame {
                request_id: 1,
                body: Some(client_frame::Body::GetRelayCredentials(
                    GetRelayCredentials {},
                )),
            })
            .await
            .expect("send");
        let reply: ServerFrame = ch.reader.recv().await.expect("recv").expect("frame");
        match reply.body {
            Some(server_frame::Body::Error(e)) => assert_eq!(e.code, ErrorCode::NotLoggedIn as i32),
            other => panic!("expected NOT_LOGGED_IN, got {other:?}"),
        }
    });
}
