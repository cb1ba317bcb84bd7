//! One plain-port connection: admission on its first bytes, then bytes
//! moved both ways as the event loop reports readiness.
//!
//! Readiness is kept here, per socket, the way an edge-triggered loop must:
//! a socket is readable until a read comes back short or would block, and
//! writable until a write comes back short or would block. A short read
//! means the kernel's queue was emptied; whatever arrives after it raises
//! a new edge, so no read is spent just to learn that nothing is left. The
//! exception is the peer's end of stream: once the loop has seen it
//! signalled, it may have come in the same edge as the last bytes, so the
//! socket stays readable until a read returns the end.
//!
//! An admitted client opened with a WebSocket upgrade, answered 101 as nginx
//! answers when it passes an upgrade to a backend. When the upgrade carried
//! the client's first write (`umbra_wire::upgrade`), that goes upstream at
//! once and the 101 waits for the upstream's first bytes, to go out with
//! them in one write: the answer the client waits for is then the server's
//! too, and the disguise costs no round trip. Otherwise the 101 goes at
//! once. Each direction
//! carries a mask (`umbra_wire::mask`) for as long as it has one: the first
//! Noise message toward the messaging server, everything toward the relay.
//! While a mask is on, a direction copies through a buffer and unmasks or
//! masks what it read.
//!
//! A direction starts by copying through a pooled buffer. When a read fills
//! the whole buffer it is a bulk transfer, and the direction moves through a
//! pooled pipe instead (`splice`, no copy through the proxy) until splices
//! turn small again (see `buffers`).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};

use mio::net::TcpStream;
use umbra_wire::mask::{End, Mask};
use umbra_wire::upgrade;

use super::buffers::{self, Pipe, Pool};
use crate::admission::{Admitted, Decision, Reason};
use crate::proxy_protocol;
use crate::shared::{Shared, unix_now};

/// Chunks moved per direction before other connections get a turn.
const BUDGET: usize = 16;
/// Most bytes read while deciding (PROXY header, preamble, what follows).
const MAX_FIRST: usize = 4096;
/// A splice smaller than this ends bulk mode: the transfer has turned into
/// small messages, for which a buffer costs less.
const SMALL: usize = 4096;

/// A socket and what is known of its readiness.
pub(super) struct Side {
    pub stream: TcpStream,
    pub readable: bool,
    pub writable: bool,
    /// The peer's end of stream (or an error) has been signalled.
    pub read_closed: bool,
}

impl Side {
    fn new(stream: TcpStream, readable: bool, writable: bool) -> Self {
        Self {
            stream,
            readable,
            writable,
            read_closed: false,
        }
    }

    /// After a read of `n` bytes into a buffer of `len`: a short read
    /// drained the queue, unless an end of stream is still to be read.
    fn read_some(&mut self, n: usize, len: usize) {
        if n < len && !self.read_closed {
            self.readable = false;
        }
    }
}

