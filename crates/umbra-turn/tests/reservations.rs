//! EVEN-PORT and RESERVATION-TOKEN (RFC 8656 §7.2, §18.6, §18.9) end to end: several
//! clients, the server, and a daemon whose relay ports come from [`RelayPorts`] over a fake
//! port space (bound ports are tracked; dropping a socket frees its port).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use umbra_turn::attribute::{
    ADDITIONAL_ADDRESS_FAMILY, EVEN_PORT, PROTOCOL_UDP, RESERVATION_TOKEN,
};
use umbra_turn::server::{
    AllowAll, Output, PortRequest, RESERVATION_LIFETIME, RelayGrant, RelayPorts, Server,
    ServerConfig, StaticAuthenticator,
};
use umbra_turn::{
    AddressFamily, Attribute, Class, LongTermKey, Message, MessageBuilder, Method,
    PasswordAlgorithm, TransactionId, Transport,
};

const REALM: &str = "umbra.test";
const USER: &str = "alice";
const PASS: &str = "correct horse";
const UDP: Attribute<'static> = Attribute::RequestedTransport(PROTOCOL_UDP);

/// The fake port space.
#[derive(Clone, Default)]
struct Net(Rc<RefCell<HashSet<u16>>>);

/// A bound fake socket; dropping it frees the port.
struct Sock {
    port: u16,
    net: Net,
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.net.0.borrow_mut().remove(&self.port);
    }
}

impl Net {
    fn bind(&self, port: u16) -> Option<Sock> {
        let fresh = self.0.borrow_mut().insert(port);
        fresh.then(|| Sock {
            port,
            net: self.clone(),
        })
    }

    fn taken(&self, port: u16) -> bool {
        self.0.borrow().contains(&port)
    }
}

/// What one request got back.
struct Reply {
    class: Class,
    code: Option<u16>,
    relay: Option<SocketAddr>,
    token: Option<[u8; 8]>,
}

struct H {
    server: Server,
    now: Instant,
    ip: IpAddr,
    ports: RelayPorts<Sock>,
    net: Net,
    relays: HashMap<SocketAddr, Sock>,
    /// Nonce per client (they are bound to the client's address).
    nonces: HashMap<u16, String>,
    tid: u32,
    /// Replaces the daemon's grant, to test the server's checks of it.
    tamper: Option<fn(RelayGrant) -> RelayGrant>,
}

fn key() -> LongTermKey {
    LongTermKey::derive(PasswordAlgorithm::Md5, USER, REALM, PASS).expect("md5")
}

fn client(n: u16) -> SocketAddr {
    SocketAddr::new("198.51.100.1".parse().expect("literal"), 10_000 + n)
}

impl H {
    fn new() -> H {
        H::with(ServerConfig::new(REALM, [9; 32]), "203.0.113.7")
    }

    fn with(mut config: ServerConfig, ip: &str) -> H {
        config.user_quota = 100;
        let now = Instant::now();
        let auth = StaticAuthenticator::new().with_user(USER, PASS);
        H {
            server: Server::new(config, auth, AllowAll, now),
            now,
            ip: ip.parse().expect("literal"),
            ports: RelayPorts::new(49_152, 49_251, [3; 32]),
            net: Net::default(),
            relays: HashMap::new(),
            nonces: HashMap::new(),
            tid: 0,
            tamper: None,
        }
    }

