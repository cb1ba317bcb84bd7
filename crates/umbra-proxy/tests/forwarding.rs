//! The plain ports' event loop as a client and a server see it: every byte
//! arrives in order both ways under backpressure (copied, then spliced once
//! the transfer is bulk, then copied again), a half-close is passed on,
//! an unreachable upstream or a client that leaves mid-admission costs
//! nothing lasting, a first write carried in the upgrade is answered with
//! the 101, and shutdown lets open connections finish.

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

/// A Noise-shaped first message: a two-byte length, then the message.
fn first_message(body: &[u8]) -> Vec<u8> {
    let mut m = (body.len() as u16).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_rides_in_the_upgrade_and_the_101_waits_for_the_answer() {
    use umbra_wire::mask::{End, Mask, Way};
    let up = upstream().await;
    let p = start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.tls_listen.clear();
    })
    .await;
    // As the client makes it: the first message masked, in the cookie.
    let nonce = [21u8; 16];
    let first = first_message(b"the client's first message");
    let mut masked = first.clone();
    Mask::proxied(&p.secret, &nonce, Target::Messaging, Way::Up, End::Sender).apply(&mut masked);
    let request = umbra_wire::upgrade::request_with(
        &p.secret,
        "127.0.0.1",
        now(),
        nonce,
        Target::Messaging,
        &masked,
    );
    let mut s = TcpStream::connect(p.plain).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    // One read brings the 101 and the upstream's answer (the echo): they
    // left the proxy in one write.
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .expect("answered")
        .expect("read");
    let got = &got[..n];
    let head = umbra_wire::upgrade::answer(&nonce, got)
        .expect("admitted")
        .expect("a whole head");
    let mut back = got[head..].to_vec();
    let mut down = Mask::proxied(
        &p.secret,
        &nonce,
        Target::Messaging,
        Way::Down,
        End::Receiver,
    );
    down.apply(&mut back);
    assert_eq!(back, first, "the echo of the first message, with the 101");
    // The upstream got the message itself, unmasked, and nothing of the
    // upgrade.
    assert_eq!(up.seen.lock().expect("lock")[0], first);
    // After the first message nothing is masked any more, either way.
    s.write_all(b"and then plain bytes").await.expect("write");
    let mut after = [0u8; 20];
    s.read_exact(&mut after).await.expect("echo");
    assert_eq!(&after, b"and then plain bytes");

    // A lazy client (what `dial` uses) sends its first write in the upgrade
    // too, and reads the answer as if it had been sent alone.
    let link = plain_link(p.plain, p.secret);
    let tcp = TcpStream::connect(p.plain).await.expect("connect");
    let mut lazy = Masked::new(
        tcp,
        &link,
        Target::Messaging,
        now(),
        [22; 16],
        Duration::from_secs(5),
    );
    lazy.write_all(&first).await.expect("write");
    let mut echo = vec![0u8; first.len()];
    lazy.read_exact(&mut echo).await.expect("echo");
    assert_eq!(echo, first);
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], first, "the upstream saw only the message");
}

/// A proxy in front of `upstream`, and a lazy client (as `dial` makes it)
/// that has written a first message, which rides in its upgrade.
async fn hello_through(upstream: std::net::SocketAddr, nonce: u8) -> (Running, Masked<TcpStream>) {
    let p = start(|c| {
        c.upstream = Some(upstream.to_string());
        c.tls_listen.clear();
    })
    .await;
    let link = plain_link(p.plain, p.secret);
    let tcp = TcpStream::connect(p.plain).await.expect("connect");
    let mut lazy = Masked::new(
        tcp,
        &link,
        Target::Messaging,
        now(),
        [nonce; 16],
        Duration::from_secs(5),
    );
    lazy.write_all(&first_message(b"hello"))
        .await
        .expect("write");
    (p, lazy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_ends_without_answering_gets_the_client_its_101_and_the_end() {
    // An upstream that reads the first message and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
        }
    });
    let (_p, mut lazy) = hello_through(addr, 23).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), lazy.read(&mut buf))
        .await
        .expect("ended promptly")
        .expect("admitted, then the end");
    assert_eq!(n, 0);

    // Through an unreachable upstream, the lazy client gets the site's 502
    // (as nginx answers when its backend fails), and says so in words.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone_addr = gone.local_addr().expect("addr");
    drop(gone);
    let (_p, mut lazy) = hello_through(gone_addr, 24).await;
    let e = lazy.read(&mut buf).await.expect_err("no answer");
    let e = umbra_net::NetError::from(e).to_string();
    assert!(e.contains("could not reach its server"), "{e}");
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
