//! Server-side RFC 8656 rules, checked with hand-built requests: challenges, 437, 438,
//! 441, 442, 486, 403, 420, 400 cases, channel rules, Refresh, Binding and retransmits.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{PASS, REALM, USER, addr};
use umbra_turn::attribute::PROTOCOL_UDP;
use umbra_turn::server::{
    Output, PeerCheck, RelayError, RelayGrant, Server, ServerConfig, StaticAuthenticator,
};
use umbra_turn::{
    Attribute, Class, LongTermKey, Message, MessageBuilder, Method, PasswordAlgorithm,
    TransactionId, Transport,
};

struct H {
    server: Server,
    now: Instant,
    client: SocketAddr,
    nonce: String,
    tid: u8,
    next_port: u16,
}

fn key(user: &str, pass: &str) -> LongTermKey {
    LongTermKey::derive(PasswordAlgorithm::Md5, user, REALM, pass).expect("md5")
}

impl H {
    fn new(config: ServerConfig) -> H {
        let now = Instant::now();
        let auth = StaticAuthenticator::new()
            .with_user(USER, PASS)
            .with_user("bob", "bobpw");
        let policy = |c: &PeerCheck<'_>| c.peer.ip() != addr("192.0.2.66:0").ip();
        let server = Server::new(config, auth, policy, now);
        H {
            server,
            now,
            client: addr("198.51.100.1:1234"),
            nonce: String::new(),
            tid: 0,
            next_port: 40_000,
        }
    }

    fn default() -> H {
        H::new(ServerConfig::new(REALM, [9; 32]))
    }

    fn tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId([self.tid; 12])
    }

    /// Sends bytes, answers AllocateRelay, returns the bytes sent back to the client.
    fn send(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let _ = self
            .server
            .handle_packet(self.now, Transport::Udp, self.client, bytes);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::SendToClient { bytes, .. } => out.push(bytes),
                Output::AllocateRelay { request, .. } => {
                    let relay = SocketAddr::new(addr("203.0.113.7:0").ip(), self.next_port);
                    self.next_port += 2;
                    let grant = Ok(RelayGrant {
                        relay,
                        reservation_token: None,
                    });
                    let _ = self.server.relay_allocated(self.now, request, grant);
                }
                _ => {}
            }
        }
        out
    }

    fn build(
        &mut self,
        method: Method,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
        user: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        for a in attrs {
            b = b.attr(a);
        }
        if let Some((u, p)) = user {
            b = b
                .attr(&Attribute::Username(u))
                .attr(&Attribute::Realm(REALM))
                .attr(&Attribute::Nonce(&self.nonce));
            b = b.message_integrity(key(u, p).as_bytes());
        }
        b.fingerprint().build().expect("builds")
    }

    /// Sends a request and returns (class, error code) of the single response.
    fn request(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
        user: Option<(&str, &str)>,
    ) -> (Class, Option<u16>, Vec<u8>) {
        let tid = self.tid();
        let bytes = self.build(method, tid, attrs, user);
        let mut out = self.send(&bytes);
        assert_eq!(out.len(), 1, "one response expected");
        let resp = out.pop().expect("one");
        let m = Message::decode(&resp).expect("server output decodes");
        assert_eq!(m.transaction_id(), tid);
        if let Ok(Some(n)) = m.nonce() {
            self.nonce = n.to_owned();
        }
        let code = m.error_code().expect("valid").map(|e| e.code);
        (m.class(), code, resp)
    }

    fn authed(&mut self, method: Method, attrs: &[Attribute<'_>]) -> (Class, Option<u16>) {
        let (c, e, _) = self.request(method, attrs, Some((USER, PASS)));
        (c, e)
    }

    fn allocate(&mut self) -> SocketAddr {
        self.request(Method::ALLOCATE, &[], None);
        let tid = self.tid();
        let bytes = self.build(
            Method::ALLOCATE,
            tid,
            &[Attribute::RequestedTransport(PROTOCOL_UDP)],
            Some((USER, PASS)),
        );
        let out = self.send(&bytes);
        let m = Message::decode(&out[0]).expect("decodes");
        assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.error_code());
        m.verify_integrity(key(USER, PASS).as_bytes())
            .expect("signed");
        m.xor_relayed_address().expect("valid").expect("present")
    }
}

const UDP: Attribute<'static> = Attribute::RequestedTransport(PROTOCOL_UDP);

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce() {
    let mut h = H::default();
    let (class, code, resp) = h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!((class, code), (Class::ErrorResponse, Some(401)));
    let m = Message::decode(&resp).expect("decodes");
    assert_eq!(m.realm().expect("valid"), Some(REALM));
    assert!(!h.nonce.is_empty());
    assert!(m.integrity_kind().is_none());
}

