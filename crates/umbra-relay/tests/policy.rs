//! The closed-world peer policy: permissions toward anything but this relay's own
//! allocations are refused with 403, and an explicit allowlist widens it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TurnClient, Via, creds, start};
use tokio::net::UdpSocket;

#[tokio::test]
async fn permission_toward_loopback_service_is_forbidden() {
    let relay = start(common::config()).await;
    let (u, p) = creds("mallory", 3600);
    let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
    let mine = c.allocate().await.unwrap();
    // A loopback "service" that is not a relay allocation, on the relay's own IP.
    let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = service.local_addr().unwrap();
    assert_eq!(c.permit(target).await, Err(Some(403)));
    assert_eq!(c.bind(target).await, Err(Some(403)));
    for other in [
        "10.0.0.1:53",
        "192.168.1.1:80",
        "8.8.8.8:53",
        "127.0.0.1:22",
    ] {
        assert_eq!(
            c.permit(other.parse().unwrap()).await,
            Err(Some(403)),
            "{other}"
        );
    }
    // Its own relayed address is an allocation of this relay: allowed.
    assert_eq!(c.permit(mine).await, Ok(()));
    assert!(relay.metrics.error_responses(403) >= 6);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn send_to_a_non_allocation_port_on_a_permitted_ip_is_dropped() {
    // Permissions are per IP, so a permission for another allocation opens 127.0.0.1;
    // data toward a port that is not an allocation must still be refused.
    let relay = start(common::config()).await;
    let (mut a, _ra, _b, rb) = common::pair(&relay, Via::Udp, Via::Udp).await;
    let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = service.local_addr().unwrap();
    assert_eq!(target.ip(), rb.ip());
    a.send(target, b"sneaky").await;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(500), service.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the loopback service received relayed data");
    assert!(
        common::eventually(Duration::from_secs(2), || {
            relay
                .metrics
                .drops(umbra_relay::metrics::DropReason::Policy)
                >= 1
        })
        .await
    );
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn allowlist_widens_the_closed_world() {
    let mut cfg = common::config();
    cfg.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    let relay = start(cfg).await;
    let (u, p) = creds("carol", 3600);
    let mut c = TurnClient::connect(&relay, Via::Udp, &u, &p).await;
    let mine = c.allocate().await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = peer.local_addr().unwrap();
    assert_eq!(c.permit(target).await, Ok(()));
    c.send(target, b"to a plain peer").await;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await;
    let Ok(Ok((n, from))) = got else {
        panic!(
            "the allowlisted peer got nothing:\n{}",
            relay.scrape().await
        )
    };
    assert_eq!(&buf[..n], b"to a plain peer");
    assert_eq!(from, mine, "the peer sees the relayed address");
    peer.send_to(b"reply", mine).await.unwrap();
    let (from, data) = c.recv(Duration::from_secs(5)).await.unwrap();
    assert_eq!((from, data.as_slice()), (target, &b"reply"[..]));
    relay.stop().await.unwrap();
}
