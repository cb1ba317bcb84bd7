//! The plain ports' own event loop: one per worker thread, on epoll (mio).
//!
//! Why not tokio here, when the TLS ports use it: at this layer the cost of
//! a connection is its system calls, and a reactor built for futures spends
//! more of them than a proxy needs (an `epoll_ctl` to deregister each socket
//! before it is closed, a read that ends in `EAGAIN` after every chunk). This
//! loop registers each socket once, for both directions, never deregisters
//! one it closes (closing does it), tracks readiness itself (see [`conn`]),
//! reads right after `accept` and writes right after `connect`, and checks
//! every timeout in one sweep twice a second instead of keeping a timer per
//! connection. An idle connection costs its two sockets and one small
//! [`conn::Conn`] in a slab.
//!
//! A visitor who is not admitted leaves this loop: its socket goes to the
//! tokio runtime, where the website is served.

mod buffers;
mod conn;

pub(crate) use conn::site_waits;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::admission::{Admitted, Decision, Reason};
use crate::shared::Shared;
use crate::upstream::start_connect;
use buffers::Pool;
use conn::{Conn, Step};

/// The token of the waker that tells a worker to stop.
const WAKE: Token = Token(0);
/// How often timeouts are checked.
const SWEEP_MS: u64 = 500;
/// Connections accepted per listener before others get a turn.
const ACCEPT_BATCH: usize = 64;
/// How long to wait before accepting again after an accept error (such as
/// running out of file descriptors).
const ACCEPT_PAUSE_MS: u64 = 50;

/// A worker's way to be told to stop.
pub(crate) struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Waker,
}

impl Stopper {
    /// Stops accepting; open connections get `grace` to finish.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }
}

/// One worker: its own copy of every plain listener and the connections
/// they accepted.
pub(crate) struct Worker {
    poll: Poll,
    /// Listeners and whether each may have more connections waiting;
    /// emptied on stop.
    listeners: Vec<(TcpListener, bool)>,
    /// The first token for connections: listeners come before it.
    base: usize,
    conns: Vec<Option<Conn>>,
    /// Slots free to reuse.
    free: Vec<usize>,
    /// Slots closed during this round: reused only after it, so that no
    /// event left in the round's batch reaches a newer connection.
    freed: Vec<usize>,
    /// Connections that used their budget and have more to move.
    again: Vec<usize>,
    live: usize,
    pool: Pool,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    start: Instant,
    stop: Arc<AtomicBool>,
    accept_paused_until: u64,
}

