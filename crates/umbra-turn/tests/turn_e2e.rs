//! In-memory client ↔ server runs: allocation, permissions, channels, data both ways,
//! refreshes across stale nonces, expiry, over UDP and TCP, with static, REST and
//! SHA-256 credentials.

mod common;

use std::time::{Duration, Instant};

use common::{PASS, REALM, USER, World, addr};
use umbra_turn::PasswordAlgorithm;
use umbra_turn::client::{ClientConfig, ClientEvent};
use umbra_turn::credentials::rest;
use umbra_turn::server::{AllowAll, RestAuthenticator, Server, ServerConfig, StaticAuthenticator};
use umbra_turn::{ChannelData, Class, Message, Method, Transport};

fn server(now: Instant) -> Server {
    let cfg = ServerConfig::new(REALM, [7; 32]);
    Server::new(
        cfg,
        StaticAuthenticator::new().with_user(USER, PASS),
        AllowAll,
        now,
    )
}

fn world(transport: Transport) -> World {
    let now = Instant::now();
    World::new(server(now), ClientConfig::new(transport, USER, PASS), now)
}

fn full_flow(transport: Transport) {
    let mut w = world(transport);
    let relay = w.allocate();
    assert_eq!(
        w.log.error_codes,
        vec![401],
        "first Allocate is challenged once"
    );
    assert!(
        matches!(w.take_events().as_slice(), [ClientEvent::Allocated { lifetime, mapped: Some(_), .. }] if *lifetime == Duration::from_secs(600))
    );
    assert_eq!(w.server.allocation_count(), 1);

    let peer = addr("192.0.2.77:6000");
    // Without a permission, the peer's data is dropped and the client cannot send.
    assert!(!w.peer_sends(relay, peer, b"too early"));
    assert!(w.client.send_to(peer, b"x").is_err());

    w.client
        .create_permission(w.now, &[peer])
        .expect("allocated");
    w.pump();
    assert_eq!(
        w.take_events(),
        vec![ClientEvent::PermissionCreated {
            peers: vec![peer.ip()]
        }]
    );

    // Send indication → peer.
    w.client.send_to(peer, b"hello peer").expect("permitted");
    w.pump();
    assert_eq!(
        w.log.to_peers.pop(),
        Some((relay, peer, b"hello peer".to_vec()))
    );

    // Peer → Data indication → client.
    assert!(w.peer_sends(relay, peer, b"hello client"));
    assert_eq!(
        w.take_events(),
        vec![ClientEvent::Data {
            peer,
            data: b"hello client".to_vec()
        }]
    );
    let last = w.log.to_client.last().expect("sent");
    let m = Message::decode(last).expect("data indication");
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));

    // Channel bind, then ChannelData both ways.
    let channel = w.client.bind_channel(w.now, peer).expect("allocated");
    w.pump();
    assert_eq!(
        w.take_events(),
        vec![ClientEvent::ChannelBound { channel, peer }]
    );
    w.client.send_to(peer, b"abcde").expect("bound");
    w.pump();
    assert_eq!(w.log.to_peers.pop(), Some((relay, peer, b"abcde".to_vec())));
    assert!(w.peer_sends(relay, peer, b"vwxyz"));
    assert_eq!(
        w.take_events(),
        vec![ClientEvent::Data {
            peer,
            data: b"vwxyz".to_vec()
        }]
    );
    let last = w.log.to_client.last().expect("sent");
    assert_eq!(
        ChannelData::decode(last).expect("channel data").channel,
        channel
    );
    let expected_len = if transport == Transport::Tcp { 12 } else { 9 };
    assert_eq!(
        last.len(),
        expected_len,
        "ChannelData padding depends on the transport"
    );

    // A second peer without permission stays blocked.
    assert!(!w.peer_sends(relay, addr("192.0.2.78:6000"), b"nope"));

    // Release.
    w.client.release(w.now).expect("allocated");
    w.pump();
    assert_eq!(w.take_events(), vec![ClientEvent::AllocationEnded]);
    assert_eq!(w.log.released, vec![relay]);
    assert_eq!(w.server.allocation_count(), 0);
}

#[test]
fn full_flow_udp() {
    full_flow(Transport::Udp);
}

#[test]
fn full_flow_tcp() {
    full_flow(Transport::Tcp);
}

