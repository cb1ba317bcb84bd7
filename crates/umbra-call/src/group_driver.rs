//! The I/O edge of a member's group call: a tokio task that owns the UDP
//! socket toward the forwarding unit, a 20 ms audio clock, the audio source
//! and sink, one [`Engine`] (toward the unit, its only address) and the
//! member's [`GroupAudio`] (sealing, per-speaker buffers, the mix).
//!
//! [`prepare`] binds the socket and makes the offer the control channel
//! takes to the unit; [`Prepared::start`] applies the unit's answer and
//! runs until hang-up, the media's duration, or the connection failing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::CallError;
use crate::audio::{Sink, Source};
use crate::codec::FRAME;
use crate::driver::bind_toward;
use crate::e2ee::{Dropped, EpochSecret, FrameKeys, SealError};
use crate::engine::{Engine, EngineEvent};
use crate::group::{GroupAudio, SpeakerStats};

/// Loss the encoder plans for (percent), as a relayed hop might see.
const EXPECTED_LOSS: i32 = 5;

/// What a member sends and where what it hears goes.
pub struct GroupMedia {
    /// What we send.
    pub source: Box<dyn Source>,
    /// Where the mix of everyone else goes.
    pub sink: Box<dyn Sink>,
    /// End the call this long after it connected (`None`: until hang-up).
    pub duration: Option<Duration>,
}

/// A socket and an engine toward the unit, with the offer to send it.
pub struct Prepared {
    socket: UdpSocket,
    engine: Engine,
    /// The SDP offer for the unit (one audio stream, our host candidate).
    pub offer: String,
}

/// What the signalling side asks of a running group call.
#[derive(Debug)]
pub enum GroupCommand {
    /// The call's group moved to a new epoch (someone joined or left).
    Rekey(EpochSecret),
    /// End the call.
    HangUp,
}

/// What a running group call reports.
#[derive(Debug)]
pub enum GroupNotice {
    /// The connection to the unit is up.
    Connected,
    /// Each speaker's level, loss and activity, once a second.
    Speakers(Vec<SpeakerStats>),
    /// The call moved to new keys (or could not: then nothing more is
    /// sent until a later move succeeds).
    Rekeyed(Result<u64, String>),
}

/// How a group call ended.
#[derive(Debug)]
pub struct GroupSummary {
    /// Each speaker as last seen.
    pub speakers: Vec<SpeakerStats>,
    /// Frames dropped unplayed (forged, replayed, unknown keys).
    pub dropped: Dropped,
    /// Every address we sent a datagram to.
    pub sent_to: BTreeSet<SocketAddr>,
    /// Every address a datagram came from.
    pub heard_from: BTreeSet<SocketAddr>,
    /// Sends refused because they were not for the unit.
    pub direct_sends_blocked: u64,
    /// Time from start to connected.
    pub setup_time: Option<Duration>,
    /// Why it ended: `None` for a hang-up or the end of the duration.
    pub error: Option<CallError>,
}

/// A running group call.
pub struct GroupHandle {
    /// Commands to the call (dropping every sender hangs up).
    pub commands: mpsc::Sender<GroupCommand>,
    /// Notices from the call.
    pub notices: mpsc::Receiver<GroupNotice>,
    task: tokio::task::JoinHandle<GroupSummary>,
}

/// Binds a socket toward the unit at `unit` and makes the offer.
pub fn prepare(unit: SocketAddr) -> Result<Prepared, CallError> {
    let (socket, local) = bind_toward(unit)?;
    let now = Instant::now();
    let mut engine = Engine::toward_unit(unit, local, now)?;
    let offer = engine.create_offer(now)?;
    Ok(Prepared {
        socket,
        engine,
        offer,
    })
}

impl Prepared {
    /// Applies the unit's answer and starts the call under `keys`.
    pub fn start(
        mut self,
        answer: &str,
        keys: FrameKeys,
        media: GroupMedia,
    ) -> Result<GroupHandle, CallError> {
        let now = Instant::now();
        self.engine.accept_answer(now, answer)?;
        let audio = GroupAudio::new(keys, EXPECTED_LOSS, now)?;
        let (notice_tx, notices) = mpsc::channel(16);
        let (commands, command_rx) = mpsc::channel(16);
        let task = tokio::spawn(run(self, audio, media, notice_tx, command_rx, now));
        Ok(GroupHandle {
            commands,
            notices,
            task,
        })
    }
}

