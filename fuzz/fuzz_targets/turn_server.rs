//! Drives `umbra_turn::server::Server` with a fuzzer-chosen sequence of inputs from a few
//! client addresses (UDP and TCP), peers and the daemon, with arbitrary time steps.
//!
//! Inputs are a mix of raw bytes and well-formed requests the harness builds and signs
//! with the right (or a wrong) long-term key and the nonce the server last issued to that
//! client, so the fuzzer gets past authentication into Allocate / Refresh /
//! CreatePermission / ChannelBind / Send / ChannelData / peer data / relay answers / stream
//! close / timers.
//!
//! Invariants checked (beyond "no panic"):
//! - every byte string the server sends is a well-formed STUN or ChannelData message
//!   (padded on TCP), and only to a client address that sent something;
//! - one input yields at most a few outputs (no amplification), except timer expiry;
//! - the number of live allocations equals relays granted minus relays released, never
//!   exceeds the total quota, and a relay is never released twice or unless granted;
//! - packets leave only from live relay addresses, and never to internal addresses when
//!   the `DenyInternal` policy is on;
//! - `poll_timeout()` is always in the future after `handle_timeout(now)`;
//! - at the end, every pending relay request is answered, and once all lifetimes have
//!   passed every allocation is gone and released (nothing leaks), and every client can
//!   allocate again (per-user quotas and pending state were returned);
//! - the heap stays bounded: the peak live heap of one run is at most a fixed budget plus
//!   a small multiple of the input size, and everything is freed when the server drops.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use umbra_turn::credentials::rest;
use umbra_turn::server::policy::is_internal;
use umbra_turn::server::{
    AllowAll, DenyInternal, Output, RelayError, RelayGrant, RelayRequestId, RestAuthenticator,
    Server, ServerConfig, StaticAuthenticator,
};
use umbra_turn::{
    AddressFamily, Attribute, ChannelData, Class, LongTermKey, MessageBuilder, Method,
    Packet, PasswordAlgorithm, TransactionId, Transport, demux, userhash,
};

// ---------------------------------------------------------------------------------------
// Heap accounting.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap a whole run may use beyond its input-proportional share.
const HEAP_BUDGET: usize = 4 << 20;
/// Heap a run may use per input byte (outputs copy payloads; state is bounded by quotas).
const HEAP_PER_INPUT_BYTE: usize = 64;

// ---------------------------------------------------------------------------------------
// The fuzzer's vocabulary.

