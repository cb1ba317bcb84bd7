//! The sans-IO TURN client (RFC 8656 §6–§12, client side).
//!
//! Call [`Client::allocate`], then drain [`Client::poll_transmit`] (bytes for the server)
//! and [`Client::poll_event`]; feed the server's packets to [`Client::handle_packet`] and
//! wake at [`Client::poll_timeout`] to call [`Client::handle_timeout`], which retransmits
//! requests and refreshes the allocation, permissions and channels before they expire.
//!
//! Files: `transaction` (retransmission timers), `event` (events and errors), and this
//! file (requests, the 401/438 credential dance, responses, data).

mod event;
mod transaction;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use event::{ClientError, ClientEvent};

use crate::attribute::{AddressFamily, Attribute, ErrorCode, PROTOCOL_UDP, PasswordAlgorithm};
use crate::builder::MessageBuilder;
use crate::channel_data::{CHANNEL_MAX, CHANNEL_MIN, ChannelData};
use crate::credentials::LongTermKey;
use crate::demux::{Packet, Transport, demux};
use crate::header::{Class, Method, TransactionId};
use crate::integrity::{IntegrityKind, hmac_sha256};
use crate::message::Message;
use crate::server::nonce_signals_password_algorithms;
use transaction::{RetransmitTimer, TimerAction};

/// How long before expiry the client refreshes (capped at half the lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Permission lifetime (RFC 8656 §9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Times one request is re-sent after 401/438 before giving up.
const MAX_AUTH_RETRIES: u8 = 2;

/// Settings of a [`Client`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Transport to the server (decides retransmission and ChannelData padding).
    pub transport: Transport,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password (already prepared with OpaqueString if non-ASCII).
    pub password: String,
    /// SOFTWARE to send, if any.
    pub software: Option<String>,
    /// LIFETIME to ask for in Allocate and Refresh (`None`: server default).
    pub lifetime: Option<u32>,
    /// Relay address family to request.
    pub family: AddressFamily,
    /// Initial retransmission timeout over UDP.
    pub rto: Duration,
}

impl ClientConfig {
    /// Defaults: IPv4 relay, server-default lifetime, 500 ms RTO.
    pub fn new(
        transport: Transport,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            transport,
            username: username.into(),
            password: password.into(),
            software: None,
            lifetime: None,
            family: AddressFamily::V4,
            rto: Duration::from_millis(500),
        }
    }
}

/// Credentials learned from a 401.
#[derive(Clone)]
struct AuthState {
    realm: String,
    nonce: String,
    key: LongTermKey,
    kind: IntegrityKind,
    /// PASSWORD-ALGORITHMS to echo, and the chosen one, when the server negotiates.
    algorithms: Option<(Vec<PasswordAlgorithm>, PasswordAlgorithm)>,
}

/// A request that can be rebuilt (with new credentials) after 401/438.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh(Option<u32>),
    CreatePermission(Vec<SocketAddr>),
    ChannelBind(u16, SocketAddr),
}

impl Request {
    fn method(&self) -> Method {
        match self {
            Request::Allocate => Method::ALLOCATE,
            Request::Refresh(_) => Method::REFRESH,
            Request::CreatePermission(_) => Method::CREATE_PERMISSION,
            Request::ChannelBind(..) => Method::CHANNEL_BIND,
        }
    }
}

struct Transaction {
    request: Request,
    bytes: Vec<u8>,
    timer: RetransmitTimer,
    auth_retries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Allocating,
    Allocated {
        relay: SocketAddr,
        expires: Instant,
        refresh_at: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    refresh_at: Option<Instant>,
    in_flight: bool,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Option<Instant>,
    in_flight: bool,
}

/// The TURN client state machine for one allocation on one server.
pub struct Client {
    config: ClientConfig,
    seed: [u8; 32],
    counter: u64,
    auth: Option<AuthState>,
    state: State,
    transactions: HashMap<TransactionId, Transaction>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    by_channel: HashMap<u16, SocketAddr>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A client with no allocation. `seed` (random bytes from the caller) makes the
    /// transaction ids unpredictable without this crate touching an RNG.
    pub fn new(config: ClientConfig, seed: [u8; 32]) -> Client {
        Client {
            config,
            seed,
            counter: 0,
            auth: None,
            state: State::Idle,
            transactions: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The relayed address, once allocated.
    pub fn relay_address(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relay, .. } => Some(relay),
            _ => None,
        }
    }

