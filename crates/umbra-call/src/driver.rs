//! The I/O edge of a call: a tokio task that owns the call's UDP socket (or
//! its stream to the relay, through a proxy), a
//! 20 ms audio clock, the audio source and sink, and one [`Engine`]. The
//! signalling side talks to it through a [`CallHandle`]: commands in
//! (offer, answer, candidates, allow direct, hang up), notices out (engine
//! events, live statistics, the end of the call).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use umbra_turn::demux::frame_len;

use crate::CallError;
use crate::audio::{Sink, Source};
use crate::codec::FRAME;
use crate::engine::{CallStats, Engine, EngineConfig, EngineEvent};

/// What the signalling side asks of a running call.
#[derive(Debug)]
pub enum Command {
    /// Caller: make the offer (once the relay is ready).
    CreateOffer(oneshot::Sender<Result<String, CallError>>),
    /// Callee: accept this offer and give the answer.
    AcceptOffer(String, oneshot::Sender<Result<String, CallError>>),
    /// Caller: apply the callee's answer.
    AcceptAnswer(String, oneshot::Sender<Result<(), CallError>>),
    /// A candidate the other side trickled.
    RemoteCandidate(String),
    /// Both sides allow a direct path.
    AllowDirect,
    /// End the call.
    HangUp,
}

/// What a running call reports.
#[derive(Debug)]
pub enum Notice {
    /// An engine event (relay ready, candidate to trickle, connected, ...).
    Engine(EngineEvent),
    /// Live figures, once a second while connected.
    Stats(CallStats),
    /// The first frame of the other side's audio is playing.
    Hearing,
}

/// How a call ended.
#[derive(Debug)]
pub struct CallSummary {
    /// Time from connected to the end (zero if it never connected).
    pub talk_time: Duration,
    /// Time from start to connected.
    pub setup_time: Option<Duration>,
    /// Final figures.
    pub stats: CallStats,
    /// Every address the call sent a packet to.
    pub contacted: BTreeSet<SocketAddr>,
    /// Packets dropped because they would have gone straight to the other
    /// side while the call was relay-only.
    pub direct_sends_blocked: u64,
    /// Why it ended: `None` for a hang-up or the end of `--duration`.
    pub error: Option<CallError>,
}

/// A running call.
pub struct CallHandle {
    /// Commands to the call.
    pub commands: mpsc::Sender<Command>,
    /// Notices from the call.
    pub notices: mpsc::Receiver<Notice>,
    task: tokio::task::JoinHandle<CallSummary>,
}

impl CallHandle {
    /// Waits for the call to end (by itself: its duration, a failure, or a
    /// hang-up sent before). Dropping the handle instead hangs up.
    pub async fn finish(self) -> CallSummary {
        let CallHandle { commands, task, .. } = self;
        let result = task.await;
        drop(commands);
        match result {
            Ok(s) => s,
            Err(e) => CallSummary {
                talk_time: Duration::ZERO,
                setup_time: None,
                stats: CallStats::default(),
                contacted: BTreeSet::new(),
                direct_sends_blocked: 0,
                error: Some(CallError::State(if e.is_panic() {
                    "the call task panicked"
                } else {
                    "the call task was cancelled"
                })),
            },
        }
    }

    /// Sends a command, waiting for its reply.
    pub async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CallError>>) -> Command,
    ) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| CallError::State("the call has ended"))?;
        rx.await
            .map_err(|_| CallError::State("the call has ended"))?
    }
}

/// What a call plays and records, and how long it may last.
pub struct Media {
    /// Our audio.
    pub source: Box<dyn Source>,
    /// What we hear.
    pub sink: Box<dyn Sink>,
    /// Hang up this long after connecting (`None`: until told).
    pub duration: Option<Duration>,
}

/// A byte stream to the relay (TURN over TCP or TLS, e.g. through a proxy).
pub trait RelayStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RelayStream for T {}

/// How a call's packets leave this machine.
pub enum CallIo {
    /// One UDP socket for the relay and (if ever allowed) direct ICE.
    Udp(UdpSocket),
    /// A stream to the relay only: the call stays relay-only, and this
    /// device contacts nothing but the far end of the stream (a proxy).
    /// `relay` is the address the engine's `RelayServer` names it by.
    Stream {
        /// The stream.
        stream: Box<dyn RelayStream>,
        /// What the engine calls the relay.
        relay: SocketAddr,
    },
}