    /// Executes the server's outputs as a daemon would; returns what went to clients.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::SendToClient { bytes, .. } => out.push(bytes),
                Output::AllocateRelay {
                    request,
                    even_port,
                    reservation_token,
                    username,
                    ..
                } => {
                    let req = PortRequest {
                        even_port,
                        reservation_token,
                        owner: &username,
                    };
                    let net = self.net.clone();
                    let result = self
                        .ports
                        .allocate(self.now, req, |p| net.bind(p))
                        .map(|g| {
                            let relay = SocketAddr::new(self.ip, g.port);
                            self.relays.insert(relay, g.socket);
                            RelayGrant {
                                relay,
                                reservation_token: g.reservation_token,
                            }
                        });
                    let result = result.map(|g| self.tamper.map_or(g, |f| f(g)));
                    let _ = self.server.relay_allocated(self.now, request, result);
                }
                Output::ReleaseRelay { relay } => {
                    self.relays.remove(&relay);
                }
                _ => {}
            }
        }
        out
    }

    /// Sends a request from client `n` (authenticated once a nonce is known) and returns
    /// the single response.
    fn request(&mut self, n: u16, method: Method, attrs: &[Attribute<'_>]) -> Reply {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tid.to_be_bytes());
        let tid = TransactionId(t);
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        for a in attrs {
            b = b.attr(a);
        }
        if let Some(nonce) = self.nonces.get(&n) {
            b = b
                .attr(&Attribute::Username(USER))
                .attr(&Attribute::Realm(REALM))
                .attr(&Attribute::Nonce(nonce))
                .message_integrity(key().as_bytes());
        }
        let bytes = b.fingerprint().build().expect("builds");
        self.send_raw(n, &bytes, tid)
    }

    fn send_raw(&mut self, n: u16, bytes: &[u8], tid: TransactionId) -> Reply {
        let _ = self
            .server
            .handle_packet(self.now, Transport::Udp, client(n), bytes);
        let mut out = self.drain();
        assert_eq!(out.len(), 1, "one response expected");
        let resp = out.pop().expect("one");
        let m = Message::decode(&resp).expect("server output decodes");
        assert_eq!(m.transaction_id(), tid);
        if m.class() == Class::SuccessResponse {
            m.verify_integrity(key().as_bytes()).expect("signed");
        }
        Reply {
            class: m.class(),
            code: m.error_code().expect("valid").map(|e| e.code),
            relay: m.xor_relayed_address().expect("valid"),
            token: m.reservation_token().expect("valid"),
        }
    }

    /// Client `n`'s nonce, from a 401 challenge the first time.
    fn nonce(&mut self, n: u16) -> String {
        if let Some(nonce) = self.nonces.get(&n) {
            return nonce.clone();
        }
        let tid = TransactionId([0xEE; 12]);
        let bytes = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid)
            .attr(&UDP)
            .build()
            .expect("builds");
        let _ = self
            .server
            .handle_packet(self.now, Transport::Udp, client(n), &bytes);
        let out = self.drain();
        let m = Message::decode(&out[0]).expect("decodes");
        assert_eq!(m.error_code().expect("valid").map(|e| e.code), Some(401));
        let nonce = m.nonce().expect("valid").expect("NONCE").to_owned();
        self.nonces.insert(n, nonce.clone());
        nonce
    }

    /// An authenticated Allocate from client `n`.
    fn allocate(&mut self, n: u16, attrs: &[Attribute<'_>]) -> Reply {
        self.nonce(n);
        let mut all = vec![UDP];
        all.extend_from_slice(attrs);
        self.request(n, Method::ALLOCATE, &all)
    }
}

fn ok(r: &Reply) -> SocketAddr {
    assert_eq!((r.class, r.code), (Class::SuccessResponse, None));
    r.relay.expect("XOR-RELAYED-ADDRESS")
}

#[test]
fn even_port_without_r_gives_an_even_port_and_no_token() {
    let mut h = H::new();
    for n in 0..20 {
        let r = h.allocate(n, &[Attribute::EvenPort(false)]);
        let relay = ok(&r);
        assert_eq!(relay.port() % 2, 0, "{relay}");
        assert_eq!(r.token, None);
    }
    assert_eq!(h.ports.reserved(), 0);
}

#[test]
fn r_bit_reserves_the_next_port_for_the_token() {
    let mut h = H::new();
    let first = h.allocate(1, &[Attribute::EvenPort(true)]);
    let rtp = ok(&first);
    assert_eq!(rtp.port() % 2, 0, "{rtp}");
    let token = first.token.expect("RESERVATION-TOKEN in the response");
    assert!(h.net.taken(rtp.port() + 1), "the next port is held");

    // Other allocations meanwhile never get it.
    for n in 10..30 {
        assert_ne!(ok(&h.allocate(n, &[])).port(), rtp.port() + 1);
    }

    // A second Allocate, from another client socket, claims it.
    let second = h.allocate(2, &[Attribute::ReservationToken(token)]);
    let rtcp = ok(&second);
    assert_eq!(rtcp, SocketAddr::new(rtp.ip(), rtp.port() + 1));
    assert_eq!(second.token, None, "no new reservation");
    assert_eq!(h.server.allocation_count(), 22);
}

#[test]
fn a_token_used_twice_unknown_or_expired_is_508() {
    let mut h = H::new();
    let token = h
        .allocate(1, &[Attribute::EvenPort(true)])
        .token
        .expect("token");
    ok(&h.allocate(2, &[Attribute::ReservationToken(token)]));
    let again = h.allocate(3, &[Attribute::ReservationToken(token)]);
    assert_eq!((again.class, again.code), (Class::ErrorResponse, Some(508)));
    let unknown = h.allocate(4, &[Attribute::ReservationToken([0x5A; 8])]);
    assert_eq!(unknown.code, Some(508));

    // Expired: the reservation lasts about 30 s.
    let r = h.allocate(5, &[Attribute::EvenPort(true)]);
    let (rtp, token) = (ok(&r), r.token.expect("token"));
    h.now += RESERVATION_LIFETIME + Duration::from_secs(1);
    // The daemon's periodic sweep closes the reserved socket.
    drop(h.ports.expire(h.now));
    assert!(!h.net.taken(rtp.port() + 1), "released after expiry");
    let late = h.allocate(6, &[Attribute::ReservationToken(token)]);
    assert_eq!(late.code, Some(508));

    // A refused token costs no allocation and no quota.
    assert_eq!(h.server.allocation_count(), 3);
    for n in 7..12 {
        ok(&h.allocate(n, &[]));
    }
}