    /// The channel bound (and confirmed) for `peer`.
    pub fn channel_for(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.bound)
            .map(|c| c.number)
    }

    /// Next bytes to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Starts an allocation. The first Allocate carries no credentials; the server's 401
    /// supplies realm and nonce and the client retries with them.
    pub fn allocate(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.state != State::Idle {
            return Err(ClientError::AlreadyAllocating);
        }
        self.state = State::Allocating;
        self.start(now, Request::Allocate, 0)
    }

    /// Refreshes the allocation now with the configured lifetime.
    pub fn refresh(&mut self, now: Instant) -> Result<(), ClientError> {
        self.require_allocation()?;
        self.start(now, Request::Refresh(self.config.lifetime), 0)
    }

    /// Deletes the allocation (Refresh with LIFETIME 0).
    pub fn release(&mut self, now: Instant) -> Result<(), ClientError> {
        self.require_allocation()?;
        self.start(now, Request::Refresh(Some(0)), 0)
    }

    /// Installs permissions for the IPs of `peers` (ports are ignored by TURN).
    pub fn create_permission(
        &mut self,
        now: Instant,
        peers: &[SocketAddr],
    ) -> Result<(), ClientError> {
        self.require_allocation()?;
        for p in peers {
            let e = self.permissions.entry(p.ip()).or_insert(Permission {
                refresh_at: None,
                in_flight: false,
            });
            e.in_flight = true;
        }
        self.start(now, Request::CreatePermission(peers.to_vec()), 0)
    }

