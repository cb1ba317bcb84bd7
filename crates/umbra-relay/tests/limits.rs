//! Safe-by-default limits: per-credential quota (486), total cap (508), bandwidth cap,
//! expiry reclaim, expired REST credentials (401), and the metrics endpoint.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TurnClient, Via, creds, eventually, start};
use umbra_relay::metrics::DropReason;

#[tokio::test]
async fn per_credential_quota_holds_across_workers() {
    let mut cfg = common::config();
    cfg.user_quota = 2;
    cfg.workers = Some(4);
    let relay = start(cfg).await;
    let (u, p) = creds("dave", 3600);
    let mut ok = 0;
    let mut refused = 0;
    let mut keep = Vec::new();
    // Different source ports spread over the workers; the quota is per credential.
    for via in [Via::Udp, Via::Udp, Via::Tcp, Via::Udp, Via::Tls] {
        let mut c = TurnClient::connect(&relay, via, &u, &p).await;
        match c.allocate().await {
            Ok(_) => ok += 1,
            Err(Some(486)) => refused += 1,
            Err(e) => panic!("unexpected failure {e:?}"),
        }
        keep.push(c);
    }
    assert_eq!((ok, refused), (2, 3));
    // Another credential is not affected.
    let (u2, p2) = creds("erin", 3600);
    let mut other = TurnClient::connect(&relay, Via::Udp, &u2, &p2).await;
    other.allocate().await.unwrap();
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn total_cap_gives_508() {
    let mut cfg = common::config();
    cfg.total_quota = 3;
    let relay = start(cfg).await;
    let mut results = Vec::new();
    let mut keep = Vec::new();
    for i in 0..4 {
        let (u, p) = creds(&format!("user{i}"), 3600);
        let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
        results.push(c.allocate().await.err());
        keep.push(c);
    }
    assert_eq!(results, vec![None, None, None, Some(Some(508))]);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn bandwidth_cap_drops_the_excess() {
    bandwidth_cap(common::config()).await;
}

/// The same with one worker, where the datagram is handed over in memory.
#[tokio::test]
async fn bandwidth_cap_holds_in_memory() {
    bandwidth_cap(umbra_relay::RelayConfig {
        workers: Some(1),
        ..common::config()
    })
    .await;
}

async fn bandwidth_cap(mut cfg: umbra_relay::RelayConfig) {
    cfg.bandwidth_bytes_per_sec = 20_000;
    let relay = start(cfg).await;
    let (mut a, ra, mut b, rb) = common::pair(&relay, Via::Udp, Via::Udp).await;
    a.bind(rb).await.unwrap();
    let msg = vec![7u8; 1000];
    for _ in 0..100 {
        a.send(rb, &msg).await;
    }
    let mut got = 0;
    while b.recv(Duration::from_millis(300)).await.is_some() {
        got += 1;
    }
    // A full bucket holds one second's worth (20 messages), plus a little refill.
    assert!((15..=30).contains(&got), "received {got} of 100");
    assert!(relay.metrics.drops(DropReason::Bandwidth) >= 70);
    // Traffic within the cap flows again after the bucket refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.send(ra, b"still here").await;
    assert!(a.recv(Duration::from_secs(2)).await.is_some());
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn expired_allocations_are_reclaimed() {
    let mut cfg = common::config();
    cfg.max_lifetime_secs = 1;
    let relay = start(cfg).await;
    let (u, p) = creds("frank", 3600);
    // The client is not driven after allocating, so it never refreshes.
    let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
    let r = c.allocate().await.unwrap();
    let m = relay.metrics.clone();
    assert_eq!(m.allocations_active.load(Ordering::Relaxed), 1);
    assert!(
        eventually(Duration::from_secs(4), || {
            m.allocations_expired.load(Ordering::Relaxed) == 1
                && m.allocations_active.load(Ordering::Relaxed) == 0
        })
        .await
    );
    // The relay port is closed: nothing listens there any more.
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.send_to(b"x", r).await.unwrap();
    assert!(
        std::net::UdpSocket::bind(r).is_ok(),
        "the relay port was released"
    );
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn expired_rest_credentials_get_401() {
    let relay = start(common::config()).await;
    let (u, p) = creds("gina", -10);
    let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
    assert_eq!(c.allocate().await, Err(Some(401)));
    // A wrong password is refused the same way.
    let (u, _) = creds("gina", 3600);
    let mut c = TurnClient::connect(&relay, Via::Tcp, &u, "not-the-password").await;
    assert_eq!(c.allocate().await, Err(Some(401)));
    assert_eq!(relay.metrics.allocations_created.load(Ordering::Relaxed), 0);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_aggregate_only() {
    let relay = start(common::config()).await;
    let (mut a, ra, mut b, rb) = common::pair(&relay, Via::Udp, Via::Tcp).await;
    a.send(rb, b"ping").await;
    b.recv(Duration::from_secs(5)).await.unwrap();
    let text = relay.scrape().await;
    assert!(text.starts_with("HTTP/1.1 200 OK"));
    for name in [
        "umbra_relay_allocations_active 2",
        "umbra_relay_allocations_created_total 2",
        "umbra_relay_packets_to_peers_total 1",
        "umbra_relay_packets_to_clients_total 1",
        "umbra_relay_packets_dropped_total{reason=\"policy\"}",
        "umbra_relay_error_responses_total{code=\"401\"} 2",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    for secret in ["127.0.0.1", "alice", "bob", &ra.port().to_string()] {
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            !body
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(secret)),
            "metrics leak {secret}"
        );
    }
    relay.stop().await.unwrap();
}