impl Worker {
    /// A worker for these listeners; visitors go to `runtime`.
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<(Self, Stopper)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let mut own = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(1 + i), Interest::READABLE)?;
            own.push((l, true));
        }
        let flag = Arc::new(AtomicBool::new(false));
        let worker = Self {
            poll,
            base: 1 + own.len(),
            listeners: own,
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            again: Vec::new(),
            live: 0,
            pool: Pool::default(),
            shared,
            runtime,
            start: Instant::now(),
            stop: flag.clone(),
            accept_paused_until: 0,
        };
        Ok((worker, Stopper { flag, waker }))
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn token(&self, slot: usize, upstream: bool) -> Token {
        Token(self.base + slot * 2 + usize::from(upstream))
    }

    /// Registers one side of a connection, for both directions at once, so
    /// that no `epoll_ctl` is ever needed to change interest.
    fn register(&self, stream: &mut TcpStream, slot: usize, upstream: bool) -> bool {
        let token = self.token(slot, upstream);
        self.poll
            .registry()
            .register(stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_ok()
    }

    /// Serves until stopped, then lets open connections finish for up to
    /// `grace`.
    pub fn run(mut self, grace: Duration) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = SWEEP_MS;
        let mut stopping: Option<Instant> = None;
        loop {
            let now = self.now_ms();
            let wait = if !self.again.is_empty() || self.accept_pending(now) {
                0
            } else {
                let accept_wait = self.accept_paused_until.saturating_sub(now);
                let sweep_wait = next_sweep.saturating_sub(now);
                if accept_wait > 0 {
                    accept_wait.min(sweep_wait)
                } else {
                    sweep_wait
                }
            };
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(wait)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.now_ms();
            for event in events.iter() {
                let t = event.token().0;
                if t == WAKE.0 {
                    continue;
                }
                if t < self.base {
                    if let Some(l) = self.listeners.get_mut(t - 1) {
                        l.1 = true;
                    }
                    continue;
                }
                let (slot, upstream) = ((t - self.base) / 2, (t - self.base) % 2 == 1);
                let Some(Some(c)) = self.conns.get_mut(slot) else {
                    continue;
                };
                let side = if upstream {
                    match c.upstream.as_mut() {
                        Some(s) => s,
                        None => continue,
                    }
                } else {
                    &mut c.client
                };
                let failed = event.is_error();
                if event.is_read_closed() || failed {
                    side.read_closed = true;
                }
                if event.is_readable() || event.is_read_closed() || failed {
                    side.readable = true;
                }
                if event.is_writable() || event.is_write_closed() || failed {
                    side.writable = true;
                    if upstream && !failed && event.is_writable() {
                        c.established = true;
                    }
                }
                self.drive(slot, now);
            }
            for i in 0..self.listeners.len() {
                self.accept(i, now);
            }
            for slot in std::mem::take(&mut self.again) {
                self.drive(slot, now);
            }
            self.free.append(&mut self.freed);
            if now >= next_sweep {
                self.sweep(now);
                self.free.append(&mut self.freed);
                next_sweep = now + SWEEP_MS;
            }
            if stopping.is_none() && self.stop.load(Ordering::Relaxed) {
                // No new connections: closing the listeners is enough.
                self.listeners.clear();
                stopping = Some(Instant::now());
            }
            if let Some(since) = stopping
                && (self.live == 0 || since.elapsed() >= grace)
            {
                return Ok(());
            }
        }
    }

    /// Whether some listener may still hold connections to accept now.
    fn accept_pending(&self, now: u64) -> bool {
        now >= self.accept_paused_until && self.listeners.iter().any(|l| l.1)
    }

    /// Accepts up to a batch of connections on listener `i`.
    fn accept(&mut self, i: usize, now: u64) {
        if now < self.accept_paused_until {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some((listener, ready)) = self.listeners.get_mut(i) else {
                return;
            };
            if !*ready {
                return;
            }
            match listener.accept() {
                // The peer's address is dropped here, unread.
                Ok((stream, _)) => self.opened(stream, now),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => *ready = false,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        tracing::warn!(error = %e, "accept failed");
                        self.accept_paused_until = now + ACCEPT_PAUSE_MS;
                        return;
                    }
                },
            }
        }
    }

    /// Takes in a connection just accepted.
    fn opened(&mut self, mut stream: TcpStream, now: u64) {
        if !self.shared.open() {
            return;
        }

        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if !self.register(&mut stream, slot, false) {
            self.free.push(slot);
            self.shared.close();
            return;
        }
        self.conns[slot] = Some(Conn::new(stream, now));
        self.live += 1;
        self.drive(slot, now);
    }

    /// Moves a connection on and acts on what it needs next.
    fn drive(&mut self, slot: usize, now: u64) {
        loop {
            // Fields borrowed one by one: no clone of the shared state (an
            // atomic write on a line every worker uses) per call.
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return;
            };
            let step = c.drive(&self.shared, &mut self.pool, now);
            let unreached = c.upstream.is_some() && !c.established;
            match step {
                Step::Wait => return,
                Step::Again => {
                    self.again.push(slot);
                    return;
                }
                Step::Connect(admitted) => {
                    if !self.connect(slot, admitted, now) {
                        self.shared.upstream_failed();
                        self.close(slot);
                        return;
                    }
                }
                Step::Visitor => {
                    self.send_to_website(slot, now);
                    return;
                }
                Step::Finished => {
                    self.close(slot);
                    return;
                }
                Step::Failed => {
                    if unreached {
                        self.shared.upstream_failed();
                    }
                    if let Some(page) = c.gateway_failure(&self.shared) {
                        // Best effort: a client that cannot take it now is
                        // closed all the same.
                        let _ = std::io::Write::write(&mut &c.client.stream, &page);
                    }
                    self.close(slot);
                    return;
                }
            }
        }
    }

    /// Starts the upstream connection of an admitted client.
    fn connect(&mut self, slot: usize, admitted: Admitted, now: u64) -> bool {
        let Some(to) = self
            .shared
            .upstream_for(admitted.target)
            .and_then(|u| u.addr())
        else {
            return false;
        };
        let data_follows =
            matches!(self.conns.get(slot), Some(Some(c)) if c.has_early_data(&admitted));
        let Ok(std) = start_connect(to, data_follows) else {
            return false;
        };
        let mut up = TcpStream::from_std(std);
        if !self.register(&mut up, slot, true) {
            return false;
        }
        match self.conns.get_mut(slot) {
            Some(Some(c)) => c.connected(up, admitted, &self.shared, now),
            _ => false,
        }
    }

    /// Closes a connection: dropping the sockets closes them, which also
    /// takes them out of epoll.
    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) {
            c.release(&mut self.pool);
            self.freed.push(slot);
            self.live -= 1;
            self.shared.close();
        }
    }

    /// Hands a visitor to the runtime that serves the website.
    fn send_to_website(&mut self, slot: usize, now: u64) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let waited = Duration::from_millis(now.saturating_sub(c.since_ms));
        self.freed.push(slot);
        self.live -= 1;
        let (mut stream, first) = c.into_visitor();
        // Still open, so still registered: take it out of this loop first.
        if self.poll.registry().deregister(&mut stream).is_err() {
            self.shared.close();
            return;
        }
        let stream = std::net::TcpStream::from(stream);
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            if let Ok(tcp) = tokio::net::TcpStream::from_std(stream) {
                shared.turn_away(tcp, &first, false, waited).await;
            }
            shared.close();
        });
    }

    /// Applies the timeouts: the handshake (first bytes, then the upstream
    /// connect) and idleness.
    fn sweep(&mut self, now: u64) {
        let handshake = self.shared.handshake.as_millis() as u64;
        let idle = self.shared.idle.as_millis() as u64;
        for slot in 0..self.conns.len() {
            let Some(c) = &self.conns[slot] else { continue };
            if c.upstream.is_none() {
                if now.saturating_sub(c.since_ms) >= handshake {
                    self.shared.count(Decision::Decoy(Reason::NoProof));
                    self.send_to_website(slot, now);
                }
            } else if !c.established {
                if now.saturating_sub(c.since_ms) >= handshake {
                    self.shared.upstream_failed();
                    self.close(slot);
                }
            } else if now.saturating_sub(c.last_ms) >= idle {
                self.shared
                    .metrics
                    .idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                self.close(slot);
            }
        }
    }
}