/// Bytes read from one side, not yet all written to the other.
struct Pending {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A read or splice from `from` failed: would-block ends reading until the
/// next edge, an interrupted call is tried again, anything else ends the
/// connection.
fn read_failed(from: &mut Side, e: io::Error) -> io::Result<Option<Flow>> {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            from.readable = false;
            Ok(Some(Flow::Blocked))
        }
        io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// A write or splice to `to` failed: a full send buffer (or a connect not
/// done yet) ends writing until the next edge, an interrupted call is tried
/// again, anything else ends the connection.
fn write_failed(to: &mut Side, e: io::Error) -> io::Result<Option<Flow>> {
    if crate::upstream::not_yet(&e) {
        to.writable = false;
        return Ok(Some(Flow::Blocked));
    }
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// One direction of the forward.
#[derive(Default)]
struct Direction {
    /// Bytes read into a buffer, not yet all written.
    pending: Option<Pending>,
    /// A pipe holding this many bytes not yet written.
    piped: Option<(Pipe, usize)>,
    /// Reads come back whole: a bulk transfer, moved through a pipe.
    bulk: bool,
    ended: bool,
    /// Applied to every byte read, until it is done.
    mask: Option<Box<Mask>>,
    /// Written in front of the first bytes read (the 101 that waits for
    /// the upstream's answer).
    prefix: Option<Vec<u8>>,
}

/// Where a direction stands after moving what it could.
enum Flow {
    /// Waiting for readiness.
    Blocked,
    /// The source ended and everything was written.
    Done,
    /// Used its budget with more to move.
    Budget,
}

/// The counters a direction adds to.
#[derive(Clone, Copy)]
struct Counters<'a> {
    bytes: &'a AtomicU64,
    spliced: &'a AtomicU64,
}

/// What happened on the wire in one pass.
#[derive(Default)]
struct Progress {
    read: bool,
    wrote: bool,
}

impl Direction {
    /// Moves bytes `from` → `to` until blocked, done, or out of budget:
    /// first whatever waits in a buffer or a pipe, then new bytes. A
    /// direction starts with buffers and turns to a pipe (no copy through
    /// the proxy) once a read fills a whole buffer.
    fn pump(
        &mut self,
        from: &mut Side,
        to: &mut Side,
        pool: &mut Pool,
        counters: Counters<'_>,
        other_ended: bool,
        progress: &mut Progress,
    ) -> io::Result<Flow> {
        for _ in 0..BUDGET {
            if let Some(p) = &mut self.pending {
                if !to.writable {
                    return Ok(Flow::Blocked);
                }
                match (&to.stream).write(&p.buf[p.start..p.end]) {
                    Ok(n) => {
                        progress.wrote = true;
                        p.start += n;
                        if p.start < p.end {
                            // Short: the send buffer is full, and the kernel
                            // will say when there is room.
                            to.writable = false;
                        } else if let Some(done) = self.pending.take() {
                            pool.give(done.buf);
                        }
                    }
                    Err(e) => {
                        if let Some(flow) = write_failed(to, e)? {
                            return Ok(flow);
                        }
                    }
                }
                continue;
            }
            if let Some((pipe, left)) = &mut self.piped {
                if !to.writable {
                    return Ok(Flow::Blocked);
                }
                match buffers::drain(pipe, &to.stream, *left) {
                    Ok(n) => {
                        progress.wrote = true;
                        *left -= n;
                        if *left > 0 {
                            to.writable = false;
                        } else if let Some((pipe, _)) = self.piped.take() {
                            pool.give_pipe(pipe);
                        }
                    }
                    Err(e) => {
                        if let Some(flow) = write_failed(to, e)? {
                            return Ok(flow);
                        }
                    }
                }
                continue;
            }
            if self.ended {
                return Ok(Flow::Done);
            }
            if !from.readable {
                return Ok(Flow::Blocked);
            }
            if self.bulk {
                let Ok(pipe) = pool.take_pipe() else {
                    // No descriptor for a pipe: copy instead.
                    self.bulk = false;
                    continue;
                };
                match buffers::fill(&from.stream, &pipe) {
                    Ok(0) => {
                        pool.give_pipe(pipe);
                        self.end(from, to, other_ended);
                    }
                    Ok(n) => {
                        // Still readable: a short splice may only mean the
                        // pipe was full.
                        progress.read = true;
                        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        counters.spliced.fetch_add(n as u64, Ordering::Relaxed);
                        self.bulk = n >= SMALL;
                        self.piped = Some((pipe, n));
                    }
                    Err(e) => {
                        pool.give_pipe(pipe);
                        if let Some(flow) = read_failed(from, e)? {
                            return Ok(flow);
                        }
                    }
                }
                continue;
            }
            let mut buf = pool.take();
            // What waits to go in front is copied in first, so that it and
            // the bytes read leave in one write (`connected` holds only
            // what fits well within a buffer).
            let ahead = match self.prefix.as_deref() {
                Some(prefix) => {
                    buf[..prefix.len()].copy_from_slice(prefix);
                    prefix.len()
                }
                None => 0,
            };
            match (&from.stream).read(&mut buf[ahead..]) {
                Ok(0) => {
                    if ahead > 0 {
                        // Ended without a byte: what waited goes alone,
                        // and the end is read again once it is written.
                        self.prefix = None;
                        self.pending = Some(Pending {
                            buf,
                            start: 0,
                            end: ahead,
                        });
                        continue;
                    }
                    pool.give(buf);
                    self.end(from, to, other_ended);
                }
                Ok(n) => {
                    progress.read = true;
                    self.prefix = None;
                    from.read_some(n, buf.len() - ahead);
                    if let Some(mask) = &mut self.mask {
                        mask.apply(&mut buf[ahead..ahead + n]);
                        if mask.done() {
                            self.mask = None;
                        }
                    }
                    // A pipe would carry bytes past the mask: only unmasked
                    // transfers turn to bulk.
                    self.bulk = n == buf.len() - ahead && self.mask.is_none();
                    counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    self.pending = Some(Pending {
                        buf,
                        start: 0,
                        end: ahead + n,
                    });
                }
                Err(e) => {
                    pool.give(buf);
                    if let Some(flow) = read_failed(from, e)? {
                        return Ok(flow);
                    }
                }
            }
        }
        Ok(Flow::Budget)
    }