#[test]
fn wrong_password_and_unknown_user_get_401() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(
        h.request(Method::ALLOCATE, &[UDP], Some((USER, "nope"))).1,
        Some(401)
    );
    assert_eq!(
        h.request(Method::ALLOCATE, &[UDP], Some(("mallory", "x")))
            .1,
        Some(401)
    );
}

#[test]
fn missing_realm_with_integrity_is_400() {
    let mut h = H::default();
    let tid = h.tid();
    let bytes = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid)
        .attr(&UDP)
        .attr(&Attribute::Username(USER))
        .message_integrity(key(USER, PASS).as_bytes())
        .build()
        .expect("builds");
    let out = h.send(&bytes);
    assert_eq!(
        Message::decode(&out[0])
            .expect("decodes")
            .error_code()
            .expect("ok")
            .map(|e| e.code),
        Some(400)
    );
}

#[test]
fn stale_nonce_gets_438_then_works_with_new_nonce() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    h.now += Duration::from_secs(601);
    assert_eq!(
        h.authed(Method::ALLOCATE, &[UDP]),
        (Class::ErrorResponse, Some(438))
    );
    assert_eq!(
        h.authed(Method::ALLOCATE, &[UDP]),
        (Class::SuccessResponse, None)
    );
    // A nonce issued to another client address is stale too.
    h.client = addr("198.51.100.1:9999");
    assert_eq!(h.authed(Method::ALLOCATE, &[UDP]).1, Some(438));
}

#[test]
fn allocate_rules() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(
        h.authed(Method::ALLOCATE, &[]).1,
        Some(400),
        "REQUESTED-TRANSPORT missing"
    );
    assert_eq!(
        h.authed(Method::ALLOCATE, &[Attribute::RequestedTransport(6)])
            .1,
        Some(442)
    );
    assert_eq!(
        h.authed(
            Method::ALLOCATE,
            &[
                UDP,
                Attribute::ReservationToken([1; 8]),
                Attribute::EvenPort(false)
            ]
        )
        .1,
        Some(400)
    );
    assert_eq!(
        h.authed(
            Method::ALLOCATE,
            &[
                UDP,
                Attribute::Other {
                    typ: 0x0077,
                    value: b"?"
                }
            ]
        )
        .1,
        Some(420)
    );
    assert_eq!(
        h.authed(Method::ALLOCATE, &[UDP, Attribute::Lifetime(99_999)]),
        (Class::SuccessResponse, None)
    );
    // A different transaction on the same 5-tuple: 437.
    assert_eq!(h.authed(Method::ALLOCATE, &[UDP]).1, Some(437));
}

#[test]
fn allocate_lifetime_is_clamped() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    let (_, _, resp) = h.request(
        Method::ALLOCATE,
        &[UDP, Attribute::Lifetime(99_999)],
        Some((USER, PASS)),
    );
    assert_eq!(
        Message::decode(&resp).expect("ok").lifetime().expect("ok"),
        Some(3600)
    );
    let (_, _, resp) = h.request(
        Method::REFRESH,
        &[Attribute::Lifetime(10)],
        Some((USER, PASS)),
    );
    assert_eq!(
        Message::decode(&resp).expect("ok").lifetime().expect("ok"),
        Some(600)
    );
}

#[test]
fn retransmitted_allocate_gets_the_same_response() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    let tid = h.tid();
    let bytes = h.build(Method::ALLOCATE, tid, &[UDP], Some((USER, PASS)));
    let first = h.send(&bytes);
    let second = h.send(&bytes);
    assert_eq!(first, second);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn quota_per_username_is_486() {
    let mut cfg = ServerConfig::new(REALM, [9; 32]);
    cfg.user_quota = 1;
    let mut h = H::new(cfg);
    h.allocate();
    h.client = addr("198.51.100.1:2000");
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(h.authed(Method::ALLOCATE, &[UDP]).1, Some(486));
    // Another user still fits.
    let (_, code, _) = h.request(Method::ALLOCATE, &[UDP], Some(("bob", "bobpw")));
    assert_eq!(code, None);
}