#[test]
fn token_with_even_port_or_an_address_family_is_400() {
    let mut h = H::new();
    let token = h
        .allocate(1, &[Attribute::EvenPort(true)])
        .token
        .expect("token");
    let t = Attribute::ReservationToken(token);
    for extra in [
        Attribute::EvenPort(false),
        Attribute::EvenPort(true),
        Attribute::RequestedAddressFamily(AddressFamily::V4),
        Attribute::AdditionalAddressFamily(AddressFamily::V6),
    ] {
        let r = h.allocate(2, &[t.clone(), extra.clone()]);
        assert_eq!(
            (r.class, r.code),
            (Class::ErrorResponse, Some(400)),
            "{extra:?}"
        );
    }
    let r = h.allocate(
        2,
        &[
            Attribute::EvenPort(true),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
        ],
    );
    assert_eq!(r.code, Some(400), "R with ADDITIONAL-ADDRESS-FAMILY");
    // The 400s left the reservation alone.
    ok(&h.allocate(2, &[t]));
}

#[test]
fn malformed_even_port_and_token_are_400() {
    let mut h = H::new();
    let cases: [(u16, &[u8]); 6] = [
        (EVEN_PORT, b""),
        (EVEN_PORT, b"\x80\x00"),
        (EVEN_PORT, b"\x80\x00\x00\x00"),
        (RESERVATION_TOKEN, b""),
        (RESERVATION_TOKEN, b"1234"),
        (RESERVATION_TOKEN, b"123456789"),
    ];
    for (n, (typ, value)) in (0u16..).zip(cases) {
        let r = h.allocate(n, &[Attribute::Other { typ, value }]);
        assert_eq!(r.code, Some(400), "type {typ:#06x}, {} bytes", value.len());
    }
    // ADDITIONAL-ADDRESS-FAMILY is only looked at for presence: garbage there is ignored
    // unless it meets a token or R.
    let junk = Attribute::Other {
        typ: ADDITIONAL_ADDRESS_FAMILY,
        value: b"??",
    };
    ok(&h.allocate(20, std::slice::from_ref(&junk)));
    assert_eq!(
        h.allocate(21, &[Attribute::EvenPort(true), junk]).code,
        Some(400)
    );
    // RFFU bits of EVEN-PORT are ignored (§18.6).
    let r = h.allocate(
        22,
        &[Attribute::Other {
            typ: EVEN_PORT,
            value: b"\x7F",
        }],
    );
    assert_eq!(ok(&r).port() % 2, 0);
    assert_eq!(r.token, None);
}

#[test]
fn retransmitted_r_allocate_repeats_the_token() {
    let mut h = H::new();
    let nonce = h.nonce(1);
    let tid = TransactionId([0x42; 12]);
    let bytes = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid)
        .attr(&UDP)
        .attr(&Attribute::EvenPort(true))
        .attr(&Attribute::Username(USER))
        .attr(&Attribute::Realm(REALM))
        .attr(&Attribute::Nonce(&nonce))
        .message_integrity(key().as_bytes())
        .fingerprint()
        .build()
        .expect("builds");
    let first = h.send_raw(1, &bytes, tid);
    let again = h.send_raw(1, &bytes, tid);
    assert_eq!(first.token, again.token);
    assert!(first.token.is_some());
    assert_eq!(h.ports.reserved(), 1, "one reservation, not two");
}

#[test]
fn ipv6_relay_token_needs_no_family() {
    let mut cfg = ServerConfig::new(REALM, [9; 32]);
    cfg.relay_families = vec![AddressFamily::V6];
    let mut h = H::with(cfg, "2001:db8::7");
    let v6 = Attribute::RequestedAddressFamily(AddressFamily::V6);
    let r = h.allocate(1, &[v6, Attribute::EvenPort(true)]);
    let rtp = ok(&r);
    assert!(rtp.is_ipv6());
    let rtcp = ok(&h.allocate(2, &[Attribute::ReservationToken(r.token.expect("token"))]));
    assert_eq!(rtcp, SocketAddr::new(rtp.ip(), rtp.port() + 1));
}

#[test]
fn grants_that_ignore_the_request_are_refused_and_released() {
    let mut h = H::new();
    // A daemon that drops the token: the client asked for a reservation, gets 500.
    h.tamper = Some(|g| RelayGrant {
        reservation_token: None,
        ..g
    });
    let r = h.allocate(1, &[Attribute::EvenPort(true)]);
    assert_eq!(r.code, Some(500));
    // A daemon that hands out an odd port for EVEN-PORT.
    h.tamper = Some(|g| RelayGrant {
        relay: SocketAddr::new(g.relay.ip(), g.relay.port() | 1),
        ..g
    });
    let r = h.allocate(2, &[Attribute::EvenPort(false)]);
    assert_eq!(r.code, Some(500));
    assert_eq!(h.server.allocation_count(), 0);
    // The first grant's socket was released; the second's relay address was made up, so
    // only the even socket the daemon really bound is left.
    assert_eq!(h.relays.len(), 1);
    // A token handed out without R is not passed on.
    h.tamper = Some(|g| RelayGrant {
        reservation_token: Some([1; 8]),
        ..g
    });
    let r = h.allocate(3, &[]);
    ok(&r);
    assert_eq!(r.token, None);
}