impl GroupHandle {
    /// Asks the call to end.
    pub fn hang_up(&self) {
        let _ = self.commands.try_send(GroupCommand::HangUp);
    }

    /// Waits for the call to end.
    pub async fn finish(self) -> Result<GroupSummary, CallError> {
        self.task
            .await
            .map_err(|e| CallError::Io(std::io::Error::other(e.to_string())))
    }
}

async fn run(
    p: Prepared,
    mut audio: GroupAudio,
    mut media: GroupMedia,
    notices: mpsc::Sender<GroupNotice>,
    mut commands: mpsc::Receiver<GroupCommand>,
    started: Instant,
) -> GroupSummary {
    let Prepared {
        socket, mut engine, ..
    } = p;
    let mut sent_to = BTreeSet::new();
    let mut heard_from = BTreeSet::new();
    let mut connected_at: Option<Instant> = None;
    let mut error = None;
    let mut buf = vec![0u8; 2048];
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        if engine.is_over() {
            break;
        }
        if let (Some(at), Some(d)) = (connected_at, media.duration)
            && at.elapsed() >= d
        {
            break;
        }
        let wake = tokio::time::Instant::from_std(engine.poll_timeout());
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    heard_from.insert(from);
                    engine.handle_datagram(Instant::now(), from, &buf[..n]);
                }
            }
            () = tokio::time::sleep_until(wake) => engine.handle_timeout(Instant::now()),
            _ = clock.tick(), if connected_at.is_some() => {
                let now = Instant::now();
                let pcm = media.source.next_frame().unwrap_or([0; FRAME]);
                match audio.seal(&pcm) {
                    Ok(frame) => engine.send_frame(now, frame),
                    // A failed move to new keys: say nothing until a later
                    // move succeeds (the call goes on, and we still hear).
                    Err(CallError::Seal(SealError::NoKey)) => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
                if let Err(e) = media.sink.play(&audio.play(now)) {
                    error = Some(e);
                    break;
                }
            }
            _ = report.tick(), if connected_at.is_some() => {
                let _ = notices.try_send(GroupNotice::Speakers(audio.speakers(Instant::now())));
            }
            c = commands.recv() => match c {
                Some(GroupCommand::Rekey(secret)) => {
                    let moved = audio
                        .advance(&secret.epoch(), Instant::now())
                        .map(|()| secret.number)
                        .map_err(|e| e.to_string());
                    let _ = notices.try_send(GroupNotice::Rekeyed(moved));
                }
                Some(GroupCommand::HangUp) | None => break,
            },
        }
        let now = Instant::now();
        while let Some(f) = engine.poll_frame() {
            audio.receive(now, &f);
        }
        while let Some(e) = engine.poll_event() {
            match e {
                EngineEvent::Connected(_) if connected_at.is_none() => {
                    connected_at = Some(now);
                    // The clock starts now: the ticks it missed while
                    // connecting would otherwise come at once, a burst of
                    // frames that the unit's rate limit cuts into.
                    clock.reset();
                    let _ = notices.try_send(GroupNotice::Connected);
                }
                EngineEvent::Failed(e) => error = Some(e),
                _ => {}
            }
        }
        flush(&socket, &mut engine, &mut sent_to).await;
        if error.is_some() {
            break;
        }
    }
    engine.hang_up(Instant::now());
    flush(&socket, &mut engine, &mut sent_to).await;
    if let Err(e) = media.sink.finish()
        && error.is_none()
    {
        error = Some(e);
    }
    GroupSummary {
        speakers: audio.speakers(Instant::now()),
        dropped: audio.dropped(),
        sent_to,
        heard_from,
        direct_sends_blocked: engine.direct_sends_blocked(),
        setup_time: connected_at.map(|t| t.saturating_duration_since(started)),
        error,
    }
}

async fn flush(socket: &UdpSocket, engine: &mut Engine, sent_to: &mut BTreeSet<SocketAddr>) {
    while let Some(d) = engine.poll_transmit() {
        sent_to.insert(d.to);
        let _ = socket.send_to(&d.data, d.to).await;
    }
}