#[test]
fn refreshes_keep_everything_alive_across_stale_nonces() {
    let mut w = world(Transport::Udp);
    let relay = w.allocate();
    let peer = addr("192.0.2.5:7000");
    w.client.bind_channel(w.now, peer).expect("allocated");
    w.pump();
    w.take_events();
    // 2 hours: allocation (600 s), permission (300 s), channel (600 s) and the nonce
    // (600 s) all expire several times over unless refreshed.
    for _ in 0..24 {
        w.advance(Duration::from_secs(300));
        assert!(
            w.peer_sends(relay, peer, b"ping"),
            "channel and permission still live"
        );
    }
    assert_eq!(w.server.allocation_count(), 1);
    assert!(
        w.log.error_codes.contains(&438),
        "a refresh met a stale nonce: {:?}",
        w.log.error_codes
    );
    assert!(w.log.released.is_empty());
    let events = w.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Refreshed { .. }))
    );
    assert!(!events.iter().any(|e| matches!(
        e,
        ClientEvent::RequestFailed { .. } | ClientEvent::AllocationEnded
    )));
}

#[test]
fn lifetime_expiry_reclaims_allocation() {
    let mut w = world(Transport::Udp);
    let relay = w.allocate();
    assert_eq!(
        w.server.poll_timeout(),
        Some(w.now + Duration::from_secs(600))
    );
    w.client_online = false;
    w.advance(Duration::from_secs(599));
    assert_eq!(w.server.allocation_count(), 1);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.server.allocation_count(), 0);
    assert_eq!(w.log.released, vec![relay]);
    assert!(!w.peer_sends(relay, addr("192.0.2.1:1"), b"late"));
}

#[test]
fn permission_expires_after_300_seconds_without_refresh() {
    let mut w = world(Transport::Udp);
    let relay = w.allocate();
    let peer = addr("192.0.2.9:9");
    w.client
        .create_permission(w.now, &[peer])
        .expect("allocated");
    w.pump();
    // Freeze the client so it does not refresh; keep the allocation alive via the server's
    // default lifetime (600 s).
    w.client_online = false;
    w.advance(Duration::from_secs(299));
    assert!(w.peer_sends(relay, peer, b"a"));
    w.advance(Duration::from_secs(1));
    assert!(!w.peer_sends(relay, peer, b"b"));
}

#[test]
fn client_times_out_when_server_is_silent() {
    let mut w = world(Transport::Udp);
    w.client_online = false;
    w.client.allocate(w.now).expect("idle");
    let mut sends = 0;
    let start = w.now;
    while let Some(t) = w.client.poll_timeout() {
        while w.client.poll_transmit().is_some() {
            sends += 1;
        }
        w.now = t;
        w.client.handle_timeout(t);
        if let Some(ClientEvent::RequestFailed { method, code: None }) = w.client.poll_event() {
            assert_eq!(method, Method::ALLOCATE);
            break;
        }
    }
    assert_eq!(sends, 7);
    assert_eq!(w.now.duration_since(start), Duration::from_millis(39_500));
}

#[test]
fn rest_credentials_end_to_end() {
    let now = Instant::now();
    let unix_now = 1_800_000_000;
    let secret = b"shared-secret".to_vec();
    let auth = RestAuthenticator::new(secret.clone(), now, unix_now);
    let server = Server::new(ServerConfig::new(REALM, [1; 32]), auth, AllowAll, now);
    let (user, pass) = rest::credentials(&secret, unix_now + 3600, "session-token");
    let mut w = World::new(server, ClientConfig::new(Transport::Udp, user, pass), now);
    w.allocate();

    // Expired credentials are refused (401 again, then the client gives up).
    let now = Instant::now();
    let auth = RestAuthenticator::new(secret.clone(), now, unix_now);
    let server = Server::new(ServerConfig::new(REALM, [1; 32]), auth, AllowAll, now);
    let (user, pass) = rest::credentials(&secret, unix_now - 1, "old");
    let mut w = World::new(server, ClientConfig::new(Transport::Udp, user, pass), now);
    w.client.allocate(w.now).expect("idle");
    w.pump();
    assert!(w.client.relay_address().is_none());
    assert!(w.take_events().contains(&ClientEvent::RequestFailed {
        method: Method::ALLOCATE,
        code: Some(401)
    }));
}

#[test]
fn sha256_password_algorithm_negotiation() {
    let now = Instant::now();
    let mut cfg = ServerConfig::new(REALM, [3; 32]);
    cfg.password_algorithms = vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];
    let server = Server::new(
        cfg,
        StaticAuthenticator::new().with_user(USER, PASS),
        AllowAll,
        now,
    );
    let mut w = World::new(server, ClientConfig::new(Transport::Udp, USER, PASS), now);
    w.allocate();
    // The authenticated Allocate used MESSAGE-INTEGRITY-SHA256 and was answered in kind.
    let last = w
        .log
        .to_client
        .iter()
        .rev()
        .find(|b| Message::decode(b).is_ok_and(|m| m.class() == Class::SuccessResponse));
    let m = Message::decode(last.expect("success")).expect("decodes");
    assert_eq!(m.integrity_kind(), Some(umbra_turn::IntegrityKind::Sha256));
}

