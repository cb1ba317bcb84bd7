//! Two allocations relaying to each other through the relay, over each client transport:
//! Send/Data indications first, then ChannelData after ChannelBind. With two workers a
//! pair may sit on one worker (handed over in memory) or on two (through the kernel);
//! with one worker every pair is handed over in memory, which the `one_worker_*` tests
//! pin down.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Via, pair, start};

const T: Duration = Duration::from_secs(5);

async fn relay_both_ways(via_a: Via, via_b: Via) {
    relay_both_ways_with(common::config(), via_a, via_b).await;
}

async fn relay_both_ways_with(config: umbra_relay::RelayConfig, via_a: Via, via_b: Via) {
    let exact = config.workers == Some(1);
    let relay = start(config).await;
    let (mut a, ra, mut b, rb) = pair(&relay, via_a, via_b).await;
    assert_ne!(ra, rb);
    assert_eq!(
        ra.ip(),
        relay.udp.ip(),
        "relayed address is on the relay IP"
    );

    // Send indication -> Data indication.
    a.send(rb, b"hello over send").await;
    let (from, data) = b.recv(T).await.expect("bob receives a Data indication");
    assert_eq!(from, ra, "bob sees alice's relayed address, not her own");
    assert_eq!(data, b"hello over send");
    b.send(ra, b"hello back").await;
    let (from, data) = a.recv(T).await.expect("alice receives");
    assert_eq!((from, data.as_slice()), (rb, &b"hello back"[..]));

    // ChannelData both ways, odd sizes to exercise padding.
    a.bind(rb).await.expect("alice binds a channel");
    b.bind(ra).await.expect("bob binds a channel");
    for i in 0..20u8 {
        let msg = vec![i; 1 + usize::from(i) * 37];
        a.send(rb, &msg).await;
        let (from, data) = b.recv(T).await.expect("bob receives ChannelData");
        assert_eq!((from, &data), (ra, &msg));
        b.send(ra, &msg).await;
        let (from, data) = a.recv(T).await.expect("alice receives ChannelData");
        assert_eq!((from, &data), (rb, &msg));
    }
    let m = &relay.metrics;
    let to_peers = m
        .packets_to_peers
        .load(std::sync::atomic::Ordering::Relaxed);
    let to_clients = m
        .packets_to_clients
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(to_peers >= 42 && to_clients >= 42);
    if exact {
        // In memory nothing is lost or counted twice.
        assert_eq!((to_peers, to_clients), (42, 42));
    }
    relay.stop().await.unwrap();
}

fn one_worker() -> umbra_relay::RelayConfig {
    umbra_relay::RelayConfig {
        workers: Some(1),
        ..common::config()
    }
}

#[tokio::test]
async fn one_worker_hands_packets_over_in_memory() {
    relay_both_ways_with(one_worker(), Via::Udp, Via::Udp).await;
    relay_both_ways_with(one_worker(), Via::Tcp, Via::Udp).await;
    relay_both_ways_with(one_worker(), Via::Udp, Via::Tls).await;
}

#[tokio::test]
async fn udp_clients_relay_to_each_other() {
    relay_both_ways(Via::Udp, Via::Udp).await;
}

#[tokio::test]
async fn tcp_clients_relay_to_each_other() {
    relay_both_ways(Via::Tcp, Via::Tcp).await;
}

#[tokio::test]
async fn tls_clients_relay_to_each_other() {
    relay_both_ways(Via::Tls, Via::Tls).await;
}

#[tokio::test]
async fn mixed_transports_relay_to_each_other() {
    relay_both_ways(Via::Udp, Via::Tls).await;
    relay_both_ways(Via::Tcp, Via::Udp).await;
}

#[tokio::test]
async fn shutdown_releases_allocations() {
    let relay = start(common::config()).await;
    let (_a, _ra, _b, _rb) = pair(&relay, Via::Udp, Via::Tcp).await;
    let m = relay.metrics.clone();
    assert_eq!(
        m.allocations_active
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    relay.stop().await.unwrap();
    assert_eq!(
        m.allocations_active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        m.allocations_deleted
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
