//! One worker: a thread with a single-threaded tokio runtime that owns a TURN
//! [`Server`] instance, its own `SO_REUSEPORT` client UDP socket (the kernel hashes each
//! client to one worker), the relay sockets of the allocations it made, and the TCP/TLS
//! connections the listener handed it. Nothing here is shared between workers except
//! [`Shared`] (metrics, the relay address set, quotas, the relay port range with its
//! EVEN-PORT reservations, configuration).
//!
//! This file: setup, the worker's state and the output dispatcher ([`Worker::drain`]),
//! which turns the server's [`Output`]s into socket sends, relay sockets and releases.
//! `io` holds the socket and timer tasks, `stream` the TCP/TLS connections.
//!
//! The per-packet path allocates nothing and touches nothing shared: ChannelData comes
//! from the server as a borrowed [`Forward`] ([`Worker::forward`]), datagrams are queued
//! back to back in one reusable buffer ([`Outbox`]) and sent once per batch, traffic
//! counters are summed per batch ([`Tally`]) before reaching the shared atomics, and a
//! datagram from one of this worker's allocations to another's relayed address (the
//! normal case under the closed-world policy: both call parties use this relay) is
//! handed over in memory ([`Worker::deliver`]) instead of through the kernel.

mod io;
mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::LocalSet;
use tokio_rustls::TlsAcceptor;
use umbra_turn::hash::{KeyedMap, KeyedState};
use umbra_turn::server::{
    Discarded, Forward, Output, PortRequest, RelayError, RelayGrant, RestAuthenticator, Server,
    ServerConfig,
};
use umbra_turn::{AddressFamily, ChannelData, Class, Message, Transport};

use crate::bandwidth::TokenBucket;
use crate::metrics::{DropReason, Metrics, inc};
use crate::policy::{MeshPolicy, RelaySet};
use crate::ports::PortRange;
use crate::quota::Quotas;
use crate::udp::{BatchSocket, RecvBufs};

/// Socket buffer size asked for on client-facing sockets.
const CLIENT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Socket buffer size asked for on relay sockets.
const RELAY_SOCKET_BUFFER: usize = 512 * 1024;

/// What all workers share.
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    pub relays: Arc<RelaySet>,
    pub policy: MeshPolicy,
    pub ports: PortRange,
    pub quotas: Quotas,
    pub server_config: ServerConfig,
    pub auth: RestAuthenticator,
    pub bandwidth: u64,
    /// IP relay sockets bind to.
    pub bind_ip: IpAddr,
    /// IP advertised in XOR-RELAYED-ADDRESS.
    pub advertised_ip: IpAddr,
    pub tls: TlsAcceptor,
    pub connections: AtomicUsize,
    pub max_connections: usize,
    /// Longest a stream connection may stay silent.
    pub idle: std::time::Duration,
}

impl Shared {
    /// Where to actually send to reach `peer`: a peer on our own advertised IP (behind a
    /// 1:1 NAT) is reached on the bound IP, without a hairpin through the NAT.
    fn local_dest(&self, peer: SocketAddr) -> SocketAddr {
        if self.advertised_ip != self.bind_ip && peer.ip() == self.advertised_ip {
            SocketAddr::new(self.bind_ip, peer.port())
        } else {
            peer
        }
    }

    /// The inverse of [`Shared::local_dest`] for a datagram's source.
    fn peer_from_local(&self, src: SocketAddr) -> SocketAddr {
        if self.advertised_ip != self.bind_ip && src.ip() == self.bind_ip {
            SocketAddr::new(self.advertised_ip, src.port())
        } else {
            src
        }
    }
}

/// A TCP connection accepted by a listener, handed to a worker.
pub(crate) struct Incoming {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Everything a worker thread starts from.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub client_udp: std::net::UdpSocket,
    pub incoming: mpsc::UnboundedReceiver<Incoming>,
    pub shutdown: watch::Receiver<bool>,
    pub shared: Arc<Shared>,
    pub nonce_anchor: Instant,
}

/// Starts the worker thread. It returns when shutdown is signalled.
pub(crate) fn spawn(
    setup: WorkerSetup,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new()
        .name(format!("umbra-relay-{}", setup.index))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            LocalSet::new().block_on(&rt, run(setup))
        })
}

/// An allocation's relay socket as the worker tracks it.
struct RelayEntry {
    socket: Rc<BatchSocket>,
    stop: Rc<Notify>,
    username: String,
    to_peer: TokenBucket,
    to_client: TokenBucket,
}