#[test]
fn total_capacity_is_508_and_relay_failure_is_reported() {
    let mut cfg = ServerConfig::new(REALM, [9; 32]);
    cfg.total_quota = 0;
    let mut h = H::new(cfg);
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(h.authed(Method::ALLOCATE, &[UDP]).1, Some(508));

    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    let tid = h.tid();
    let bytes = h.build(Method::ALLOCATE, tid, &[UDP], Some((USER, PASS)));
    let _ = h
        .server
        .handle_packet(h.now, Transport::Udp, h.client, &bytes);
    let Some(Output::AllocateRelay { request, .. }) = h.server.poll_output() else {
        panic!("expected AllocateRelay")
    };
    // A retransmission while the daemon works is absorbed.
    assert!(
        h.server
            .handle_packet(h.now, Transport::Udp, h.client, &bytes)
            .is_err()
    );
    h.server
        .relay_allocated(h.now, request, Err(RelayError::InsufficientCapacity))
        .expect("known request");
    let out = h.drain();
    assert_eq!(
        Message::decode(&out[0])
            .expect("ok")
            .error_code()
            .expect("ok")
            .map(|e| e.code),
        Some(508)
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn requests_without_allocation_are_437_and_other_user_is_441() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(h.authed(Method::REFRESH, &[]).1, Some(437));
    assert_eq!(
        h.authed(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(addr("192.0.2.1:1"))]
        )
        .1,
        Some(437)
    );
    h.allocate();
    let (_, code, _) = h.request(Method::REFRESH, &[], Some(("bob", "bobpw")));
    assert_eq!(code, Some(441));
}

#[test]
fn refresh_zero_deletes() {
    let mut h = H::default();
    let relay = h.allocate();
    let (class, code, resp) = h.request(
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        Some((USER, PASS)),
    );
    assert_eq!((class, code), (Class::SuccessResponse, None));
    assert_eq!(
        Message::decode(&resp).expect("ok").lifetime().expect("ok"),
        Some(0)
    );
    assert_eq!(h.server.allocation_count(), 0);
    assert!(
        h.server
            .handle_relayed(h.now, relay, addr("192.0.2.1:1"), b"x")
            .is_err()
    );
    assert_eq!(
        h.authed(Method::REFRESH, &[Attribute::Lifetime(0)]).1,
        Some(437)
    );
}

#[test]
fn forbidden_peer_is_403_and_send_is_dropped() {
    let mut h = H::default();
    let relay = h.allocate();
    let bad = addr("192.0.2.66:1");
    assert_eq!(
        h.authed(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(bad)])
            .1,
        Some(403)
    );
    assert_eq!(
        h.authed(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(bad)
            ]
        )
        .1,
        Some(403)
    );
    assert_eq!(h.authed(Method::CREATE_PERMISSION, &[]).1, Some(400));
    let tid = h.tid();
    let send = MessageBuilder::new(Class::Indication, Method::SEND, tid)
        .attr(&Attribute::XorPeerAddress(bad))
        .attr(&Attribute::Data(b"x"))
        .build()
        .expect("builds");
    assert!(
        h.server
            .handle_packet(h.now, Transport::Udp, h.client, &send)
            .is_err()
    );
    assert!(h.server.handle_relayed(h.now, relay, bad, b"x").is_err());
}

