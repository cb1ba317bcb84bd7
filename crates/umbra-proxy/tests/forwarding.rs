//! The plain ports' event loop as a client and a server see it: every byte
//! arrives in order both ways under backpressure (copied, then spliced once
//! the transfer is bulk, then copied again), a half-close is passed on,
//! an unreachable upstream or a client that leaves mid-admission costs
//! nothing lasting, and shutdown lets open connections finish.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_net::masked::Masked;
use umbra_proxy::{Proxy, ProxyConfig};
use umbra_wire::proxy::Target;

mod common;

use common::*;

/// `len` bytes that differ from one stream to another.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

async fn admitted(p: &Running, nonce: u8) -> Masked<TcpStream> {
    admitted_plain(p.plain, p.secret, nonce, Target::Messaging).await
}

/// Waits until a metric reaches `want` (counters are updated as the loop runs).
async fn metric_reaches(p: &Running, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(p.metrics, name).await;
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_with_backpressure_and_a_half_close() {
    const LEN: usize = 6 << 20;
    const AFTER_EOF: &[u8] = b"sent by the server after the client's end of stream";
    // The server streams LEN bytes while reading the client's, and answers
    // once more after the client has finished sending.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let (mut r, mut w) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("server read");
            got
        });
        w.write_all(&pattern(LEN, 7)).await.expect("server write");
        let got = reader.await.expect("join");
        w.write_all(AFTER_EOF).await.expect("after eof");
        w.shutdown().await.expect("shutdown");
        got
    });
    let p = start(|c| {
        c.upstream = Some(server_addr.to_string());
        c.tls_listen.clear();
    })
    .await;
    let s = admitted(&p, 1).await;
    let (mut r, mut w) = tokio::io::split(s);
    let sent = pattern(LEN, 99);
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.expect("client write");
        // End of stream from the client; the other direction goes on.
        w.shutdown().await.expect("client shutdown");
        w
    });
    // Read nothing for a while: the proxy must hold what it cannot write.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut got))
        .await
        .expect("the server's stream arrives in time")
        .expect("client read");
    let _w = writer.await.expect("join");
    let mut want = pattern(LEN, 7);
    want.extend_from_slice(AFTER_EOF);
    assert_eq!(got.len(), want.len());
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&want),
        "downstream bytes"
    );
    let at_server = server.await.expect("join");
    assert_eq!(at_server.len(), LEN);
    assert_eq!(
        Sha256::digest(&at_server),
        Sha256::digest(&sent),
        "upstream bytes"
    );
    assert_eq!(
        metric(p.metrics, "umbra_proxy_bytes_up_total").await,
        LEN as u64
    );
    assert_eq!(
        metric(p.metrics, "umbra_proxy_bytes_down_total").await,
        want.len() as u64
    );
    // Bulk both ways: most of it went through pipes, not through the proxy's
    // memory, and still arrived intact (above).
    let spliced = metric(p.metrics, "umbra_proxy_bytes_spliced_total").await;
    assert!(
        spliced > LEN as u64,
        "only {spliced} bytes spliced of {}",
        2 * LEN
    );
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_connections_open", 0).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_closes_the_client_and_is_counted() {
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone_addr = gone.local_addr().expect("addr");
    drop(gone);
    let p = start(|c| {
        c.upstream = Some(gone_addr.to_string());
        c.tls_listen.clear();
    })
    .await;
    let mut s = admitted(&p, 2).await;
    s.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing comes back, the connection ends");
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_upstream_failures_total", 1).await,
        1
    );
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_connections_open", 0).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_mid_admission_leave_nothing_behind() {
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.tls_listen.clear();
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u8 {
        let (plain, secret) = (p.plain, p.secret);
        tasks.spawn(async move {
            if i % 2 == 0 {
                // Half an upgrade, then gone.
                let mut s = TcpStream::connect(plain).await.expect("connect");
                let pre = upgrade_bytes(&secret, now(), 100 + i);
                s.write_all(&pre[..pre.len() / 2]).await.expect("write");
                drop(s);
                return;
            }
            let mut s = admitted_plain(plain, secret, 100 + i, Target::Messaging).await;
            s.write_all(&[i]).await.expect("write");
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.expect("echo");
            assert_eq!(one[0], i);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client");
    }
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_connections_open", 0).await,
        0
    );
    assert_eq!(
        metric(p.metrics, "umbra_proxy_admitted_messaging_total").await,
        20
    );
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_turned_away_total", 20).await,
        20
    );
    let seen = up.seen.lock().expect("lock").len();
    assert_eq!(seen, 20, "only admitted clients reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_clients_and_lets_open_ones_finish() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::bind(ProxyConfig {
        upstream: Some(up.addr.to_string()),
        tls_listen: Vec::new(),
        plain_listen: vec!["127.0.0.1:0".parse().expect("addr")],
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("proxy"),
        ..ProxyConfig::default()
    })
    .await
    .expect("bind");
    let plain = proxy.plain_addrs()[0];
    let secret = proxy.link().secret;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(proxy.run(async {
        let _ = stopped.await;
    }));
    let mut open = admitted_plain(plain, secret, 9, Target::Messaging).await;
    open.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"before");

    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No one listens any more.
    assert!(
        TcpStream::connect(plain).await.is_err(),
        "new connections are refused once shutting down"
    );
    // The open connection still works during the grace period...
    open.write_all(b"during").await.expect("write");
    open.read_exact(&mut buf)
        .await
        .expect("echo while stopping");
    assert_eq!(&buf, b"during");
    // ...and the proxy stops as soon as it ends.
    drop(open);
    tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .expect("stopped once the last connection ended")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_a_spliced_transfer_frees_everything() {
    // The server streams until the client goes away.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = pattern(256 * 1024, 3);
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let p = start(|c| {
        c.upstream = Some(server_addr.to_string());
        c.tls_listen.clear();
    })
    .await;
    for round in 0..4u8 {
        let mut s = admitted(&p, 50 + round).await;
        // Take some of the stream (enough to be spliced), send some, then
        // reset: SO_LINGER 0 makes close send RST with bytes unread.
        let mut got = vec![0u8; 512 * 1024];
        s.read_exact(&mut got).await.expect("bulk arrives");
        s.write_all(&pattern(300 * 1024, round))
            .await
            .expect("write");
        socket2::SockRef::from(s.get_ref())
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
    }
    assert_eq!(
        metric_reaches(&p, "umbra_proxy_connections_open", 0).await,
        0,
        "every reset connection was released"
    );
    assert!(metric(p.metrics, "umbra_proxy_bytes_spliced_total").await > 0);
    // And the same proxy still forwards, byte for byte.
    let mut s = admitted(&p, 90).await;
    let mut got = vec![0u8; 256 * 1024];
    s.read_exact(&mut got).await.expect("stream");
    assert_eq!(got, pattern(256 * 1024, 3));
}