    /// The source ended: pass the end of stream on while the other
    /// direction goes on (once both ended, closing both does it).
    fn end(&mut self, from: &mut Side, to: &Side, other_ended: bool) {
        self.ended = true;
        from.readable = false;
        if !other_ended {
            let _ = to.stream.shutdown(Shutdown::Write);
        }
    }
}

/// What the event loop does next with a connection.
pub(super) enum Step {
    /// Nothing until the next readiness event.
    Wait,
    /// More to do right away, after the others had their turn.
    Again,
    /// Admitted: connect its upstream.
    Connect(Admitted),
    /// Not admitted: hand it to the website.
    Visitor,
    /// Both directions ended.
    Finished,
    /// A socket failed (or sent a malformed PROXY header).
    Failed,
}

/// Whether the built-in website would still be reading `first` (so a
/// proxy that waits for more gives nothing away).
pub(crate) fn site_waits(first: &[u8]) -> bool {
    matches!(
        crate::decoy::http::scan(first),
        crate::decoy::http::Scan::Incomplete
    )
}

/// A connection on a plain port.
pub(super) struct Conn {
    pub client: Side,
    /// Set once admitted.
    pub upstream: Option<Side>,
    /// Bytes read before the decision.
    first: Vec<u8>,
    /// Length of the PROXY protocol header at the start of `first`.
    skip: usize,
    /// Length of the upgrade request after it, once admitted.
    proof_len: usize,
    up: Direction,
    down: Direction,
    /// Whether the upstream connection is known to be up.
    pub established: bool,
    /// When the current phase (admission, then connecting) began, in ms.
    pub since_ms: u64,
    /// When bytes last moved, in ms.
    pub last_ms: u64,
}

impl Conn {
    /// A connection just accepted: try reading at once, as a client sends
    /// right behind its connect.
    pub fn new(stream: TcpStream, now_ms: u64) -> Self {
        Self {
            client: Side::new(stream, true, true),
            upstream: None,
            first: Vec::new(),
            skip: 0,
            proof_len: 0,
            up: Direction::default(),
            down: Direction::default(),
            established: false,
            since_ms: now_ms,
            last_ms: now_ms,
        }
    }

    /// Moves the connection on as far as readiness allows.
    pub fn drive(&mut self, shared: &Shared, pool: &mut Pool, now_ms: u64) -> Step {
        if self.upstream.is_some() {
            self.forward(shared, pool, now_ms)
        } else {
            self.decide(shared)
        }
    }