#[test]
fn ipv6_relay() {
    let now = Instant::now();
    let mut cc = ClientConfig::new(Transport::Udp, USER, PASS);
    cc.family = umbra_turn::AddressFamily::V6;
    let mut w = World::new(server(now), cc, now);
    let relay = w.allocate();
    assert!(relay.is_ipv6());
    let peer = addr("[2001:db8::99]:5000");
    w.client
        .create_permission(w.now, &[peer])
        .expect("allocated");
    w.pump();
    assert!(w.peer_sends(relay, peer, b"v6"));
    assert_eq!(
        w.take_events().last(),
        Some(&ClientEvent::Data {
            peer,
            data: b"v6".to_vec()
        })
    );
    // An IPv4 peer on an IPv6 relay is refused with 443.
    w.client
        .create_permission(w.now, &[addr("192.0.2.1:1")])
        .expect("allocated");
    w.pump();
    assert_eq!(w.log.error_codes.last(), Some(&443));
}

#[test]
fn state_machines_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Server>();
    assert_send::<umbra_turn::client::Client>();
}

#[test]
fn refresh_flood_keeps_one_expiry() {
    let mut w = world(Transport::Udp);
    w.allocate();
    for _ in 0..50 {
        w.client.refresh(w.now).expect("allocated");
        w.pump();
    }
    // However many refreshes, the allocation ends once, 600 s after the last one.
    w.client_online = false;
    w.advance(Duration::from_secs(599));
    assert_eq!(w.server.allocation_count(), 1);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.server.allocation_count(), 0);
    assert_eq!(w.log.released.len(), 1);
}

/// The borrowing entry points give exactly what the queuing ones queue: ChannelData both
/// ways as a `Forward`, everything else (Send/Data indications, STUN) as outputs.
#[test]
fn forward_matches_queued_outputs() {
    use umbra_turn::server::{Forward, Output};
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut w = world(transport);
        let relay = w.allocate();
        let peer = addr("192.0.2.77:6000");
        let channel = w.client.bind_channel(w.now, peer).expect("allocated");
        w.pump();
        w.take_events();
        let frame = ChannelData {
            channel,
            data: b"payload",
        }
        .encode(transport.is_stream())
        .expect("valid");

        // Client → peer.
        let f = w
            .server
            .handle_packet_forward(w.now, transport, w.client_addr, &frame)
            .expect("bound");
        assert_eq!(
            f,
            Some(Forward::ToPeer {
                relay,
                peer,
                data: b"payload"
            })
        );
        assert!(!w.server.has_output(), "nothing queued for a Forward");
        w.server
            .handle_packet(w.now, transport, w.client_addr, &frame)
            .expect("bound");
        assert_eq!(
            w.server.poll_output(),
            Some(Output::SendFromRelay {
                relay,
                peer,
                bytes: b"payload".to_vec(),
                dont_fragment: false
            })
        );

        // Peer → client.
        let f = w
            .server
            .handle_relayed_forward(w.now, relay, peer, b"back")
            .expect("permitted");
        assert_eq!(
            f,
            Some(Forward::ToClient {
                transport,
                client: w.client_addr,
                channel,
                data: b"back"
            })
        );
        w.server
            .handle_relayed(w.now, relay, peer, b"back")
            .expect("permitted");
        let expected = ChannelData {
            channel,
            data: b"back",
        }
        .encode(transport.is_stream())
        .expect("valid");
        assert_eq!(
            w.server.poll_output(),
            Some(Output::SendToClient {
                transport,
                client: w.client_addr,
                bytes: expected
            })
        );

        // A peer without a channel gets a Data indication, queued.
        let other = addr("192.0.2.77:6001");
        let f = w
            .server
            .handle_relayed_forward(w.now, relay, other, b"indicated")
            .expect("same IP, permitted");
        assert_eq!(f, None);
        assert!(w.server.has_output());
        w.pump();
        assert_eq!(
            w.take_events(),
            vec![ClientEvent::Data {
                peer: other,
                data: b"indicated".to_vec()
            }]
        );

        // Refusals are the same.
        let unknown = addr("198.51.100.99:1");
        assert_eq!(
            w.server
                .handle_packet_forward(w.now, transport, unknown, &frame)
                .err(),
            w.server
                .handle_packet(w.now, transport, unknown, &frame)
                .err()
        );
    }
}
