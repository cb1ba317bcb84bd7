//! One worker: a thread with a single-threaded tokio runtime that owns a TURN
//! [`Server`] instance, its own `SO_REUSEPORT` client UDP socket (the kernel hashes each
//! client to one worker), the relay sockets of the allocations it made, and the TCP/TLS
//! connections the listener handed it. Nothing here is shared between workers except
//! [`Shared`] (metrics, the relay address set, quotas, configuration).
//!
//! This file: setup, the worker's state and the output dispatcher ([`Worker::drain`]),
//! which turns the server's [`Output`]s into socket sends, relay sockets and releases.
//! `io` holds the socket and timer tasks, `stream` the TCP/TLS connections.

mod io;
mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::LocalSet;
use tokio_rustls::TlsAcceptor;
use umbra_turn::server::{
    Discarded, Output, RelayError, RelayGrant, RestAuthenticator, Server, ServerConfig,
};
use umbra_turn::{AddressFamily, Class, Message, Transport};

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
    relays: HashMap<SocketAddr, RelayEntry>,
    streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// True while `handle_timeout` runs, so releases count as expiries.
    expiring: bool,
}

/// UDP datagrams queued during one batch, sent together by [`Worker::flush`].
#[derive(Default)]
struct Outbox {
    to_clients: Vec<(SocketAddr, Vec<u8>)>,
    from_relays: Vec<(Rc<BatchSocket>, SocketAddr, Vec<u8>)>,
    scratch: Vec<u8>,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    client: BatchSocket,
    state: RefCell<State>,
    rx: RefCell<RecvBufs>,
    out: RefCell<Outbox>,
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
            relays: HashMap::new(),
            streams: HashMap::new(),
            expiring: false,
        }),
        rx: RefCell::new(RecvBufs::default()),
        out: RefCell::new(Outbox::default()),
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
                        Transport::Udp => self.out.borrow_mut().to_clients.push((client, bytes)),
                        Transport::Tcp => {
                            let sent = st
                                .streams
                                .get(&client)
                                .is_some_and(|tx| tx.try_send(bytes).is_ok());
                            if !sent {
                                self.shared.metrics.count_drop(DropReason::SendFailed);
                            }
                        }
                    }
                }
                Output::SendFromRelay {
                    relay, peer, bytes, ..
                } => self.send_from_relay(st, relay, peer, bytes, now),
                Output::AllocateRelay {
                    request,
                    family,
                    even_port,
                    reservation_token,
                    username,
                } => {
                    let result = if reservation_token.is_some() {
                        // Reservations are not offered (no RESERVATION-TOKEN is ever issued).
                        Err(RelayError::InsufficientCapacity)
                    } else {
                        self.open_relay(st, family, even_port.is_some(), username, now)
                    };
                    let granted = result.ok().map(|g| g.relay);
                    if let Err(Discarded::UnknownRelayRequest) =
                        st.server.relay_allocated(now, request, result)
                        && let Some(relay) = granted
                    {
                        self.release(st, relay);
                    }
                    self.timer.notify_one();
                }
                Output::ReleaseRelay { relay } => self.release(st, relay),
                _ => {}
            }
        }
    }

    fn send_from_relay(
        &self,
        st: &mut State,
        relay: SocketAddr,
        peer: SocketAddr,
        bytes: Vec<u8>,
        now: Instant,
    ) {
        let m = &self.shared.metrics;
        if !self.shared.policy.allows(peer) {
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
        inc(&m.packets_to_peers);
        m.bytes_to_peers
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let dest = self.shared.local_dest(peer);
        self.out
            .borrow_mut()
            .from_relays
            .push((e.socket.clone(), dest, bytes));
    }

    /// Opens a relay socket for a new allocation and starts its receive task.
    fn open_relay(
        self: &Rc<Self>,
        st: &mut State,
        family: AddressFamily,
        even: bool,
        username: String,
        now: Instant,
    ) -> Result<RelayGrant, RelayError> {
        let ours = match self.shared.advertised_ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        };
        if family != ours {
            return Err(RelayError::FamilyNotSupported);
        }
        self.shared.quotas.acquire(&username)?;
        let socket = self
            .shared
            .ports
            .bind(even)
            .ok_or(RelayError::InsufficientCapacity)
            .and_then(|s| {
                BatchSocket::new(s, RELAY_SOCKET_BUFFER).map_err(|_| RelayError::Internal)
            });
        let socket = match socket.and_then(|s| {
            let port = s.local_addr().map_err(|_| RelayError::Internal)?.port();
            Ok((s, port))
        }) {
            Ok(s) => s,
            Err(e) => {
                self.shared.quotas.release(&username);
                return Err(e);
            }
        };
        let (socket, port) = socket;
        let relay = SocketAddr::new(self.shared.advertised_ip, port);
        let socket = Rc::new(socket);
        let stop = Rc::new(Notify::new());
        let rate = self.shared.bandwidth;
        st.relays.insert(
            relay,
            RelayEntry {
                socket: socket.clone(),
                stop: stop.clone(),
                username,
                to_peer: TokenBucket::new(rate, now),
                to_client: TokenBucket::new(rate, now),
            },
        );
        self.shared.relays.insert(relay);
        let m = &self.shared.metrics;
        inc(&m.allocations_created);
        m.allocations_active.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_local(io::relay_task(self.clone(), relay, socket, stop));
        Ok(RelayGrant {
            relay,
            reservation_token: None,
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

    /// Sends what [`Worker::drain`] queued.
    fn flush(&self) {
        let mut out = self.out.borrow_mut();
        let Outbox {
            to_clients,
            from_relays,
            scratch,
        } = &mut *out;
        let mut failed = 0;
        if !to_clients.is_empty() {
            failed += self
                .client
                .send_batch(to_clients.iter().map(|(a, b)| (*a, b.as_slice())), scratch);
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
                    .map(|(_, d, b)| (*d, b.as_slice())),
                scratch,
            );
            i += run;
        }
        from_relays.clear();
        for _ in 0..failed {
            self.shared.metrics.count_drop(DropReason::SendFailed);
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