#[derive(Arbitrary, Debug)]
struct Setup {
    rest_auth: bool,
    negotiate_sha256: bool,
    deny_internal: bool,
    fingerprint: bool,
    software: bool,
    /// The daemon grants every relay request at once (as the real one does); otherwise
    /// only `Op::Answer` answers, in any order.
    auto_grant: bool,
    /// Before the fuzzed inputs, two UDP clients allocate, permit each other's relay and
    /// bind channel 0x4000 to it (a call in progress), so the fuzzer starts deep.
    bootstrap: bool,
    user_quota: u8,
    total_quota: u8,
    max_permissions: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct ClientRef {
    idx: u8,
    tcp: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PeerRef {
    /// A relay address this server granted (so relay-to-relay traffic happens).
    Relay(u8),
    /// One of a fixed list: public, private, loopback, IPv6, unspecified.
    Fixed(u8),
    /// Anything.
    V4([u8; 4], u16),
}

#[derive(Arbitrary, Debug)]
enum Req {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Binding,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum FAttr {
    Lifetime(u32),
    ShortLifetime(u8),
    TransportUdp,
    Transport(u8),
    Peer(PeerRef),
    Channel(u8),
    RawChannel(u16),
    EvenPort(bool),
    Token([u8; 8]),
    Family(bool),
    AdditionalFamily(bool),
    DontFragment,
    Data(Vec<u8>),
    Software(String),
    Other { typ: u16, value: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum NonceChoice {
    Latest,
    OtherClients(u8),
    Garbage(String),
    Missing,
}

#[derive(Arbitrary, Debug)]
struct Auth {
    user: u8,
    userhash: bool,
    sha256_integrity: bool,
    wrong_password: bool,
    wrong_realm: bool,
    nonce: NonceChoice,
    /// Which algorithm to pick when the server negotiates (and whether to send the lists).
    algorithm: Option<bool>,
    fingerprint: bool,
}

#[derive(Arbitrary, Debug)]
enum Answer {
    Grant { v6: bool, reuse: Option<u8>, token: bool },
    Refuse(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw {
        client: ClientRef,
        bytes: Vec<u8>,
    },
    Request {
        client: ClientRef,
        method: Req,
        tid: u8,
        attrs: Vec<FAttr>,
        auth: Option<Auth>,
    },
    Send {
        client: ClientRef,
        peer: PeerRef,
        data: Vec<u8>,
        extra: Vec<FAttr>,
    },
    ChannelData {
        client: ClientRef,
        channel: u8,
        data: Vec<u8>,
        pad: bool,
    },
    Peer {
        relay: u8,
        peer: PeerRef,
        data: Vec<u8>,
    },
    Answer {
        which: u8,
        answer: Answer,
    },
    Close {
        client: ClientRef,
    },
    Advance {
        secs: u16,
        millis: u16,
    },
    Timeout,
}

// ---------------------------------------------------------------------------------------
// The harness.

const REALM: &str = "umbra.fuzz";
const REST_SECRET: &[u8] = b"fuzz-rest-secret";
const UNIX_START: u64 = 1_700_000_000;

struct Harness {
    server: Server,
    now: Instant,
    deny_internal: bool,
    negotiates: bool,
    auto_grant: bool,
    /// (username, password) by index; the last is unknown to the server.
    users: Vec<(String, String)>,
    nonces: HashMap<(bool, SocketAddr), String>,
    clients_seen: HashSet<(Transport, SocketAddr)>,
    /// Relay requests the server asked for: id, family, the client that caused it.
    pending: Vec<(RelayRequestId, AddressFamily, (Transport, SocketAddr))>,
    /// The client whose packet is being handled.
    last_client: (Transport, SocketAddr),
    live: HashSet<SocketAddr>,
    granted: Vec<SocketAddr>,
    next_port: u16,
    total_quota: usize,
    tid_counter: u32,
    /// What happened, for `UMBRA_FUZZ_TRACE=1` (shows how deep the fuzzer gets).
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    ops: usize,
    challenges: usize,
    relay_requests: usize,
    allocations: usize,
    released: usize,
    to_peers: usize,
    data_to_clients: usize,
    error_codes: Vec<u16>,
}

fn client_addr(c: ClientRef) -> (Transport, SocketAddr) {
    let t = if c.tcp { Transport::Tcp } else { Transport::Udp };
    let a = match c.idx % 4 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 40000),
        1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 40001),
        2 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 5000),
        _ => SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)), 6000),
    };
    (t, a)
}

const FIXED_PEERS: &[&str] = &[
    "203.0.113.5:5000",
    "198.51.100.77:6000",
    "127.0.0.1:7000",
    "10.0.0.1:8000",
    "[2001:db8::1]:9000",
    "[::1]:9001",
    "0.0.0.0:0",
    "192.0.2.1:50001",
];