#[test]
fn channel_bind_rules() {
    let mut h = H::default();
    let relay = h.allocate();
    let p1 = addr("192.0.2.1:1000");
    let p2 = addr("192.0.2.2:1000");
    let bind = |n: u16, p: SocketAddr| [Attribute::ChannelNumber(n), Attribute::XorPeerAddress(p)];
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x3FFF, p1)).1,
        Some(400)
    );
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x8000, p1)).1,
        Some(400)
    );
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &[Attribute::ChannelNumber(0x4000)])
            .1,
        Some(400)
    );
    assert_eq!(h.authed(Method::CHANNEL_BIND, &bind(0x4000, p1)).1, None);
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x4000, p1)).1,
        None,
        "refresh is fine"
    );
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x4000, p2)).1,
        Some(400),
        "channel taken"
    );
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x4001, p1)).1,
        Some(400),
        "peer taken"
    );
    assert_eq!(h.authed(Method::CHANNEL_BIND, &bind(0x4001, p2)).1, None);

    // Peer data arrives as ChannelData; client ChannelData goes to the peer.
    let _ = h.server.handle_relayed(h.now, relay, p1, b"abc");
    let out = h.drain();
    assert_eq!(out[0], vec![0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c']);
    let _ = h.server.handle_packet(
        h.now,
        Transport::Udp,
        h.client,
        &[0x40, 0x01, 0, 2, b'h', b'i'],
    );
    assert!(
        matches!(h.server.poll_output(), Some(Output::SendFromRelay { peer, bytes, .. }) if peer == p2 && bytes == b"hi")
    );
    // Unbound channel: dropped.
    assert!(
        h.server
            .handle_packet(h.now, Transport::Udp, h.client, &[0x40, 0x05, 0, 0])
            .is_err()
    );

    // After 10 minutes the channel expires (the allocation was refreshed meanwhile).
    h.now += Duration::from_secs(400);
    assert_eq!(h.authed(Method::REFRESH, &[]).1, None);
    h.now += Duration::from_secs(201);
    assert!(
        h.server
            .handle_packet(h.now, Transport::Udp, h.client, &[0x40, 0x01, 0, 0])
            .is_err()
    );
    // Rebinding an expired channel to another peer is allowed (once the nonce, issued
    // 601 s ago, is renewed).
    assert_eq!(
        h.authed(Method::CHANNEL_BIND, &bind(0x4001, p1)).1,
        Some(438)
    );
    assert_eq!(h.authed(Method::CHANNEL_BIND, &bind(0x4001, p1)).1, None);
}

#[test]
fn binding_request_is_answered_without_auth() {
    let mut h = H::default();
    let (class, code, resp) = h.request(Method::BINDING, &[], None);
    assert_eq!((class, code), (Class::SuccessResponse, None));
    assert_eq!(
        Message::decode(&resp)
            .expect("ok")
            .xor_mapped_address()
            .expect("ok"),
        Some(h.client)
    );
    let (_, code, resp) = h.request(
        Method::BINDING,
        &[Attribute::Other {
            typ: 0x0024,
            value: &[0, 0, 0, 1],
        }],
        None,
    );
    assert_eq!(code, Some(420));
    assert_eq!(
        Message::decode(&resp)
            .expect("ok")
            .unknown_attributes()
            .expect("ok"),
        Some(vec![0x0024])
    );
}

#[test]
fn unknown_method_is_400_and_responses_are_ignored() {
    let mut h = H::default();
    let (_, code, _) = h.request(Method::new(0x0F0).expect("12 bits"), &[], None);
    assert_eq!(code, Some(400));
    let tid = h.tid();
    let resp = MessageBuilder::new(Class::SuccessResponse, Method::BINDING, tid)
        .build()
        .expect("builds");
    assert!(
        h.server
            .handle_packet(h.now, Transport::Udp, h.client, &resp)
            .is_err()
    );
    assert!(h.server.poll_output().is_none());
}

#[test]
fn sha256_negotiation_rules() {
    let mut cfg = ServerConfig::new(REALM, [9; 32]);
    cfg.password_algorithms = vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];
    let mut h = H::new(cfg);
    let (_, code, resp) = h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(code, Some(401));
    let m = Message::decode(&resp).expect("ok");
    assert_eq!(
        m.password_algorithms().expect("ok"),
        Some(vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
    );
    assert!(h.nonce.starts_with("obMatJos2"));
    // PASSWORD-ALGORITHM without the echoed list: 400.
    let tid = h.tid();
    let k = LongTermKey::derive(PasswordAlgorithm::Sha256, USER, REALM, PASS).expect("sha256");
    let bytes = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid)
        .attr(&UDP)
        .attr(&Attribute::Username(USER))
        .attr(&Attribute::Realm(REALM))
        .attr(&Attribute::Nonce(&h.nonce.clone()))
        .attr(&Attribute::PasswordAlgorithm(PasswordAlgorithm::Sha256))
        .message_integrity_sha256(k.as_bytes())
        .build()
        .expect("builds");
    let out = h.send(&bytes);
    assert_eq!(
        Message::decode(&out[0])
            .expect("ok")
            .error_code()
            .expect("ok")
            .map(|e| e.code),
        Some(400)
    );
    // Neither attribute: treated as MD5 (backwards compatible).
    assert_eq!(
        h.authed(Method::ALLOCATE, &[UDP]),
        (Class::SuccessResponse, None)
    );
}

#[test]
fn userhash_authenticates() {
    let mut h = H::default();
    h.request(Method::ALLOCATE, &[UDP], None);
    let tid = h.tid();
    let bytes = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid)
        .attr(&UDP)
        .attr(&Attribute::UserHash(umbra_turn::userhash(USER, REALM)))
        .attr(&Attribute::Realm(REALM))
        .attr(&Attribute::Nonce(&h.nonce.clone()))
        .message_integrity(key(USER, PASS).as_bytes())
        .build()
        .expect("builds");
    let out = h.send(&bytes);
    assert_eq!(
        Message::decode(&out[0]).expect("ok").class(),
        Class::SuccessResponse
    );
}

#[test]
fn dont_fragment_unsupported_is_420() {
    let mut cfg = ServerConfig::new(REALM, [9; 32]);
    cfg.dont_fragment = false;
    let mut h = H::new(cfg);
    h.request(Method::ALLOCATE, &[UDP], None);
    assert_eq!(
        h.authed(Method::ALLOCATE, &[UDP, Attribute::DontFragment])
            .1,
        Some(420)
    );
}
