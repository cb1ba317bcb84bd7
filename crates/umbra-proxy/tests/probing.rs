//! Probe resistance and the proxy's mechanics, against an in-process proxy
//! on loopback: real sockets, real TLS, and curl / openssl s_client as the
//! probers a censor would use.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_wire::proxy::{Target, preamble};

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probers_get_a_website_and_only_the_secret_gets_through() {
    let up = upstream().await;
    let p = start(|c| c.upstream = Some(up.addr.to_string())).await;

    // curl over TLS and plain HTTP, as a censor's scanner would.
    let tls_port = p.tls.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-skv",
                "--max-time",
                "10",
                &format!("https://127.0.0.1:{tls_port}/"),
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("curl is needed for this test (apt-get install curl)");
    let (body, log) = (text(&out.stdout), text(&out.stderr));
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(log.contains("< Server: nginx"), "{log}");
    assert!(log.contains("ALPN: server accepted http/1.1"), "{log}");
    assert!(log.contains("HTTP/1.1 200 OK"), "{log}");
    let plain_port = p.plain.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-si",
                "--max-time",
                "10",
                &format!("http://127.0.0.1:{plain_port}/wp-admin"),
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("curl");
    assert!(
        text(&out.stdout).starts_with("HTTP/1.1 404 Not Found"),
        "{}",
        text(&out.stdout)
    );

    // openssl s_client speaking HTTP inside TLS.
    let tls_addr = p.tls.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args([
                "s_client", "-quiet", "-alpn", "http/1.1", "-connect", &tls_addr,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is needed for this test (apt-get install openssl)");
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            let _ =
                stdin.write_all(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n");
            std::thread::sleep(Duration::from_millis(500));
        }
        child.wait_with_output()
    })
    .await
    .expect("join")
    .expect("openssl");
    assert!(
        text(&out.stdout).contains("HTTP/1.1 200 OK"),
        "{}",
        text(&out.stdout)
    );

    // An admitted client: its first flight is captured for the replay below.
    let captured = upgrade_bytes(&p.secret, now(), 3);
    let mut s = admitted_plain(p.plain, p.secret, 3, Target::Messaging).await;
    s.write_all(b"noise-bytes-after-the-upgrade")
        .await
        .expect("write");
    let mut echoed = vec![0u8; 29];
    s.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(
        echoed, b"noise-bytes-after-the-upgrade",
        "admitted traffic reaches the upstream and back"
    );
    drop(s);
    // Wrong secret, stale, replayed: the website's answer for that path, a
    // 404, as to anyone asking for a page that does not exist. Garbage and
    // the old preamble: its 400.
    let old_preamble = preamble(&p.secret, now(), [4; 16], Target::Messaging);
    for (what, probe, status) in [
        (
            "wrong secret",
            upgrade_bytes(&[0xAA; 32], now(), 1),
            "404 Not Found",
        ),
        (
            "stale",
            upgrade_bytes(&p.secret, now() - 3600, 2),
            "404 Not Found",
        ),
        ("replayed", captured, "404 Not Found"),
        ("garbage", vec![0x01; 80], "400 Bad Request"),
        ("the old preamble", old_preamble.to_vec(), "400 Bad Request"),
        (
            "tls-looking",
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
            "400 Bad Request",
        ),
    ] {
        let reply = text(&exchange(p.plain, &probe).await);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {reply}"
        );
        assert!(!reply.contains("101"), "{what}: {reply}");
    }
    // Silence gets silence, as from nginx (which waits a minute, then closes).
    let mut quiet = TcpStream::connect(p.plain).await.expect("connect");
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_secs(2), quiet.read(&mut buf))
            .await
            .is_err(),
        "a silent visitor is neither answered nor dropped early"
    );
    // The upstream saw exactly one connection, holding exactly the bytes after
    // the upgrade, unmasked: nothing from probers, no PROXY header, no client
    // address.
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![b"noise-bytes-after-the-upgrade".to_vec()]);

    assert_eq!(
        metric(p.metrics, "umbra_proxy_admitted_messaging_total").await,
        1
    );
    assert_eq!(metric(p.metrics, "umbra_proxy_stale_total").await, 1);
    assert_eq!(metric(p.metrics, "umbra_proxy_replayed_total").await, 1);
    assert!(metric(p.metrics, "umbra_proxy_turned_away_total").await >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_over_tls_and_to_the_relay_upstream() {
    let messaging = upstream().await;
    let relay = upstream().await;
    let p = start(|c| {
        c.upstream = Some(messaging.addr.to_string());
        c.relay_upstream = Some(relay.addr.to_string());
        c.public_host = Some("127.0.0.1".into());
    })
    .await;
    let link = umbra_wire::proxy::ProxyLink {
        host: "127.0.0.1".into(),
        port: p.tls.port(),
        secret: p.secret,
        tls: true,
        front: None,
    };
    let route = umbra_net::dial::Route::Proxy(link);
    for (target, marker) in [
        (Target::Messaging, &b"to-messaging"[..]),
        (Target::Relay, &b"to-relay"[..]),
    ] {
        let mut s = umbra_net::dial::dial(&route, target, Duration::from_secs(5))
            .await
            .expect("dial");
        s.write_all(marker).await.expect("write");
        let mut back = vec![0u8; marker.len()];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(back, marker);
    }
    assert_eq!(
        messaging.seen.lock().expect("lock").concat(),
        b"to-messaging"
    );
    assert_eq!(relay.seen.lock().expect("lock").concat(), b"to-relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_decoy_site_gets_every_visitor() {
    let site = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let site_addr = site.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = site.accept().await {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            record.lock().expect("lock").push(buf[..n].to_vec());
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\noperator-site")
                .await;
        }
    });
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.decoy = Some(site_addr.to_string());
    })
    .await;
    let reply = text(&exchange(p.plain, b"GET /blog HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(reply.ends_with("operator-site"), "{reply}");
    let wrong = upgrade_bytes(&[7; 32], now(), 9);
    let _ = exchange(p.plain, &wrong).await;
    let got = got.lock().expect("lock").clone();
    assert!(got[0].starts_with(b"GET /blog"));
    assert_eq!(
        got[1], wrong,
        "the decoy receives the prober's bytes verbatim"
    );
    assert!(up.seen.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_a_load_balancer_is_stripped_never_forwarded() {
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.accept_proxy_protocol = true;
        c.tls_listen.clear();
    })
    .await;
    let mut header = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
    ];
    header.extend_from_slice(&[203, 0, 113, 7, 198, 51, 100, 1, 0x30, 0x39, 0x01, 0xBB]);
    let mut s = TcpStream::connect(p.plain).await.expect("connect");
    s.write_all(&header).await.expect("header");
    let link = plain_link(p.plain, p.secret);
    let mut s = umbra_net::masked::Masked::open(
        s,
        &link,
        Target::Messaging,
        now(),
        [5; 16],
        Duration::from_secs(5),
    )
    .await
    .expect("admitted behind the load balancer");
    s.write_all(b"after").await.expect("write");
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"after");
    // Without the header the connection is dropped without a word.
    let nothing = exchange(p.plain, &upgrade_bytes(&p.secret, now(), 6)).await;
    assert!(nothing.is_empty());
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![b"after".to_vec()],
        "the client's address never goes upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_connection_limit_and_idle_timeout() {
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.tls_listen.clear();
        c.plain_listen = vec!["[::1]:0".parse().expect("v6")];
        c.max_connections = 2;
        c.idle_timeout_secs = 1;
        c.handshake_timeout_secs = 5;
    })
    .await;
    assert!(p.plain.is_ipv6());
    // IPv6 works.
    let mut first = admitted_plain(p.plain, p.secret, 1, Target::Messaging).await;
    first.write_all(b"v6").await.expect("write");
    let mut back = [0u8; 2];
    first.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"v6");
    // Second connection takes the last slot; the third is refused.
    let _second = TcpStream::connect(p.plain).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(p.plain).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "refused at the limit");
    assert_eq!(
        metric(p.metrics, "umbra_proxy_connections_refused_total").await,
        1
    );
    // The admitted one goes silent and is closed after the idle timeout.
    let start = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf))
        .await
        .expect("closed by idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(metric(p.metrics, "umbra_proxy_idle_closed_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_misses_on_the_secret_path_are_answered_as_at_once_as_anywhere_else() {
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.tls_listen.clear();
        // Long enough that any wait for more bytes would show.
        c.handshake_timeout_secs = 10;
    })
    .await;
    let (path, param) = umbra_wire::upgrade::shape(&p.secret);
    let ours = format!("{path}?{param}=");
    // Heads the website answers as soon as it has them: a prober tries them
    // on every path, looking for the one where the server waits instead.
    for probe in [
        "GET {}x HTTP/1.1\nHost: a\n\n",
        "GET {}x\r\n",
        "GET {}x HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET {}x HTTP/1.1\r\nHost: a\r\n\n",
    ] {
        let mut replies = Vec::new();
        for target in [ours.as_str(), "/elsewhere?t="] {
            let bytes = probe.replace("{}", target);
            let started = std::time::Instant::now();
            let mut s = TcpStream::connect(p.plain).await.expect("connect");
            s.write_all(bytes.as_bytes()).await.expect("write");
            let mut first = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut first))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            let reply = text(&first[..n]);
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{probe:?} on {target}: answered only after {:?}",
                started.elapsed()
            );
            replies.push(reply.lines().next().unwrap_or_default().to_string());
        }
        assert!(!replies[0].is_empty(), "{probe:?}: no answer");
        assert_eq!(replies[0], replies[1], "{probe:?}");
    }
    assert!(up.seen.lock().expect("lock").is_empty());
}