    /// Binds a channel to `peer` (also installing a permission) and returns its number.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, ClientError> {
        self.require_allocation()?;
        let number = match self.channels.get(&peer) {
            Some(c) => c.number,
            None => (CHANNEL_MIN..=CHANNEL_MAX)
                .find(|n| !self.by_channel.contains_key(n))
                .ok_or(ClientError::NoFreeChannel)?,
        };
        let ch = self.channels.entry(peer).or_insert(Channel {
            number,
            bound: false,
            refresh_at: None,
            in_flight: false,
        });
        ch.in_flight = true;
        self.by_channel.insert(number, peer);
        self.permissions.entry(peer.ip()).or_insert(Permission {
            refresh_at: None,
            in_flight: true,
        });
        self.start(now, Request::ChannelBind(number, peer), 0)?;
        Ok(number)
    }

    /// Sends `data` to `peer` through the relay: as ChannelData if a channel is bound,
    /// otherwise as a Send indication. A permission must have been requested first.
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), ClientError> {
        self.require_allocation()?;
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(ClientError::NoPermission);
        }
        let bytes = match self.channel_for(peer) {
            Some(channel) => {
                ChannelData { channel, data }.encode(self.config.transport.is_stream())?
            }
            None => {
                let tid = self.next_tid();
                let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid)
                    .attr(&Attribute::XorPeerAddress(peer))
                    .attr(&Attribute::Data(data));
                b = b.fingerprint();
                b.build()?
            }
        };
        self.transmits.push_back(bytes);
        Ok(())
    }

    fn require_allocation(&self) -> Result<(), ClientError> {
        match self.state {
            State::Allocated { .. } => Ok(()),
            _ => Err(ClientError::NotAllocated),
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mac = hmac_sha256(
            &self.seed,
            &[b"umbra-turn tid", &self.counter.to_be_bytes()],
        );
        let mut t = [0u8; 12];
        t.copy_from_slice(&mac[..12]);
        TransactionId(t)
    }

    fn build(&self, tid: TransactionId, request: &Request) -> Result<Vec<u8>, ClientError> {
        let mut b = MessageBuilder::new(Class::Request, request.method(), tid);
        match request {
            Request::Allocate => {
                b = b.attr(&Attribute::RequestedTransport(PROTOCOL_UDP));
                if let Some(l) = self.config.lifetime {
                    b = b.attr(&Attribute::Lifetime(l));
                }
                if self.config.family != AddressFamily::V4 {
                    b = b.attr(&Attribute::RequestedAddressFamily(self.config.family));
                }
            }
            Request::Refresh(lifetime) => {
                if let Some(l) = lifetime {
                    b = b.attr(&Attribute::Lifetime(*l));
                }
            }
            Request::CreatePermission(peers) => {
                for p in peers {
                    b = b.attr(&Attribute::XorPeerAddress(*p));
                }
            }
            Request::ChannelBind(n, peer) => {
                b = b
                    .attr(&Attribute::ChannelNumber(*n))
                    .attr(&Attribute::XorPeerAddress(*peer));
            }
        }
        if let Some(s) = &self.config.software {
            b = b.attr(&Attribute::Software(s));
        }
        if let Some(a) = &self.auth {
            b = b
                .attr(&Attribute::Username(&self.config.username))
                .attr(&Attribute::Realm(&a.realm))
                .attr(&Attribute::Nonce(&a.nonce));
            if let Some((list, chosen)) = &a.algorithms {
                b = b
                    .attr(&Attribute::PasswordAlgorithms(list.clone()))
                    .attr(&Attribute::PasswordAlgorithm(*chosen));
            }
            b = b.integrity(a.kind, a.key.as_bytes());
        }
        Ok(b.fingerprint().build()?)
    }

    fn start(
        &mut self,
        now: Instant,
        request: Request,
        auth_retries: u8,
    ) -> Result<(), ClientError> {
        let tid = self.next_tid();
        let bytes = self.build(tid, &request)?;
        self.transmits.push_back(bytes.clone());
        let timer = RetransmitTimer::new(now, self.config.transport.is_stream(), self.config.rto);
        self.transactions.insert(
            tid,
            Transaction {
                request,
                bytes,
                timer,
                auth_retries,
            },
        );
        Ok(())
    }

    /// Handles a packet received from the server.
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ClientError> {
        match demux(bytes)? {
            Packet::ChannelData(cd) => {
                let peer = *self
                    .by_channel
                    .get(&cd.channel)
                    .ok_or(ClientError::UnknownChannel)?;
                self.events.push_back(ClientEvent::Data {
                    peer,
                    data: cd.data.to_vec(),
                });
                Ok(())
            }
            Packet::Stun(msg) => match msg.class() {
                Class::Indication if msg.method() == Method::DATA => {
                    let peer = msg.xor_peer_address()?.ok_or(ClientError::Unexpected)?;
                    let data = msg.data()?.ok_or(ClientError::Unexpected)?;
                    self.events.push_back(ClientEvent::Data {
                        peer,
                        data: data.to_vec(),
                    });
                    Ok(())
                }
                Class::SuccessResponse | Class::ErrorResponse => self.on_response(now, &msg),
                _ => Err(ClientError::Unexpected),
            },
        }
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) -> Result<(), ClientError> {
        let tid = msg.transaction_id();
        let tx = self
            .transactions
            .get(&tid)
            .ok_or(ClientError::UnknownTransaction)?;
        if tx.request.method() != msg.method() {
            return Err(ClientError::UnknownTransaction);
        }
        let code = if msg.class() == Class::ErrorResponse {
            Some(
                msg.error_code()?
                    .map_or(ErrorCode::SERVER_ERROR, |e| e.code),
            )
        } else {
            None
        };
        // Responses must be signed once we have credentials, except the challenges that
        // carry new credentials (401 without integrity, 438).
        let challenge = matches!(
            code,
            Some(ErrorCode::UNAUTHENTICATED | ErrorCode::STALE_NONCE)
        );
        if let Some(a) = &self.auth
            && !challenge
            && msg.verify_integrity(a.key.as_bytes()).is_err()
        {
            return Err(ClientError::Integrity);
        }
        let Some(tx) = self.transactions.remove(&tid) else {
            return Err(ClientError::UnknownTransaction);
        };
        match code {
            None => self.on_success(now, tx.request, msg),
            Some(c) if challenge && tx.auth_retries < MAX_AUTH_RETRIES => {
                self.learn_credentials(msg, c)?;
                self.start(now, tx.request, tx.auth_retries + 1)
            }
            Some(c) => {
                self.on_failure(&tx.request, Some(c));
                Ok(())
            }
        }
    }

    /// Takes REALM / NONCE / PASSWORD-ALGORITHMS from a 401 or 438 and derives the key.
    fn learn_credentials(&mut self, msg: &Message<'_>, code: u16) -> Result<(), ClientError> {
        let nonce = msg.nonce()?.ok_or(ClientError::Unexpected)?.to_owned();
        let realm = match (msg.realm()?, &self.auth) {
            (Some(r), _) => r.to_owned(),
            (None, Some(a)) if code == ErrorCode::STALE_NONCE => a.realm.clone(),
            _ => return Err(ClientError::Unexpected),
        };
        let offered = msg.password_algorithms()?;
        let (algorithm, algorithms, kind) = match offered {
            Some(list) if nonce_signals_password_algorithms(&nonce) => {
                let chosen = list
                    .iter()
                    .copied()
                    .find(|a| matches!(a, PasswordAlgorithm::Sha256 | PasswordAlgorithm::Md5))
                    .ok_or(ClientError::Unexpected)?;
                (chosen, Some((list, chosen)), IntegrityKind::Sha256)
            }
            _ => (PasswordAlgorithm::Md5, None, IntegrityKind::Sha1),
        };
        let key = LongTermKey::derive(
            algorithm,
            &self.config.username,
            &realm,
            &self.config.password,
        )
        .ok_or(ClientError::Unexpected)?;
        self.auth = Some(AuthState {
            realm,
            nonce,
            key,
            kind,
            algorithms,
        });
        Ok(())
    }

    fn refresh_point(now: Instant, lifetime: Duration) -> Instant {
        now + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
    }

    fn on_success(
        &mut self,
        now: Instant,
        request: Request,
        msg: &Message<'_>,
    ) -> Result<(), ClientError> {
        match request {
            Request::Allocate => {
                let relay = msg.xor_relayed_address()?.ok_or(ClientError::Unexpected)?;
                let lifetime = Duration::from_secs(u64::from(msg.lifetime()?.unwrap_or(600)));
                let mapped = msg.xor_mapped_address()?;
                self.state = State::Allocated {
                    relay,
                    expires: now + lifetime,
                    refresh_at: Self::refresh_point(now, lifetime),
                };
                self.events.push_back(ClientEvent::Allocated {
                    relay,
                    mapped,
                    lifetime,
                });
            }
            Request::Refresh(_) => {
                let secs = msg.lifetime()?.unwrap_or(0);
                if secs == 0 {
                    self.end_allocation();
                } else if let State::Allocated { relay, .. } = self.state {
                    let lifetime = Duration::from_secs(u64::from(secs));
                    self.state = State::Allocated {
                        relay,
                        expires: now + lifetime,
                        refresh_at: Self::refresh_point(now, lifetime),
                    };
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            Request::CreatePermission(peers) => {
                let at = Self::refresh_point(now, PERMISSION_LIFETIME);
                let mut ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
                ips.dedup();
                for ip in &ips {
                    self.permissions.insert(
                        *ip,
                        Permission {
                            refresh_at: Some(at),
                            in_flight: false,
                        },
                    );
                }
                self.events
                    .push_back(ClientEvent::PermissionCreated { peers: ips });
            }
            Request::ChannelBind(number, peer) => {
                let at = Self::refresh_point(now, CHANNEL_LIFETIME);
                self.channels.insert(
                    peer,
                    Channel {
                        number,
                        bound: true,
                        refresh_at: Some(at),
                        in_flight: false,
                    },
                );
                let perm_at = Self::refresh_point(now, PERMISSION_LIFETIME);
                self.permissions.insert(
                    peer.ip(),
                    Permission {
                        refresh_at: Some(perm_at),
                        in_flight: false,
                    },
                );
                self.events.push_back(ClientEvent::ChannelBound {
                    channel: number,
                    peer,
                });
            }
        }
        Ok(())
    }

    fn on_failure(&mut self, request: &Request, code: Option<u16>) {
        self.events.push_back(ClientEvent::RequestFailed {
            method: request.method(),
            code,
        });
        match request {
            Request::Allocate => self.state = State::Idle,
            // A 437 to a deleting refresh means it is already gone (RFC 8656 §7.3).
            Request::Refresh(_)
                if code == Some(ErrorCode::ALLOCATION_MISMATCH) || code.is_none() =>
            {
                self.end_allocation()
            }
            Request::Refresh(Some(0)) => self.end_allocation(),
            Request::Refresh(_) => {}
            Request::CreatePermission(peers) => {
                for p in peers {
                    if let Some(perm) = self.permissions.get_mut(&p.ip()) {
                        perm.in_flight = false;
                        if perm.refresh_at.is_none() {
                            self.permissions.remove(&p.ip());
                        }
                    }
                }
            }
            Request::ChannelBind(number, peer) => {
                if self.channels.get(peer).is_some_and(|c| !c.bound) {
                    self.channels.remove(peer);
                    self.by_channel.remove(number);
                } else if let Some(c) = self.channels.get_mut(peer) {
                    c.in_flight = false;
                }
            }
        }
    }

    fn end_allocation(&mut self) {
        if self.state != State::Idle {
            self.state = State::Idle;
            self.permissions.clear();
            self.channels.clear();
            self.by_channel.clear();
            self.transactions.clear();
            self.events.push_back(ClientEvent::AllocationEnded);
        }
    }

    /// The earliest moment [`Client::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.values().map(|t| t.timer.deadline());
        let alloc = match self.state {
            State::Allocated {
                refresh_at,
                expires,
                ..
            } => {
                let refreshing = self
                    .transactions
                    .values()
                    .any(|t| matches!(t.request, Request::Refresh(_)));
                Some(if refreshing { expires } else { refresh_at })
            }
            _ => None,
        };
        let perms = self
            .permissions
            .values()
            .filter(|p| !p.in_flight)
            .filter_map(|p| p.refresh_at);
        let chans = self
            .channels
            .values()
            .filter(|c| !c.in_flight)
            .filter_map(|c| c.refresh_at);
        tx.chain(alloc).chain(perms).chain(chans).min()
    }

    /// Retransmits, times out requests, and refreshes what is about to expire.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (tid, tx) in self.transactions.iter_mut() {
            match tx.timer.poll(now) {
                TimerAction::Wait => {}
                TimerAction::Retransmit => self.transmits.push_back(tx.bytes.clone()),
                TimerAction::TimedOut => timed_out.push(*tid),
            }
        }
        for tid in timed_out {
            if let Some(tx) = self.transactions.remove(&tid) {
                self.on_failure(&tx.request, None);
            }
        }
        let State::Allocated {
            expires,
            refresh_at,
            ..
        } = self.state
        else {
            return;
        };
        if now >= expires {
            self.end_allocation();
            return;
        }
        let refreshing = self
            .transactions
            .values()
            .any(|t| matches!(t.request, Request::Refresh(_)));
        if now >= refresh_at && !refreshing {
            // Errors here can only come from encoding our own values, which fit.
            let _ = self.start(now, Request::Refresh(self.config.lifetime), 0);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| !p.in_flight && p.refresh_at.is_some_and(|t| now >= t))
            .map(|(ip, _)| *ip)
            .collect();
        if !due.is_empty() {
            for ip in &due {
                if let Some(p) = self.permissions.get_mut(ip) {
                    p.in_flight = true;
                }
            }
            let peers = due.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            let _ = self.start(now, Request::CreatePermission(peers), 0);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.in_flight && c.refresh_at.is_some_and(|t| now >= t))
            .map(|(p, c)| (*p, c.number))
            .collect();
        for (peer, number) in due {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.in_flight = true;
            }
            let _ = self.start(now, Request::ChannelBind(number, peer), 0);
        }
    }
}
