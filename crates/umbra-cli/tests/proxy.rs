//! Chatting through `umbra proxy`, with the real binaries: the client never
//! contacts the server's own address (messages, groups, attachments), and the proxy sees (and logs) nothing
//! but ciphertext.

mod common;

use std::net::{SocketAddr, TcpListener};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::capture::{all_bytes, capture};
use common::proxy_proc::{ProxyProc, free_port};
use common::{ServerProc, history, ok};

/// A listener that counts connections and never answers.
fn tripwire() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, count)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn with_a_proxy_the_client_never_contacts_the_server_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &dir.path().join("log"),
    );
    // An invite with the real server key but a tripwire address: any direct
    // connection attempt is counted, and cannot succeed.
    let (wire, touched) = tripwire();
    let key = server.invite.split("key=").nth(1).expect("key");
    let invite = format!("umbra://join?host=127.0.0.1&port={}&key={key}", wire.port());
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let proxy = ProxyProc::start(
        &dir.path().join("proxy"),
        &server.listen,
        &listen,
        true,
        "127.0.0.1",
    );
    assert!(
        proxy.link.starts_with("umbra://proxy?host=127.0.0.1&port="),
        "{}",
        proxy.link
    );

    let p = |n: &str| dir.path().join(n);
    // Alice gives the proxy on the command line; Bob keeps it in his profile.
    ok(
        &p("alice"),
        &[
            "--proxy",
            &proxy.link,
            "register",
            "--no-passphrase",
            "--invite",
            &invite,
            "alice",
        ],
    );
    ok(
        &p("bob"),
        &[
            "--proxy",
            &proxy.link,
            "register",
            "--no-passphrase",
            "--invite",
            &invite,
            "bob",
        ],
    );
    ok(&p("bob"), &["network", "proxy", &proxy.link]);
    ok(&p("alice"), &["send", "bob", "hello via the proxy"]);
    ok(&p("bob"), &["send", "alice", "hello back"]);
    ok(&p("alice"), &["group", "create", "pals", "bob"]);
    ok(
        &p("alice"),
        &["group", "send", "pals", "group via the proxy"],
    );
    assert!(history(&p("bob"), "alice").contains(&("alice".into(), "hello via the proxy".into())));
    assert!(history(&p("alice"), "bob").contains(&("bob".into(), "hello back".into())));
    assert!(history(&p("bob"), "pals").contains(&("alice".into(), "group via the proxy".into())));
    // Attachments too: uploads, fetching on arrival and saving all go
    // through the proxy.
    let photo: Vec<u8> = (0..(1 << 20) + 77).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(p("lake.jpg"), &photo).expect("photo");
    std::fs::write(p("plan.txt"), b"meet at nine").expect("file");
    let path = |n: &str| p(n).to_string_lossy().into_owned();
    ok(&p("alice"), &["send", "bob", "--file", &path("lake.jpg")]);
    ok(
        &p("alice"),
        &["group", "send", "pals", "--file", &path("plan.txt")],
    );
    ok(&p("bob"), &["sync"]);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&p("bob"), &["--json", "attachments"])).expect("json");
    for (name, bytes) in [
        ("lake.jpg", photo.as_slice()),
        ("plan.txt", b"meet at nine"),
    ] {
        let a = listed
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {listed:?}"));
        assert_eq!(a["state"], "fetched", "{a}");
        let out = p(&format!("bob-{name}"));
        ok(
            &p("bob"),
            &[
                "save",
                a["id"].as_str().expect("id"),
                &out.to_string_lossy(),
            ],
        );
        assert_eq!(std::fs::read(&out).expect("saved"), bytes);
    }
    assert_eq!(
        touched.load(Ordering::SeqCst),
        0,
        "a client connected to the server's own address"
    );

    // The tripwire works: without the proxy the client does try that address.
    ok(&p("bob"), &["network", "proxy", "--off"]);
    let out = common::umbra(&p("bob"), &["sync"]);
    assert!(!out.status.success());
    assert!(touched.load(Ordering::SeqCst) > 0);
    drop(proxy);
}

#[test]
fn the_proxy_sees_and_logs_only_ciphertext() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Distinct loopback addresses: clients come from 127.0.0.1, which must
    // not appear anywhere in the proxy's output.
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.5:0",
        &dir.path().join("log"),
    );
    let (upstream_side, up_capture) = capture("127.0.0.6", server.listen.clone());
    let proxy_listen = format!("127.0.0.4:{}", free_port("127.0.0.4"));
    let proxy = ProxyProc::start(
        &dir.path().join("proxy"),
        &upstream_side.to_string(),
        &proxy_listen,
        false,
        "127.0.0.4",
    );
    let (client_side, client_capture) = capture("127.0.0.7", proxy_listen.clone());
    let link = proxy.link.replace(
        &format!(
            "host=127.0.0.4&port={}",
            proxy_listen.rsplit(':').next().expect("port")
        ),
        &format!("host=127.0.0.7&port={}", client_side.port()),
    );
    assert_ne!(
        link, proxy.link,
        "the link goes through the client-side capture"
    );

    let p = |n: &str| dir.path().join(n);
    let users = ["alicia", "bobbyt"];
    let secrets = [
        "blind-proxy-secret-one-8f3",
        "blind-proxy-secret-two-k29",
        "blind-group-name-q77",
    ];
    for u in users {
        ok(
            &p(u),
            &[
                "--proxy",
                &link,
                "register",
                "--no-passphrase",
                "--invite",
                &server.invite,
                u,
            ],
        );
    }
    ok(&p("alicia"), &["send", "bobbyt", secrets[0]]);
    ok(&p("bobbyt"), &["send", "alicia", secrets[1]]);
    ok(&p("alicia"), &["group", "create", secrets[2], "bobbyt"]);
    assert!(history(&p("bobbyt"), "alicia").contains(&("alicia".into(), secrets[0].into())));
    assert!(history(&p("alicia"), "bobbyt").contains(&("bobbyt".into(), secrets[1].into())));

    let deadline = Instant::now() + Duration::from_secs(5);
    while all_bytes(&client_capture).len() < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = proxy.stop();
    let down = all_bytes(&client_capture);
    let up = all_bytes(&up_capture);
    assert!(
        down.len() > 5000 && up.len() > 5000,
        "captures hold the chat ({} / {} bytes)",
        down.len(),
        up.len()
    );
    for (side, bytes) in [("client side", &down), ("server side", &up)] {
        for s in secrets {
            assert!(
                !contains(bytes, s.as_bytes()),
                "plaintext on the {side} of the proxy"
            );
        }
        for u in users {
            assert!(
                !contains(bytes, u.as_bytes()),
                "username {u} on the {side} of the proxy"
            );
        }
    }
    assert!(
        output.contains("umbra proxy ready"),
        "complete output captured:\n{output}"
    );
    for s in secrets {
        assert!(!output.contains(s), "plaintext in the proxy's output");
    }
    for u in users {
        assert!(!output.contains(u), "username in the proxy's output");
    }
    assert!(
        !output.contains("127.0.0.1"),
        "a client address in the proxy's output:\n{output}"
    );
    assert!(
        !output.contains("127.0.0.7"),
        "the client-side peer address in the proxy's output"
    );
}

