//! The sans-IO TURN server (RFC 8656).
//!
//! Feed it client packets ([`Server::handle_packet`]), packets arriving on relay sockets
//! ([`Server::handle_relayed`]), the daemon's answers about relay sockets
//! ([`Server::relay_allocated`]) and timer ticks ([`Server::handle_timeout`]); drain
//! [`Server::poll_output`] after each call and sleep until [`Server::poll_timeout`].
//!
//! Daemons that care about the cost per relayed packet use
//! [`Server::handle_packet_forward`] and [`Server::handle_relayed_forward`] instead: the
//! same checks, but ChannelData (the bulk of a call's traffic) comes back as a
//! [`Forward`] borrowing the input instead of an allocated [`Output`].
//!
//! Files: [`config`] (settings), [`auth`] (credentials, RFC 8489 §9.2.4), `nonce`
//! (stateless nonces), [`policy`] (peer policy hook), `allocation` (per-allocation state),
//! [`output`] (actions for the daemon), [`ports`] (relay port choice, EVEN-PORT and
//! RESERVATION-TOKEN reservations, for the daemon to share between servers), `handlers`
//! (one function per request type), and this file (the struct, dispatch, timers).

pub mod auth;
pub mod config;
pub mod output;
pub mod policy;
pub mod ports;

mod allocation;
mod handlers;
mod nonce;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use auth::{Authenticator, RestAuthenticator, StaticAuthenticator};
pub use config::ServerConfig;
pub use nonce::{NONCE_COOKIE, nonce_signals_password_algorithms};
pub use output::{Discarded, Forward, Output, RelayError, RelayGrant, RelayRequestId};
pub use policy::{AllowAll, DenyInternal, PeerCheck, PeerPolicy};
pub use ports::{PortGrant, PortRequest, RESERVATION_LIFETIME, RelayPorts};

use crate::attribute::{AddressFamily, Attribute, ErrorCode};
use crate::builder::MessageBuilder;
use crate::credentials::LongTermKey;
use crate::demux::{Packet, Transport, demux};
use crate::hash::{KeyedMap, KeyedState};
use crate::header::{Class, Method, TransactionId};
use crate::integrity::IntegrityKind;
use crate::message::Message;
use allocation::{Allocation, ClientKey};
use nonce::NonceIssuer;

/// An Allocate waiting for the daemon to open its relay socket.
struct Pending {
    client: ClientKey,
    tid: TransactionId,
    username: String,
    key: LongTermKey,
    kind: IntegrityKind,
    lifetime: Duration,
    /// The family asked for; `None` with a reservation token (the reservation decides).
    family: Option<AddressFamily>,
    /// EVEN-PORT's R bit, if EVEN-PORT was present.
    even_port: Option<bool>,
}

impl Pending {
    /// Whether the daemon's grant is what the request asked for: the family, an even port
    /// for EVEN-PORT, and a reservation token for its R bit.
    fn fits(&self, grant: &RelayGrant) -> bool {
        self.family
            .is_none_or(|f| f == AddressFamily::of(&grant.relay))
            && (self.even_port.is_none() || grant.relay.port().is_multiple_of(2))
            && (self.even_port != Some(true) || grant.reservation_token.is_some())
    }
}

/// The TURN server state machine. See the module docs for the driving loop.
pub struct Server {
    config: ServerConfig,
    auth: Box<dyn Authenticator + Send>,
    policy: Box<dyn PeerPolicy + Send>,
    nonces: NonceIssuer,
    /// Keys of the per-packet maps (derived from the nonce secret).
    keys: KeyedState,
    allocations: KeyedMap<u64, Allocation>,
    by_client: KeyedMap<ClientKey, u64>,
    by_relay: KeyedMap<SocketAddr, u64>,
    pending: HashMap<RelayRequestId, Pending>,
    pending_by_client: HashMap<ClientKey, RelayRequestId>,
    per_user: HashMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    outputs: VecDeque<Output>,
    next_id: u64,
}