impl Harness {
    fn new(setup: &Setup, now: Instant) -> Harness {
        let mut config = ServerConfig::new(REALM, [9; 32]);
        config.user_quota = 1 + usize::from(setup.user_quota % 4);
        config.total_quota = 1 + usize::from(setup.total_quota % 8);
        config.max_permissions = 1 + usize::from(setup.max_permissions % 8);
        config.fingerprint = setup.fingerprint;
        if setup.software {
            config.software = Some("umbra-fuzz".into());
        }
        if setup.negotiate_sha256 {
            config.password_algorithms = vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];
        }
        let total_quota = config.total_quota;
        let (users, server) = if setup.rest_auth {
            let names = [
                rest::username(UNIX_START + 600, "a"),
                rest::username(UNIX_START + 1_000_000_000, "b"),
                rest::username(UNIX_START - 1, "expired"),
            ];
            let mut users: Vec<(String, String)> = names
                .iter()
                .map(|u| (u.clone(), rest::password(REST_SECRET, u)))
                .collect();
            users.push(("not-a-rest-user".into(), "x".into()));
            let auth = RestAuthenticator::new(REST_SECRET.to_vec(), now, UNIX_START);
            let server = if setup.deny_internal {
                Server::new(config, auth, DenyInternal, now)
            } else {
                Server::new(config, auth, AllowAll, now)
            };
            (users, server)
        } else {
            let users = vec![
                ("alice".to_string(), "pw-a".to_string()),
                ("bob".to_string(), "pw-b".to_string()),
                ("mallory".to_string(), "unknown".to_string()),
            ];
            let auth = StaticAuthenticator::new()
                .with_user("alice", "pw-a")
                .with_user("bob", "pw-b");
            let server = if setup.deny_internal {
                Server::new(config, auth, DenyInternal, now)
            } else {
                Server::new(config, auth, AllowAll, now)
            };
            (users, server)
        };
        Harness {
            server,
            now,
            deny_internal: setup.deny_internal,
            negotiates: setup.negotiate_sha256,
            auto_grant: setup.auto_grant,
            users,
            nonces: HashMap::new(),
            clients_seen: HashSet::new(),
            pending: Vec::new(),
            last_client: client_addr(ClientRef { idx: 0, tcp: false }),
            live: HashSet::new(),
            granted: Vec::new(),
            next_port: 50_000,
            total_quota,
            tid_counter: 0,
            stats: Stats::default(),
        }
    }

    fn peer(&self, p: PeerRef) -> SocketAddr {
        match p {
            PeerRef::Relay(i) if !self.granted.is_empty() => {
                self.granted[usize::from(i) % self.granted.len()]
            }
            PeerRef::Relay(i) | PeerRef::Fixed(i) => FIXED_PEERS[usize::from(i) % FIXED_PEERS.len()]
                .parse()
                .expect("literal"),
            PeerRef::V4(ip, port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
        }
    }

    fn attribute<'a>(&self, a: &'a FAttr) -> Attribute<'a> {
        match a {
            FAttr::Lifetime(s) => Attribute::Lifetime(*s),
            FAttr::ShortLifetime(s) => Attribute::Lifetime(u32::from(*s % 4) * 300),
            FAttr::TransportUdp => Attribute::RequestedTransport(17),
            FAttr::Transport(t) => Attribute::RequestedTransport(*t),
            FAttr::Peer(p) => Attribute::XorPeerAddress(self.peer(*p)),
            FAttr::Channel(c) => Attribute::ChannelNumber(0x4000 + u16::from(*c % 8)),
            FAttr::RawChannel(c) => Attribute::ChannelNumber(*c),
            FAttr::EvenPort(r) => Attribute::EvenPort(*r),
            FAttr::Token(t) => Attribute::ReservationToken(*t),
            FAttr::Family(v6) => Attribute::RequestedAddressFamily(if *v6 {
                AddressFamily::V6
            } else {
                AddressFamily::V4
            }),
            FAttr::AdditionalFamily(v6) => Attribute::AdditionalAddressFamily(if *v6 {
                AddressFamily::V6
            } else {
                AddressFamily::V4
            }),
            FAttr::DontFragment => Attribute::DontFragment,
            FAttr::Data(d) => Attribute::Data(d),
            FAttr::Software(s) => Attribute::Software(s),
            FAttr::Other { typ, value } => {
                // Keep typed attributes typed: an `Other` with a known type number would
                // not encode the way the builder expects.
                match Attribute::decode(*typ, value, &TransactionId([0; 12])) {
                    Ok(Attribute::Other { .. }) => Attribute::Other { typ: *typ, value },
                    _ => Attribute::Other {
                        typ: 0xC000 | (*typ & 0x0FFF),
                        value,
                    },
                }
            }
        }
    }

    fn tid(&mut self, seed: u8) -> TransactionId {
        // A few repeated ids (retransmissions) and otherwise unique ones.
        let mut t = [0u8; 12];
        if seed < 32 {
            t[0] = seed;
        } else {
            self.tid_counter += 1;
            t[..4].copy_from_slice(&self.tid_counter.to_be_bytes());
            t[11] = 0xff;
        }
        TransactionId(t)
    }

    fn build_request(
        &mut self,
        client: ClientRef,
        method: Method,
        tid: u8,
        attrs: &[FAttr],
        auth: Option<&Auth>,
    ) -> Option<Vec<u8>> {
        let tid = self.tid(tid);
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        for a in attrs {
            b = b.attr(&self.attribute(a));
        }
        if let Some(auth) = auth {
            let (user, pass) = self.users[usize::from(auth.user) % self.users.len()].clone();
            let realm = if auth.wrong_realm { "evil" } else { REALM };
            if auth.userhash {
                b = b.attr(&Attribute::UserHash(userhash(&user, realm)));
            } else {
                b = b.attr(&Attribute::Username(&user));
            }
            b = b.attr(&Attribute::Realm(realm));
            let (_, addr) = client_addr(client);
            let nonce = match &auth.nonce {
                NonceChoice::Latest => self.nonces.get(&(client.tcp, addr)).cloned(),
                NonceChoice::OtherClients(i) => {
                    let (_, other) = client_addr(ClientRef {
                        idx: *i,
                        tcp: i & 0x80 != 0,
                    });
                    self.nonces.get(&(i & 0x80 != 0, other)).cloned()
                }
                NonceChoice::Garbage(s) => Some(s.clone()),
                NonceChoice::Missing => None,
            };
            if let Some(n) = &nonce {
                b = b.attr(&Attribute::Nonce(n));
            }
            let mut algorithm = PasswordAlgorithm::Md5;
            if self.negotiates
                && let Some(sha) = auth.algorithm
            {
                algorithm = if sha {
                    PasswordAlgorithm::Sha256
                } else {
                    PasswordAlgorithm::Md5
                };
                b = b
                    .attr(&Attribute::PasswordAlgorithms(vec![
                        PasswordAlgorithm::Sha256,
                        PasswordAlgorithm::Md5,
                    ]))
                    .attr(&Attribute::PasswordAlgorithm(algorithm));
            }
            let pass = if auth.wrong_password {
                format!("{pass}!")
            } else {
                pass
            };
            let key = LongTermKey::derive(algorithm, &user, realm, &pass)?;
            b = if auth.sha256_integrity {
                b.message_integrity_sha256(key.as_bytes())
            } else {
                b.message_integrity(key.as_bytes())
            };
            if auth.fingerprint {
                b = b.fingerprint();
            }
        }
        b.build().ok()
    }

    /// Drains outputs, checking each; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(out) = self.server.poll_output() {
            n += 1;
            match out {
                Output::SendToClient {
                    transport,
                    client,
                    bytes,
                } => {
                    assert!(
                        self.clients_seen.contains(&(transport, client)),
                        "server sent to a client that never spoke"
                    );
                    match demux(&bytes) {
                        Ok(Packet::Stun(msg)) => {
                            assert!(
                                msg.class() != Class::Request,
                                "server sent a request to a client"
                            );
                            if msg.class() == Class::Indication {
                                self.stats.data_to_clients += 1;
                            }
                            if msg.class() == Class::ErrorResponse {
                                let code = msg
                                    .error_code()
                                    .expect("server error code must decode")
                                    .expect("error response without ERROR-CODE");
                                self.stats.error_codes.push(code.code);
                                if code.code == 401 || code.code == 438 {
                                    self.stats.challenges += 1;
                                    let nonce = msg
                                        .nonce()
                                        .expect("nonce decodes")
                                        .expect("401/438 without NONCE");
                                    assert!(msg.realm().expect("realm decodes").is_some());
                                    self.nonces.insert(
                                        (transport == Transport::Tcp, client),
                                        nonce.to_string(),
                                    );
                                }
                            }
                        }
                        Ok(Packet::ChannelData(_)) => {
                            self.stats.data_to_clients += 1;
                            if transport == Transport::Tcp {
                                assert_eq!(bytes.len() % 4, 0, "unpadded ChannelData on TCP");
                            }
                        }
                        Err(e) => panic!("server sent a malformed message: {e:?}"),
                    }
                }
                Output::SendFromRelay { relay, peer, .. } => {
                    self.stats.to_peers += 1;
                    assert!(self.live.contains(&relay), "sent from a relay not granted");
                    if self.deny_internal {
                        assert!(!is_internal(peer.ip()), "relayed to an internal address");
                    }
                }
                Output::AllocateRelay {
                    request, family, ..
                } => {
                    assert!(
                        self.pending.iter().all(|(r, _, _)| *r != request),
                        "request id reused"
                    );
                    self.pending.push((request, family, self.last_client));
                    self.stats.relay_requests += 1;
                }
                Output::ReleaseRelay { relay } => {
                    self.stats.released += 1;
                    assert!(
                        self.live.remove(&relay),
                        "released a relay that is not live (double release?)"
                    );
                }
                _ => {}
            }
        }
        n
    }

    fn check(&mut self) {
        assert_eq!(
            self.server.allocation_count(),
            self.live.len(),
            "allocations != relays granted - released"
        );
        assert!(self.server.allocation_count() <= self.total_quota);
        if let Some(t) = self.server.poll_timeout() {
            // Timers due now or earlier must be handled by handle_timeout.
            if t <= self.now {
                self.server.handle_timeout(self.now);
                self.drain();
                assert_eq!(self.server.allocation_count(), self.live.len());
                if let Some(t2) = self.server.poll_timeout() {
                    assert!(t2 > self.now, "poll_timeout in the past after handle_timeout");
                }
            }
        }
    }

    fn client_packet(&mut self, client: ClientRef, bytes: &[u8]) {
        let (t, a) = client_addr(client);
        self.clients_seen.insert((t, a));
        self.last_client = (t, a);
        let r = self.server.handle_packet(self.now, t, a, bytes);
        if let Err(umbra_turn::server::Discarded::Encode(e)) = r {
            panic!("server could not encode its answer to a {}-byte packet: {e}", bytes.len());
        }
    }

    fn answer(&mut self, which: u8, answer: &Answer) {
        if self.pending.is_empty() {
            return;
        }
        let (request, family, _) = self.pending.remove(usize::from(which) % self.pending.len());
        let result = match answer {
            Answer::Refuse(k) => Err(match k % 4 {
                0 => RelayError::InsufficientCapacity,
                1 => RelayError::FamilyNotSupported,
                2 => RelayError::QuotaReached,
                _ => RelayError::Internal,
            }),
            Answer::Grant { v6, reuse, token } => {
                let relay = match reuse {
                    Some(i) if !self.granted.is_empty() => {
                        self.granted[usize::from(*i) % self.granted.len()]
                    }
                    _ => {
                        self.next_port = self.next_port.wrapping_add(1);
                        // Mostly the family asked for; sometimes the other one.
                        let v6 = if *v6 { family == AddressFamily::V4 } else { family == AddressFamily::V6 };
                        if v6 {
                            SocketAddr::new(
                                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xff)),
                                self.next_port,
                            )
                        } else {
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), self.next_port)
                        }
                    }
                };
                Ok(RelayGrant {
                    relay,
                    reservation_token: token.then_some([7; 8]),
                })
            }
        };
        let before = self.server.allocation_count();
        let granted_relay = result.as_ref().ok().map(|g| g.relay);
        let was_live = granted_relay.is_some_and(|r| self.live.contains(&r));
        if let Some(r) = granted_relay
            && !was_live
        {
            self.live.insert(r);
        }
        let r = self.server.relay_allocated(self.now, request, result);
        assert!(
            !matches!(r, Err(umbra_turn::server::Discarded::UnknownRelayRequest)),
            "a request id the server asked for was unknown"
        );
        self.drain();
        let after = self.server.allocation_count();
        if let Some(relay) = granted_relay {
            if after == before + 1 {
                assert!(!was_live, "server accepted a relay address already in use");
                assert!(self.live.contains(&relay));
                self.granted.push(relay);
                self.stats.allocations += 1;
            } else {
                assert_eq!(after, before);
                if !was_live {
                    // Refused (or released at once): the daemon closes that socket itself.
                    self.live.remove(&relay);
                }
            }
        } else {
            assert_eq!(after, before, "a refused relay created an allocation");
        }
    }

    fn run(&mut self, op: &Op) {
        let mut outputs_allowed = 2;
        match op {
            Op::Raw { client, bytes } => self.client_packet(*client, bytes),
            Op::Request {
                client,
                method,
                tid,
                attrs,
                auth,
            } => {
                let method = match method {
                    Req::Allocate => Method::ALLOCATE,
                    Req::Refresh => Method::REFRESH,
                    Req::CreatePermission => Method::CREATE_PERMISSION,
                    Req::ChannelBind => Method::CHANNEL_BIND,
                    Req::Binding => Method::BINDING,
                    Req::Other(m) => match Method::new(*m & 0x0FFF) {
                        Some(m) => m,
                        None => return,
                    },
                };
                if let Some(bytes) = self.build_request(*client, method, *tid, attrs, auth.as_ref()) {
                    self.client_packet(*client, &bytes);
                }
            }
            Op::Send {
                client,
                peer,
                data,
                extra,
            } => {
                let tid = self.tid(255);
                let peer = self.peer(*peer);
                let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid)
                    .attr(&Attribute::XorPeerAddress(peer))
                    .attr(&Attribute::Data(data));
                for a in extra {
                    b = b.attr(&self.attribute(a));
                }
                if let Ok(bytes) = b.build() {
                    self.client_packet(*client, &bytes);
                }
            }
            Op::ChannelData {
                client,
                channel,
                data,
                pad,
            } => {
                let cd = ChannelData {
                    channel: 0x4000 + u16::from(*channel % 8),
                    data,
                };
                if let Ok(bytes) = cd.encode(*pad || client.tcp) {
                    self.client_packet(*client, &bytes);
                }
            }
            Op::Peer { relay, peer, data } => {
                let relay = if self.granted.is_empty() {
                    self.peer(PeerRef::Fixed(*relay))
                } else {
                    self.granted[usize::from(*relay) % self.granted.len()]
                };
                let peer = self.peer(*peer);
                let r = self.server.handle_relayed(self.now, relay, peer, data);
                if let Err(umbra_turn::server::Discarded::Encode(e)) = r {
                    panic!("could not encode a Data indication for {} bytes: {e}", data.len());
                }
            }
            Op::Answer { which, answer } => {
                self.answer(*which, answer);
            }
            Op::Close { client } => {
                let (t, a) = client_addr(*client);
                self.server.close_client(t, a);
                self.pending.retain(|(_, _, c)| *c != (t, a));
                // A pending Allocate is forgotten: its answer will be refused as unknown.
                outputs_allowed = 1;
            }
            Op::Advance { secs, millis } => {
                self.now += Duration::from_secs(u64::from(*secs % 4000))
                    + Duration::from_millis(u64::from(*millis % 1000));
                outputs_allowed = usize::MAX;
            }
            Op::Timeout => {
                self.server.handle_timeout(self.now);
                outputs_allowed = usize::MAX;
            }
        }
        let n = self.drain();
        assert!(n <= outputs_allowed, "{n} outputs for one input {op:?}");
        self.check();
        if self.auto_grant {
            while !self.pending.is_empty() {
                let grant = Answer::Grant {
                    v6: false,
                    reuse: None,
                    token: false,
                };
                self.answer(0, &grant);
                self.check();
            }
        }
    }

    fn good_auth(&self, idx: u8) -> Auth {
        // Static: alice and bob. REST: only user 1 never expires.
        let user = if self.users.len() == 4 { 1 } else { idx % 2 };
        Auth {
            user,
            userhash: false,
            sha256_integrity: false,
            wrong_password: false,
            wrong_realm: false,
            nonce: NonceChoice::Latest,
            algorithm: None,
            fingerprint: false,
        }
    }

    fn bootstrap(&mut self) {
        let clients = [ClientRef { idx: 0, tcp: false }, ClientRef { idx: 1, tcp: false }];
        for c in clients {
            let auth = self.good_auth(c.idx);
            self.run(&Op::Request {
                client: c,
                method: Req::Allocate,
                tid: 100,
                attrs: vec![FAttr::TransportUdp],
                auth: None,
            });
            self.run(&Op::Request {
                client: c,
                method: Req::Allocate,
                tid: 101,
                attrs: vec![FAttr::TransportUdp],
                auth: Some(auth),
            });
            while !self.pending.is_empty() {
                let grant = Answer::Grant {
                    v6: false,
                    reuse: None,
                    token: false,
                };
                self.answer(0, &grant);
                self.check();
            }
        }
        for (i, c) in clients.into_iter().enumerate() {
            let other = PeerRef::Relay(1 - i as u8);
            for (method, attrs) in [
                (Req::CreatePermission, vec![FAttr::Peer(other)]),
                (Req::ChannelBind, vec![FAttr::Channel(0), FAttr::Peer(other)]),
            ] {
                let auth = self.good_auth(c.idx);
                self.run(&Op::Request {
                    client: c,
                    method,
                    tid: 102,
                    attrs,
                    auth: Some(auth),
                });
            }
        }
    }

    /// Answers everything, lets every lifetime run out, and checks nothing is left.
    fn finish(&mut self) {
        // Answer every request still pending (those forgotten through close_client were
        // dropped from the list) with a refusal.
        while let Some((request, _, _)) = self.pending.pop() {
            let r = self
                .server
                .relay_allocated(self.now, request, Err(RelayError::Internal));
            assert!(
                !matches!(r, Err(umbra_turn::server::Discarded::UnknownRelayRequest)),
                "a pending relay request was forgotten"
            );
            self.drain();
        }
        self.now += Duration::from_secs(2 * 3600 + 1);
        self.server.handle_timeout(self.now);
        self.drain();
        assert_eq!(self.server.allocation_count(), 0, "allocations outlived their lifetime");
        assert!(self.live.is_empty(), "relays never released: {:?}", self.live);
        assert!(self.server.poll_timeout().is_none_or(|t| t > self.now));

        // Every client can allocate again: no quota or pending state leaked. Only the
        // static users alice and bob are known; REST user index 1 never expires here.
        let known: Vec<u8> = if self.users.len() == 4 { vec![1] } else { vec![0, 1] };
        let mut per_user = HashMap::<u8, usize>::new();
        for idx in 0..4u8 {
            for tcp in [false, true] {
                let client = ClientRef { idx, tcp };
                let user = known[usize::from(idx) % known.len()];
                let used = per_user.entry(user).or_default();
                // Stay inside the quotas (the pending requests count against both).
                if self.pending.len() >= self.total_quota {
                    return;
                }
                let quota = self.server.config().user_quota;
                if *used >= quota {
                    continue;
                }
                *used += 1;
                let (t, a) = client_addr(client);
                self.clients_seen.insert((t, a));
                self.last_client = (t, a);
                let challenge = self
                    .build_request(client, Method::ALLOCATE, 200, &[FAttr::TransportUdp], None)
                    .expect("builds");
                let _ = self.server.handle_packet(self.now, t, a, &challenge);
                self.drain();
                let auth = Auth {
                    user,
                    userhash: false,
                    sha256_integrity: false,
                    wrong_password: false,
                    wrong_realm: false,
                    nonce: NonceChoice::Latest,
                    algorithm: None,
                    fingerprint: false,
                };
                let req = self
                    .build_request(client, Method::ALLOCATE, 201, &[FAttr::TransportUdp], Some(&auth))
                    .expect("builds");
                let before = self.pending.len();
                let _ = self.server.handle_packet(self.now, t, a, &req);
                self.drain();
                assert_eq!(
                    self.pending.len(),
                    before + 1,
                    "a clean client could not allocate after everything expired"
                );
            }
        }
    }
}

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("UMBRA_FUZZ_TRACE").is_some())
}

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let now = Instant::now();
    let mut h = Harness::new(&setup, now);
    if setup.bootstrap {
        h.bootstrap();
    }
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.stats.ops += 1;
        h.run(&op);
    }
    if trace() {
        eprintln!("turn_server run: {:?}", h.stats);
    }
    h.finish();
}

fuzz_target!(|data: &[u8]| {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    run(data);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let budget = HEAP_BUDGET + HEAP_PER_INPUT_BYTE * data.len();
    assert!(peak <= budget, "peak heap {peak} bytes > budget {budget} for {} input bytes", data.len());
    let left = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    assert_eq!(left, 0, "{left} heap bytes still live after the server was dropped");
});