#[test]
fn calls_go_through_the_same_proxy_port_to_the_relay() {
    // A TLS port, and a plain one, whose TURN framing (in clear on the
    // relay's own TCP port) must not show to an observer.
    for tls in [true, false] {
        allocate_through_a_proxy(tls);
    }
}

fn allocate_through_a_proxy(tls: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay_port = free_port("127.0.0.1");
    let relay_listen = format!("127.0.0.1:{relay_port}");
    let relay_tls = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let node = ServerProc::start_command(
        "serve",
        &dir.path().join("node"),
        "127.0.0.1:0",
        &dir.path().join("log"),
        &[
            "--relay-listen",
            &relay_listen,
            "--relay-tls-listen",
            &relay_tls,
            "--relay-metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let proxy = ProxyProc::start_with(
        &dir.path().join("proxy"),
        &node.listen,
        &listen,
        tls,
        "127.0.0.1",
        &["--relay-upstream", &relay_listen],
    );
    let (seen_at, captured) = capture("127.0.0.7", listen.clone());
    let port = listen.rsplit(':').next().expect("port");
    let link = proxy.link.replace(
        &format!("host=127.0.0.1&port={port}"),
        &format!("host=127.0.0.7&port={}", seen_at.port()),
    );
    assert_ne!(link, proxy.link);
    let alice = dir.path().join("alice");
    ok(
        &alice,
        &[
            "--proxy",
            &link,
            "register",
            "--no-passphrase",
            "--invite",
            &node.invite,
            "alice",
        ],
    );
    // Relay credentials, fetched through the proxy.
    let ice: serde_json::Value =
        serde_json::from_str(ok(&alice, &["--json", "ice-servers"]).trim()).expect("json");
    let user = ice["iceServers"][0]["username"]
        .as_str()
        .expect("user")
        .to_string();
    let pass = ice["iceServers"][0]["credential"]
        .as_str()
        .expect("pass")
        .to_string();

    // A TURN allocation over TCP through the proxy's one port.
    let link = umbra_wire::proxy::ProxyLink::parse(&link).expect("link");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let relay_addr = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use umbra_turn::client::{Client, ClientConfig, ClientEvent};
        let route = umbra_net::dial::Route::Proxy(link);
        let mut stream = umbra_net::dial::dial(
            &route,
            umbra_wire::proxy::Target::Relay,
            Duration::from_secs(5),
        )
        .await
        .expect("dial the relay through the proxy");
        let config = ClientConfig::new(umbra_turn::demux::Transport::Tcp, user, pass);
        let mut turn = Client::new(config, [7; 32]);
        turn.allocate(Instant::now()).expect("allocate");
        let mut inbuf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while let Some(out) = turn.poll_transmit() {
                stream.write_all(&out).await.expect("write");
            }
            while let Some(event) = turn.poll_event() {
                if let ClientEvent::Allocated { relay, .. } = event {
                    return relay;
                }
                assert!(
                    !matches!(event, ClientEvent::RequestFailed { .. }),
                    "{event:?}"
                );
            }
            assert!(Instant::now() < deadline, "no allocation through the proxy");
            let mut buf = [0u8; 2048];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("relay answered")
                .expect("read");
            assert!(n > 0, "the proxy closed the relay connection");
            inbuf.extend_from_slice(&buf[..n]);
            while let Ok(Some(len)) = umbra_turn::demux::frame_len(&inbuf) {
                if inbuf.len() < len {
                    break;
                }
                let frame: Vec<u8> = inbuf.drain(..len).collect();
                turn.handle_packet(Instant::now(), &frame)
                    .expect("turn packet");
            }
        }
    });
    assert_eq!(relay_addr.ip().to_string(), "127.0.0.1");
    // STUN's magic cookie begins every TURN message the relay exchanged
    // with the proxy; on the client's side of the proxy it never shows.
    let seen = all_bytes(&captured);
    assert!(seen.len() > 1000);
    assert!(
        !contains(&seen, &[0x21, 0x12, 0xA4, 0x42]),
        "TURN in clear (tls={tls})"
    );
    drop(proxy);
    drop(node);
}