impl Server {
    /// A server with no allocations. `now` anchors nonce timestamps.
    pub fn new(
        config: ServerConfig,
        auth: impl Authenticator + Send + 'static,
        policy: impl PeerPolicy + Send + 'static,
        now: Instant,
    ) -> Server {
        let nonces = NonceIssuer::new(
            config.nonce_secret,
            now,
            config.nonce_lifetime,
            config.negotiates_algorithms(),
        );
        let mac = crate::integrity::hmac_sha256(&config.nonce_secret, &[b"umbra-turn map keys"]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&mac[..16]);
        let keys = KeyedState::new(key);
        Server {
            config,
            auth: Box::new(auth),
            policy: Box::new(policy),
            nonces,
            keys,
            allocations: keys.map(),
            by_client: keys.map(),
            by_relay: keys.map(),
            pending: HashMap::new(),
            pending_by_client: HashMap::new(),
            per_user: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            next_id: 1,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Handles one packet (datagram, or one frame from [`crate::demux::split_frames`])
    /// received from a client.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        client: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Discarded> {
        match self.handle_packet_forward(now, transport, client, bytes)? {
            Some(f) => self.queue_forward(f),
            None => Ok(()),
        }
    }

    /// [`Server::handle_packet`] without the copy: ChannelData to relay comes back as
    /// [`Forward::ToPeer`] (nothing is queued for it); anything else is handled as
    /// `handle_packet` does and gives `None`. The caller sends a `Forward` exactly where
    /// the corresponding [`Output`] would have gone. To keep the order of what reaches
    /// each destination, execute queued outputs ([`Server::has_output`]) before it.
    pub fn handle_packet_forward<'a>(
        &mut self,
        now: Instant,
        transport: Transport,
        client: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<Option<Forward<'a>>, Discarded> {
        let key = ClientKey {
            transport,
            addr: client,
        };
        match demux(bytes)? {
            Packet::ChannelData(cd) => {
                let (relay, peer) = self.client_channel_route(now, key, cd.channel)?;
                Ok(Some(Forward::ToPeer {
                    relay,
                    peer,
                    data: cd.data,
                }))
            }
            Packet::Stun(msg) => self.on_stun(now, key, &msg).map(|()| None),
        }
    }