/// What [`Io::recv`] got.
enum Received {
    /// A datagram from an address.
    Datagram(usize, SocketAddr),
    /// Stream bytes, appended to the frame buffer.
    Bytes,
    /// The stream ended.
    Closed,
}

struct Io {
    io: CallIo,
    /// Stream bytes not yet cut into TURN frames.
    pending: Vec<u8>,
}

impl Io {
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Received> {
        match &mut self.io {
            CallIo::Udp(s) => s
                .recv_from(buf)
                .await
                .map(|(n, a)| Received::Datagram(n, a)),
            CallIo::Stream { stream, .. } => {
                let n = stream.read(buf).await?;
                if n == 0 {
                    return Ok(Received::Closed);
                }
                self.pending.extend_from_slice(&buf[..n]);
                Ok(Received::Bytes)
            }
        }
    }

    /// Whole TURN frames received on a stream, in order.
    fn frames(&mut self) -> Result<Vec<Vec<u8>>, CallError> {
        let mut out = Vec::new();
        loop {
            match frame_len(&self.pending) {
                Ok(Some(n)) if self.pending.len() >= n => {
                    out.push(self.pending.drain(..n).collect());
                }
                Ok(_) => return Ok(out),
                Err(e) => {
                    return Err(CallError::Relay(format!("sent an unreadable stream: {e}")));
                }
            }
        }
    }

    /// Sends a datagram; on a stream only to the relay (anything else is
    /// refused: false).
    async fn send(&mut self, to: SocketAddr, data: &[u8]) -> std::io::Result<bool> {
        match &mut self.io {
            CallIo::Udp(s) => s.send_to(data, to).await.map(|_| true),
            CallIo::Stream { stream, relay } => {
                if to != *relay {
                    return Ok(false);
                }
                stream.write_all(data).await?;
                Ok(true)
            }
        }
    }
}