    /// Reads first bytes until the admission decision.
    fn decide(&mut self, shared: &Shared) -> Step {
        let mut buf = [0u8; 1024];
        loop {
            if !self.client.readable {
                return Step::Wait;
            }
            match (&self.client.stream).read(&mut buf) {
                Ok(0) => {
                    // Gone before proving anything: a visitor, who may
                    // still read an answer.
                    shared.count(Decision::Decoy(Reason::NoProof));
                    return Step::Visitor;
                }
                Ok(n) => {
                    self.client.read_some(n, buf.len());
                    self.first.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.client.readable = false;
                    return Step::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Failed,
            }
            if shared.proxy_protocol && self.skip == 0 {
                match proxy_protocol::header_len(&self.first) {
                    Err(_) => return Step::Failed,
                    Ok(None) => continue,
                    Ok(Some(n)) => self.skip = n,
                }
            }
            let body = &self.first[self.skip..];
            if body.is_empty() {
                continue;
            }
            let decision = match shared.admission.decide_plain(body, unix_now()) {
                // Waiting only while the website would wait too: a head it
                // would already answer (a bare-LF head, HTTP/0.9, a bad
                // line) is answered now, whatever it starts with.
                Decision::NeedMore if self.first.len() < MAX_FIRST && site_waits(body) => continue,
                Decision::NeedMore => Decision::Decoy(Reason::NoProof),
                d => d,
            };
            shared.count(decision);
            return match decision {
                Decision::Admit(a) => {
                    self.proof_len = a.proof_len;
                    Step::Connect(a)
                }
                _ => Step::Visitor,
            };
        }
    }

    /// Whether bytes come with the upgrade for the upstream: in it, or
    /// after it (sent before the 101 came).
    pub fn has_early_data(&self, a: &Admitted) -> bool {
        a.early.is_some() || self.first.len() > self.skip + self.proof_len
    }

    /// Admitted as `a` and connecting: `upstream` was just started. What
    /// the client sent for the upstream (in the upgrade's cookie, then any
    /// bytes after it) is unmasked and sent as soon as the upstream takes
    /// it. The 101 goes out at once, or, when the upgrade carried bytes,
    /// with the upstream's first answer. `false` if the early bytes do not
    /// decode (the admission checked that they do).
    pub fn connected(
        &mut self,
        upstream: TcpStream,
        a: Admitted,
        shared: &Shared,
        now_ms: u64,
    ) -> bool {
        let (mut up, down) = Mask::pair(shared.admission.prf(), &a.nonce, a.target, End::Receiver);
        let head = self.first.get(self.skip..).unwrap_or_default();
        let mut buf = match a.early {
            Some(early) => match early.decode(head) {
                Some(bytes) => bytes,
                None => return false,
            },
            None => Vec::new(),
        };
        buf.extend_from_slice(head.get(self.proof_len..).unwrap_or_default());
        if !buf.is_empty() {
            // Sized to fit: it may wait for the connect to complete, and a
            // pool buffer held that long by every connecting client would be
            // memory no idle connection should cost.
            let end = buf.len();
            shared
                .metrics
                .bytes_up
                .fetch_add(end as u64, Ordering::Relaxed);
            up.apply(&mut buf);
            self.up.pending = Some(Pending { buf, start: 0, end });
        }
        self.up.mask = (!up.done()).then(|| Box::new(up));
        self.down.mask = Some(Box::new(down));
        let answer = shared
            .site
            .upgraded(&upgrade::accept_value(&a.nonce), unix_now());
        if a.early.is_some() && answer.len() < buffers::CHUNK / 2 {
            self.down.prefix = Some(answer);
        } else {
            let end = answer.len();
            self.down.pending = Some(Pending {
                buf: answer,
                start: 0,
                end,
            });
        }
        self.first = Vec::new();
        // Try writing at once: on a near upstream the connect is done.
        self.upstream = Some(Side::new(upstream, false, true));
        self.since_ms = now_ms;
        self.last_ms = now_ms;
        true
    }

    /// What the client is told when the upstream fails while the 101 is
    /// still held (it has not been answered yet): the site's 502, as nginx
    /// answers when its backend fails. `None` once the 101 went out.
    pub fn gateway_failure(&self, shared: &Shared) -> Option<Vec<u8>> {
        self.down
            .prefix
            .is_some()
            .then(|| shared.site.bad_gateway(unix_now()))
    }

    /// The client's socket and the bytes it sent after any PROXY header,
    /// for the website.
    pub fn into_visitor(self) -> (TcpStream, Vec<u8>) {
        let mut first = self.first;
        first.drain(..self.skip.min(first.len()));
        (self.client.stream, first)
    }

    /// Forwards both ways.
    fn forward(&mut self, shared: &Shared, pool: &mut Pool, now_ms: u64) -> Step {
        let Some(upstream) = self.upstream.as_mut() else {
            return Step::Failed;
        };
        let m = &shared.metrics;
        let (mut to_up, mut to_client) = (Progress::default(), Progress::default());
        let down_ended = self.down.ended;
        let a = self.up.pump(
            &mut self.client,
            upstream,
            pool,
            Counters {
                bytes: &m.bytes_up,
                spliced: &m.bytes_spliced,
            },
            down_ended,
            &mut to_up,
        );
        let up_ended = self.up.ended;
        let b = self.down.pump(
            upstream,
            &mut self.client,
            pool,
            Counters {
                bytes: &m.bytes_down,
                spliced: &m.bytes_spliced,
            },
            up_ended,
            &mut to_client,
        );
        if to_up.wrote || to_client.read {
            self.established = true;
        }
        if to_up.read || to_client.read {
            self.last_ms = now_ms;
        }
        match (a, b) {
            (Err(_), _) | (_, Err(_)) => Step::Failed,
            (Ok(Flow::Done), Ok(Flow::Done)) => Step::Finished,
            (Ok(Flow::Budget), _) | (_, Ok(Flow::Budget)) => Step::Again,
            _ => Step::Wait,
        }
    }

    /// Gives back buffers and empty pipes still held (the connection is
    /// closing; a pipe with bytes left in it is closed with them).
    pub fn release(&mut self, pool: &mut Pool) {
        for d in [&mut self.up, &mut self.down] {
            if let Some(p) = d.pending.take() {
                pool.give(p.buf);
            }
            if let Some((pipe, 0)) = d.piped.take() {
                pool.give_pipe(pipe);
            }
        }
    }
}