    /// A STUN message from a client.
    fn on_stun(
        &mut self,
        now: Instant,
        key: ClientKey,
        msg: &Message<'_>,
    ) -> Result<(), Discarded> {
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => self.on_binding(key, msg),
            (Class::Request, Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION)
            | (Class::Request, Method::CHANNEL_BIND) => {
                self.on_authenticated_request(now, key, msg)
            }
            (Class::Request, method) => self.send_error(
                key,
                method,
                msg.transaction_id(),
                ErrorCode::BAD_REQUEST,
                &[],
                None,
            ),
            (Class::Indication, Method::SEND) => self.on_send_indication(now, key, msg),
            _ => Err(Discarded::Unexpected),
        }
    }

    /// Queues the [`Output`] a [`Forward`] stands for, behind the outputs already queued.
    /// A daemon that cannot execute a `Forward` at once without overtaking queued outputs
    /// (see [`Server::has_output`]) hands it back here.
    pub fn queue_forward(&mut self, f: Forward<'_>) -> Result<(), Discarded> {
        let o = match f {
            Forward::ToPeer { relay, peer, data } => Output::SendFromRelay {
                relay,
                peer,
                bytes: data.to_vec(),
                dont_fragment: false,
            },
            Forward::ToClient {
                transport,
                client,
                channel,
                data,
            } => Output::SendToClient {
                transport,
                client,
                bytes: crate::channel_data::ChannelData { channel, data }
                    .encode(transport.is_stream())?,
            },
        };
        self.outputs.push_back(o);
        Ok(())
    }

    /// Handles a datagram that arrived from `peer` on the relay socket `relay`.
    pub fn handle_relayed(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Discarded> {
        match self.handle_relayed_forward(now, relay, peer, bytes)? {
            Some(f) => self.queue_forward(f),
            None => Ok(()),
        }
    }

    /// [`Server::handle_relayed`] without the copy: data for a bound channel comes back
    /// as [`Forward::ToClient`] (the caller frames it as ChannelData, padded on stream
    /// transports); data without a channel is queued as a Data indication and gives
    /// `None`.
    pub fn handle_relayed_forward<'a>(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<Option<Forward<'a>>, Discarded> {
        self.on_peer_data(now, relay, peer, bytes)
    }

    /// True if outputs are queued ([`Server::poll_output`] would return one).
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// The daemon's answer to [`Output::AllocateRelay`].
    pub fn relay_allocated(
        &mut self,
        now: Instant,
        request: RelayRequestId,
        result: Result<RelayGrant, RelayError>,
    ) -> Result<(), Discarded> {
        self.on_relay_allocated(now, request, result)
    }

    /// The next action for the daemon, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Expires allocations whose lifetime ended by `now` (emitting
    /// [`Output::ReleaseRelay`]) and prunes their expired permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(alloc) = self.allocations.get_mut(&id) else {
                continue;
            };
            if alloc.expires <= now {
                self.remove_allocation(id);
            } else if alloc.timer == at {
                // The allocation was refreshed: sleep until its new expiry.
                alloc.purge(now);
                alloc.timer = alloc.expires;
                let next = alloc.expires;
                self.timers.push(Reverse((next, id)));
            }
            // Otherwise a stale entry: an earlier one was scheduled after it.
        }
    }

    /// A stream client's connection closed (RFC 8656 §3.1: the allocation goes with it).
    /// Deletes its allocation (emitting [`Output::ReleaseRelay`]) and forgets a pending
    /// Allocate, whose later [`Server::relay_allocated`] answer is then refused as unknown
    /// (the daemon should release that relay socket itself).
    pub fn close_client(&mut self, transport: Transport, client: SocketAddr) {
        let key = ClientKey {
            transport,
            addr: client,
        };
        if let Some(id) = self.by_client.get(&key).copied() {
            self.remove_allocation(id);
        }
        if let Some(req) = self.pending_by_client.remove(&key)
            && let Some(p) = self.pending.remove(&req)
        {
            self.release_quota(&p.username);
        }
    }

    fn remove_allocation(&mut self, id: u64) {
        let Some(alloc) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&alloc.client);
        self.by_relay.remove(&alloc.relay);
        self.release_quota(&alloc.username);
        self.outputs
            .push_back(Output::ReleaseRelay { relay: alloc.relay });
    }

    fn release_quota(&mut self, username: &str) {
        if let Some(n) = self.per_user.get_mut(username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(username);
            }
        }
    }

    fn in_use(&self) -> usize {
        self.allocations.len() + self.pending.len()
    }

    /// Builds and queues a STUN response to `client`.
    fn send_response(
        &mut self,
        client: ClientKey,
        class: Class,
        method: Method,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
        sign: Option<(&LongTermKey, IntegrityKind)>,
    ) -> Result<(), Discarded> {
        let bytes = self.build_response(class, method, tid, attrs, sign)?;
        self.outputs.push_back(Output::SendToClient {
            transport: client.transport,
            client: client.addr,
            bytes,
        });
        Ok(())
    }

    fn build_response(
        &self,
        class: Class,
        method: Method,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
        sign: Option<(&LongTermKey, IntegrityKind)>,
    ) -> Result<Vec<u8>, Discarded> {
        let mut b = MessageBuilder::new(class, method, tid);
        for a in attrs {
            b = b.attr(a);
        }
        if let Some(s) = &self.config.software {
            b = b.attr(&Attribute::Software(s));
        }
        if let Some((key, kind)) = sign {
            b = b.integrity(kind, key.as_bytes());
        }
        if self.config.fingerprint {
            b = b.fingerprint();
        }
        Ok(b.build()?)
    }

    /// Queues an error response with the standard reason phrase.
    fn send_error(
        &mut self,
        client: ClientKey,
        method: Method,
        tid: TransactionId,
        code: u16,
        extra: &[Attribute<'_>],
        sign: Option<(&LongTermKey, IntegrityKind)>,
    ) -> Result<(), Discarded> {
        let mut attrs = vec![Attribute::ErrorCode(ErrorCode::standard(code))];
        attrs.extend_from_slice(extra);
        self.send_response(client, Class::ErrorResponse, method, tid, &attrs, sign)
    }

    /// Makes sure a timer fires no later than `at` for allocation `id`. At most one entry
    /// per allocation is "live" (`Allocation::timer`), so refresh floods cannot grow the heap.
    fn schedule(&mut self, id: u64, at: Instant) {
        if let Some(alloc) = self.allocations.get_mut(&id)
            && at < alloc.timer
        {
            alloc.timer = at;
            self.timers.push(Reverse((at, id)));
        }
    }
}