/// Binds the call's UDP socket on the local address that routes toward
/// `relay` (so its address is a concrete IP, usable as a host candidate if a
/// direct path is ever allowed). Nothing is sent.
pub fn bind_toward(relay: SocketAddr) -> Result<(UdpSocket, SocketAddr), CallError> {
    let any: SocketAddr = match relay {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(relay)?;
    let ip = probe.local_addr()?.ip();
    drop(probe);
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok((UdpSocket::from_std(socket)?, local))
}

/// Starts a call on `io` (a UDP socket bound at `config.local`, or a
/// stream to the relay).
pub fn spawn(config: EngineConfig, io: CallIo, media: Media) -> Result<CallHandle, CallError> {
    let started = Instant::now();
    let engine = Engine::new(config, started)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (note_tx, note_rx) = mpsc::channel(256);
    let io = Io {
        io,
        pending: Vec::new(),
    };
    let task = tokio::spawn(run(engine, io, media, cmd_rx, note_tx, started));
    Ok(CallHandle {
        commands: cmd_tx,
        notices: note_rx,
        task,
    })
}

struct Loop {
    engine: Engine,
    io: Io,
    notices: mpsc::Sender<Notice>,
    contacted: BTreeSet<SocketAddr>,
    /// Packets for anyone but the relay on a relay stream (never sent).
    refused: u64,
    connected_at: Option<Instant>,
    error: Option<CallError>,
}

impl Loop {
    /// Sends what the engine queued and passes its events on.
    async fn flush(&mut self) {
        while let Some(d) = self.engine.poll_transmit() {
            match self.io.send(d.to, &d.data).await {
                Ok(true) => {
                    self.contacted.insert(d.to);
                }
                Ok(false) => self.refused += 1,
                Err(e) => tracing::debug!(error = %e, "call datagram not sent"),
            }
        }
        while let Some(e) = self.engine.poll_event() {
            match e {
                EngineEvent::Connected(_) if self.connected_at.is_none() => {
                    self.connected_at = Some(Instant::now());
                }
                EngineEvent::Failed(err) => {
                    self.error = Some(err);
                    continue;
                }
                _ => {}
            }
            let _ = self.notices.send(Notice::Engine(e)).await;
        }
    }

    fn command(&mut self, now: Instant, c: Command) -> bool {
        match c {
            Command::CreateOffer(reply) => {
                let _ = reply.send(self.engine.create_offer(now));
            }
            Command::AcceptOffer(offer, reply) => {
                let _ = reply.send(self.engine.accept_offer(now, &offer));
            }
            Command::AcceptAnswer(answer, reply) => {
                let _ = reply.send(self.engine.accept_answer(now, &answer));
            }
            Command::RemoteCandidate(line) => {
                if let Err(e) = self.engine.add_remote_candidate(now, &line) {
                    tracing::debug!(error = %e, "ignored a remote candidate");
                }
            }
            Command::AllowDirect => {
                if let Err(e) = self.engine.allow_direct(now) {
                    tracing::debug!(error = %e, "direct path not added");
                }
            }
            Command::HangUp => {
                self.engine.hang_up(now);
                return false;
            }
        }
        true
    }
}

async fn run(
    engine: Engine,
    io: Io,
    mut media: Media,
    mut commands: mpsc::Receiver<Command>,
    notices: mpsc::Sender<Notice>,
    started: Instant,
) -> CallSummary {
    let mut l = Loop {
        engine,
        io,
        notices,
        contacted: BTreeSet::new(),
        refused: 0,
        connected_at: None,
        error: None,
    };
    let mut buf = vec![0u8; 2048];
    let mut audio = tokio::time::interval(Duration::from_millis(20));
    audio.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut stats = tokio::time::interval(Duration::from_secs(1));
    stats.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut commands_open = true;
    let mut hearing = false;
    l.flush().await;
    loop {
        if l.engine.is_over() {
            break;
        }
        if let (Some(at), Some(d)) = (l.connected_at, media.duration)
            && at.elapsed() >= d
        {
            l.engine.hang_up(Instant::now());
            break;
        }
        let wake = tokio::time::Instant::from_std(l.engine.poll_timeout());
        tokio::select! {
            r = l.io.recv(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok(Received::Datagram(n, from)) => {
                        l.engine.handle_datagram(now, from, &buf[..n]);
                    }
                    Ok(Received::Bytes) => match l.io.frames() {
                        Ok(frames) => {
                            let relay = l.engine.relay_server();
                            for f in frames {
                                if let Some(relay) = relay {
                                    l.engine.handle_datagram(now, relay, &f);
                                }
                            }
                        }
                        Err(e) => {
                            l.error = Some(e);
                            l.engine.hang_up(now);
                        }
                    },
                    Ok(Received::Closed) | Err(_) if matches!(l.io.io, CallIo::Stream { .. }) => {
                        l.error = Some(CallError::Relay("closed the connection".into()));
                        l.engine.hang_up(now);
                    }
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(wake) => {
                l.engine.handle_timeout(Instant::now());
            }
            _ = audio.tick() => {
                if l.connected_at.is_some() {
                    let now = Instant::now();
                    let frame = media.source.next_frame().unwrap_or([0; FRAME]);
                    if let Err(e) = l.engine.send_audio(now, &frame) {
                        l.error = Some(e);
                        l.engine.hang_up(now);
                    }
                    let heard = l.engine.play(now);
                    if let Err(e) = media.sink.play(&heard) {
                        l.error = Some(e);
                        l.engine.hang_up(now);
                    }
                    if !hearing && l.engine.received().played > 0 {
                        hearing = true;
                        let _ = l.notices.send(Notice::Hearing).await;
                    }
                }
            }
            _ = stats.tick(), if l.connected_at.is_some() => {
                let _ = l.notices.send(Notice::Stats(l.engine.stats())).await;
            }
            c = commands.recv(), if commands_open => {
                match c {
                    Some(c) => {
                        if !l.command(Instant::now(), c) {
                            l.flush().await;
                            break;
                        }
                    }
                    // The signalling side is gone: hang up.
                    None => {
                        commands_open = false;
                        l.engine.hang_up(Instant::now());
                    }
                }
            }
        }
        l.flush().await;
    }
    l.flush().await;
    if let Err(e) = media.sink.finish()
        && l.error.is_none()
    {
        l.error = Some(e);
    }
    CallSummary {
        talk_time: l.connected_at.map(|t| t.elapsed()).unwrap_or_default(),
        setup_time: l.connected_at.map(|t| t.saturating_duration_since(started)),
        stats: l.engine.stats(),
        contacted: l.contacted,
        direct_sends_blocked: l.engine.direct_sends_blocked() + l.refused,
        error: l.error,
    }
}