/// Mutable state of a worker (borrowed only between awaits).
struct State {
    server: Server,
    relays: KeyedMap<SocketAddr, RelayEntry>,
    streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// True while `handle_timeout` runs, so releases count as expiries.
    expiring: bool,
}

/// UDP datagrams queued during one batch, sent together by [`Worker::flush`]. Their bytes
/// sit back to back in `arena` (cleared, not freed, after each flush).
#[derive(Default)]
struct Outbox {
    arena: Vec<u8>,
    to_clients: Vec<(SocketAddr, Range<usize>)>,
    from_relays: Vec<(Rc<BatchSocket>, SocketAddr, Range<usize>)>,
    scratch: Vec<u8>,
}

impl Outbox {
    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }
}

/// Relayed traffic counted during one batch, added to [`Metrics`] by [`Worker::flush`].
#[derive(Default, Clone, Copy)]
struct Tally {
    packets_to_peers: u64,
    bytes_to_peers: u64,
    packets_to_clients: u64,
    bytes_to_clients: u64,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    client: BatchSocket,
    state: RefCell<State>,
    rx: RefCell<RecvBufs>,
    out: RefCell<Outbox>,
    tally: Cell<Tally>,
    /// Wakes the timer task when an earlier deadline may exist.
    timer: Notify,
}

async fn run(setup: WorkerSetup) -> std::io::Result<()> {
    let shared = setup.shared;
    let server = Server::new(
        shared.server_config.clone(),
        shared.auth.clone(),
        shared.policy.clone(),
        setup.nonce_anchor,
    );
    let client = BatchSocket::new(setup.client_udp, CLIENT_SOCKET_BUFFER)?;
    let w = Rc::new(Worker {
        shared,
        client,
        state: RefCell::new(State {
            server,
            relays: KeyedState::new(rand::random()).map(),
            streams: HashMap::new(),
            expiring: false,
        }),
        rx: RefCell::new(RecvBufs::default()),
        out: RefCell::new(Outbox::default()),
        tally: Cell::new(Tally::default()),
        timer: Notify::new(),
    });
    tokio::task::spawn_local(io::client_task(w.clone()));
    tokio::task::spawn_local(io::timer_task(w.clone()));
    let mut shutdown = setup.shutdown;
    let mut incoming = setup.incoming;
    while !*shutdown.borrow() {
        tokio::select! {
            r = shutdown.changed() => if r.is_err() { break },
            m = incoming.recv() => match m {
                Some(inc) => {
                    tokio::task::spawn_local(stream::accept(w.clone(), inc));
                }
                None => break,
            },
        }
    }
    w.close_all();
    Ok(())
}

impl Worker {
    /// Executes every output the server has queued.
    fn drain(self: &Rc<Self>, st: &mut State, now: Instant) {
        while let Some(o) = st.server.poll_output() {
            match o {
                Output::SendToClient {
                    transport,
                    client,
                    bytes,
                } => {
                    self.count_error_response(&bytes);
                    match transport {
                        Transport::Udp => {
                            let mut out = self.out.borrow_mut();
                            let r = out.push(&bytes);
                            out.to_clients.push((client, r));
                        }
                        Transport::Tcp => self.send_stream(st, client, bytes),
                    }
                }
                Output::SendFromRelay {
                    relay, peer, bytes, ..
                } => self.send_from_relay(st, relay, peer, &bytes, now),
                Output::AllocateRelay {
                    request,
                    family,
                    even_port,
                    reservation_token,
                    username,
                } => {
                    let want = PortRequest {
                        even_port,
                        reservation_token,
                        owner: &username,
                    };
                    let result = self.open_relay(st, family, want, now);
                    let granted = result.ok();
                    if let Err(Discarded::UnknownRelayRequest) =
                        st.server.relay_allocated(now, request, result)
                        && let Some(g) = granted
                    {
                        self.release(st, g.relay);
                        if let Some(t) = g.reservation_token {
                            self.shared.ports.cancel(&t);
                        }
                    }
                    self.timer.notify_one();
                }
                Output::ReleaseRelay { relay } => self.release(st, relay),
                _ => {}
            }
        }
    }

    /// Queues a frame for a TCP/TLS client.
    fn send_stream(&self, st: &State, client: SocketAddr, bytes: Vec<u8>) {
        let sent = st
            .streams
            .get(&client)
            .is_some_and(|tx| tx.try_send(bytes).is_ok());
        if !sent {
            self.shared.metrics.count_drop(DropReason::SendFailed);
        }
    }

