//! Abuse: garbage datagrams, garbage TCP and TLS bytes, and many half-open allocations
//! (401-stage requests; allocations never refreshed). Afterwards a well-formed client still
//! allocates and relays, no worker panicked (`run` returns `Ok`), and the counters show
//! the drops.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TurnClient, Via, creds, eventually, start};
use rand::{Rng as _, RngCore as _};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use umbra_relay::metrics::DropReason;
use umbra_turn::{Attribute, Class, MessageBuilder, Method, TransactionId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_garbage_and_half_open_allocations() {
    let mut cfg = common::config();
    cfg.max_lifetime_secs = 2;
    cfg.user_quota = 100;
    let relay = start(cfg).await;
    let m = relay.metrics.clone();
    let mut rng = rand::thread_rng();

    // 1. Garbage datagrams: random bytes, plus STUN- and ChannelData-shaped junk.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..5000u32 {
        let len = rng.gen_range(0..1500);
        let mut d = vec![0u8; len];
        rng.fill_bytes(&mut d);
        match i % 3 {
            0 if len > 0 => d[0] &= 0x3f,                // looks like STUN
            1 if len > 0 => d[0] = 0x40 | (d[0] & 0x0f), // looks like ChannelData
            _ => {}
        }
        let _ = junk.send_to(&d, relay.udp).await;
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }

    // 2. Garbage on TCP and TLS, and connections that never say anything.
    let mut idle = Vec::new();
    for i in 0..40 {
        let addr = if i % 2 == 0 { relay.tcp } else { relay.tls };
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 4 < 3 {
            let mut d = vec![0u8; rng.gen_range(1..4096)];
            rng.fill_bytes(&mut d);
            d[0] |= 0x80; // never a valid first byte
            let _ = s.write_all(&d).await;
        } else {
            idle.push(s);
        }
    }

    // 3. Half-open allocations: unauthenticated Allocates (each answered 401, nothing kept)...
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..300u32 {
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let req = MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId(tid))
            .attr(&Attribute::RequestedTransport(17))
            .build()
            .unwrap();
        probe.send_to(&req, relay.udp).await.unwrap();
    }
    // ...and real allocations whose clients vanish without refreshing.
    let (u, p) = creds("ghost", 3600);
    for _ in 0..20 {
        let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
        c.allocate().await.unwrap();
    }
    assert!(eventually(Duration::from_secs(3), || m.error_responses(401) >= 320).await);

    // 4. A well-formed pair still allocates and relays, over UDP and TCP.
    let (mut a, ra, mut b, rb) = common::pair(&relay, Via::Udp, Via::Tcp).await;
    a.bind(rb).await.unwrap();
    for i in 0..10u8 {
        a.send(rb, &[i; 100]).await;
        let (from, data) = b.recv(Duration::from_secs(5)).await.unwrap();
        assert_eq!((from, data), (ra, vec![i; 100]));
    }

    // The abandoned allocations are reclaimed by expiry, while the pair, driven here,
    // keeps refreshing its own.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while m.allocations_expired.load(Ordering::Relaxed) < 20 && std::time::Instant::now() < until {
        let _ = a.recv(Duration::from_millis(100)).await;
        let _ = b.recv(Duration::from_millis(100)).await;
    }
    assert_eq!(m.allocations_expired.load(Ordering::Relaxed), 20);
    b.send(ra, b"after expiry").await;
    let (from, _) = a.recv(Duration::from_secs(5)).await.unwrap();
    assert_eq!(from, rb);

    assert!(
        m.drops(DropReason::Malformed) > 1000,
        "malformed drops counted"
    );
    // 10 TLS connections sent garbage (the 10 silent ones time out later).
    assert!(
        m.connections_refused.load(Ordering::Relaxed) >= 10,
        "TLS garbage refused"
    );
    drop(idle);
    relay.stop().await.expect("no worker panicked");
}