    /// Executes a [`Forward`] the server handed back: the same as the [`Output`] it stands
    /// for, without the allocation. If outputs are queued, it goes behind them (through
    /// the server's queue) so no destination sees packets out of order.
    fn forward(self: &Rc<Self>, st: &mut State, f: Forward<'_>, now: Instant) {
        if st.server.has_output() {
            if let Err(d) = st.server.queue_forward(f) {
                self.shared.metrics.discarded(&d);
            }
            return;
        }
        match f {
            Forward::ToPeer { relay, peer, data } => {
                self.send_from_relay(st, relay, peer, data, now)
            }
            Forward::ToClient {
                transport,
                client,
                channel,
                data,
            } => {
                let cd = ChannelData { channel, data };
                match transport {
                    Transport::Udp => {
                        let mut out = self.out.borrow_mut();
                        let start = out.arena.len();
                        if cd.encode_into(false, &mut out.arena).is_ok() {
                            let end = out.arena.len();
                            out.to_clients.push((client, start..end));
                        } else {
                            out.arena.truncate(start);
                        }
                    }
                    Transport::Tcp => match cd.encode(true) {
                        Ok(bytes) => self.send_stream(st, client, bytes),
                        Err(e) => self.shared.metrics.discarded(&Discarded::Encode(e)),
                    },
                }
            }
            _ => {}
        }
    }

    /// A datagram that arrived (or, from [`Worker::send_from_relay`], would arrive) on
    /// our relay socket `relay` from `peer`: the bandwidth cap towards the client, then
    /// the server. False if `relay` is not (or no longer) ours.
    fn deliver(
        self: &Rc<Self>,
        st: &mut State,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let m = &self.shared.metrics;
        let Some(e) = st.relays.get_mut(&relay) else {
            return false;
        };
        if !e.to_client.take(data.len(), now) {
            m.count_drop(DropReason::Bandwidth);
            return true;
        }
        match st.server.handle_relayed_forward(now, relay, peer, data) {
            Ok(f) => {
                let mut t = self.tally.get();
                t.packets_to_clients += 1;
                t.bytes_to_clients += data.len() as u64;
                self.tally.set(t);
                if let Some(f) = f {
                    self.forward(st, f, now);
                }
            }
            Err(d) => m.discarded(&d),
        }
        true
    }

    fn send_from_relay(
        self: &Rc<Self>,
        st: &mut State,
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let m = &self.shared.metrics;
        // A peer that is the relayed address of another allocation of this worker is a
        // live relayed address, so the closed-world policy allows it without asking the
        // shared set; the datagram is then handed to that allocation directly (below).
        let local = st.relays.contains_key(&peer);
        if !local && !self.shared.policy.allows(peer) {
            m.count_drop(DropReason::Policy);
            return;
        }
        let Some(e) = st.relays.get_mut(&relay) else {
            m.count_drop(DropReason::NoState);
            return;
        };
        if !e.to_peer.take(bytes.len(), now) {
            m.count_drop(DropReason::Bandwidth);
            return;
        }
        let socket = e.socket.clone();
        let mut t = self.tally.get();
        t.packets_to_peers += 1;
        t.bytes_to_peers += bytes.len() as u64;
        self.tally.set(t);
        if local {
            // What the peer's relay task would do on receiving it from our relay socket.
            self.deliver(st, peer, relay, bytes, now);
            return;
        }
        let dest = self.shared.local_dest(peer);
        let mut out = self.out.borrow_mut();
        let r = out.push(bytes);
        out.from_relays.push((socket, dest, r));
    }

    /// Opens a relay socket for a new allocation (an even port, a reservation of the next
    /// one, or a reserved one, as `want` says) and starts its receive task.
    fn open_relay(
        self: &Rc<Self>,
        st: &mut State,
        family: AddressFamily,
        want: PortRequest<'_>,
        now: Instant,
    ) -> Result<RelayGrant, RelayError> {
        let ours = match self.shared.advertised_ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        };
        // A reserved socket is of our family whatever the request's default says.
        if family != ours && want.reservation_token.is_none() {
            return Err(RelayError::FamilyNotSupported);
        }
        let username = want.owner;
        self.shared.quotas.acquire(username)?;
        let grant = self.shared.ports.bind(now, want);
        let socket = grant.and_then(|g| {
            let token = g.reservation_token;
            let s = BatchSocket::new(g.socket, RELAY_SOCKET_BUFFER).map_err(|_| {
                if let Some(t) = token {
                    self.shared.ports.cancel(&t);
                }
                RelayError::Internal
            })?;
            Ok((s, g.port, token))
        });
        let (socket, port, reservation_token) = match socket {
            Ok(s) => s,
            Err(e) => {
                self.shared.quotas.release(username);
                return Err(e);
            }
        };
        let relay = SocketAddr::new(self.shared.advertised_ip, port);
        let socket = Rc::new(socket);
        let stop = Rc::new(Notify::new());
        let rate = self.shared.bandwidth;
        st.relays.insert(
            relay,
            RelayEntry {
                socket: socket.clone(),
                stop: stop.clone(),
                username: username.to_owned(),
                to_peer: TokenBucket::new(rate, now),
                to_client: TokenBucket::new(rate, now),
            },
        );
        self.shared.relays.insert(relay);
        let m = &self.shared.metrics;
        inc(&m.allocations_created);
        m.allocations_active.fetch_add(1, Ordering::Relaxed);
        if want.reservation_token.is_some() {
            inc(&m.reservations_claimed);
        }
        if reservation_token.is_some() {
            inc(&m.reservations_made);
        }
        tokio::task::spawn_local(io::relay_task(self.clone(), relay, socket, stop));
        Ok(RelayGrant {
            relay,
            reservation_token,
        })
    }

    /// Closes an allocation's relay socket and gives its quota back.
    fn release(&self, st: &mut State, relay: SocketAddr) {
        let Some(e) = st.relays.remove(&relay) else {
            return;
        };
        e.stop.notify_one();
        self.shared.relays.remove(&relay);
        self.shared.quotas.release(&e.username);
        let m = &self.shared.metrics;
        m.allocations_active.fetch_sub(1, Ordering::Relaxed);
        inc(if st.expiring {
            &m.allocations_expired
        } else {
            &m.allocations_deleted
        });
    }

    /// Shutdown: releases every allocation and drops every connection.
    fn close_all(&self) {
        let mut st = self.state.borrow_mut();
        let relays: Vec<SocketAddr> = st.relays.keys().copied().collect();
        for r in relays {
            self.release(&mut st, r);
        }
        st.streams.clear();
    }

    /// Sends what [`Worker::drain`] and [`Worker::forward`] queued, and publishes the
    /// batch's traffic counts.
    fn flush(&self) {
        // Counts first, so they are up to date by the time anyone sees the packets.
        let m = &self.shared.metrics;
        let t = self.tally.take();
        if t.packets_to_peers > 0 {
            m.packets_to_peers
                .fetch_add(t.packets_to_peers, Ordering::Relaxed);
            m.bytes_to_peers
                .fetch_add(t.bytes_to_peers, Ordering::Relaxed);
        }
        if t.packets_to_clients > 0 {
            m.packets_to_clients
                .fetch_add(t.packets_to_clients, Ordering::Relaxed);
            m.bytes_to_clients
                .fetch_add(t.bytes_to_clients, Ordering::Relaxed);
        }
        let mut out = self.out.borrow_mut();
        let Outbox {
            arena,
            to_clients,
            from_relays,
            scratch,
        } = &mut *out;
        let bytes = |r: &Range<usize>| arena.get(r.clone()).unwrap_or_default();
        let mut failed = 0;
        if !to_clients.is_empty() {
            failed += self
                .client
                .send_batch(to_clients.iter().map(|(a, r)| (*a, bytes(r))), scratch);
            to_clients.clear();
        }
        let mut i = 0;
        while let Some((sock, ..)) = from_relays.get(i) {
            let sock = sock.clone();
            let run = from_relays[i..]
                .iter()
                .take_while(|(s, ..)| Rc::ptr_eq(s, &sock))
                .count();
            failed += sock.send_batch(
                from_relays[i..i + run]
                    .iter()
                    .map(|(_, d, r)| (*d, bytes(r))),
                scratch,
            );
            i += run;
        }
        from_relays.clear();
        arena.clear();
        for _ in 0..failed {
            m.count_drop(DropReason::SendFailed);
        }
    }

    /// Counts STUN error responses by code (aggregate only).
    fn count_error_response(&self, bytes: &[u8]) {
        // Cheap pre-check on the message type's class bits (0b11 = error response).
        let Some(t) = bytes.get(..2) else { return };
        let t = u16::from_be_bytes([t[0], t[1]]);
        if t & 0xC000 != 0 || t & 0x0110 != 0x0110 {
            return;
        }
        if let Ok(msg) = Message::decode(bytes)
            && msg.class() == Class::ErrorResponse
            && let Ok(Some(e)) = msg.error_code()
        {
            self.shared.metrics.error_response(e.code);
        }
    }
}
