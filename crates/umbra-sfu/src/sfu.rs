//! The forwarding unit, sans-IO: joins, the demultiplexing of one UDP
//! socket's datagrams to their connections, the forwarding of each member's
//! frames to everyone else in the room, and timers. The caller feeds it
//! datagrams and the time, and takes out datagrams, deadlines and events
//! (str0m's `handle_input` / `poll_output` shape); nothing here touches a
//! socket or reads the clock.
//!
//! Each connection is a str0m session, ICE-lite on the unit's one public
//! address, DTLS-SRTP to the member: each hop is encrypted, and the member's
//! DTLS fingerprint in its offer is what the unit checks. A member offers
//! exactly one audio stream; the unit sends it everyone else's frames down
//! the one stream it answers with, under RTP sequence numbers and
//! timestamps of its own (so the loss and jitter each member measures are
//! those of its own hop). The frames are SFrame ciphertext: who spoke one,
//! and when, is inside it, for members to read. Nothing is decoded, mixed
//! or kept.
//!
//! Datagrams find their connection by source address once known; before
//! that only by the STUN username's first half, which is a random ufrag the
//! unit gave that connection alone in its answer (so a packet never costs a
//! search through every connection).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distributions::Alphanumeric;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use thiserror::Error;

use crate::credential::{self, CredentialError};
use crate::room::{Limits, PeerId, Refusal, RoomId, Rooms};

/// How long a connection may take to come up after its join.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest frame forwarded (an Opus frame, sealed, is far smaller).
const MAX_FRAME: usize = 1_200;
/// Source addresses a connection may be known by (the oldest learned goes
/// when a fifth proves itself).
const MAX_ADDRS: usize = 4;
/// STUN transaction ids remembered per connection: a check seen once
/// teaches the unit no address when it comes again (a replay from
/// elsewhere of a check signed with the connection's password).
const RECENT_CHECKS: usize = 64;
/// Frames a second a member may send on average: twice Opus's 50 at 20 ms
/// (a member sending 10 ms frames still fits).
pub const FRAME_RATE: f64 = 100.0;
/// Frames a member may send at once above the rate (a burst after a stall).
pub const FRAME_BURST: f64 = 50.0;

/// Unit settings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The address members reach the unit's UDP socket at (its ICE
    /// candidate).
    pub public: SocketAddr,
    /// The secret shared with the messaging server, which signs the
    /// credentials members join with.
    pub secret: Vec<u8>,
    /// Room, credential and total limits.
    pub limits: Limits,
}

/// A member asks to join a room.
#[derive(Debug)]
pub struct JoinRequest<'a> {
    /// The room (random, from the call's end-to-end signalling).
    pub room: RoomId,
    /// The credential's username (`<unix expiry>:<token>`).
    pub username: &'a str,
    /// The credential's password.
    pub password: &'a str,
    /// The member's SDP offer: one audio stream.
    pub offer: &'a str,
}

/// A join that was accepted.
#[derive(Debug)]
pub struct Joined {
    /// The connection.
    pub peer: PeerId,
    /// The unit's SDP answer, with its one candidate.
    pub answer: String,
}

/// Why a join was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The credential did not pass.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// No room for another connection.
    #[error(transparent)]
    Full(#[from] Refusal),
    /// The offer is not one the unit takes.
    #[error("the call offer was refused: {0}")]
    Offer(String),
}

/// What the unit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuEvent {
    /// A connection ended on its own (never came up, or went silent): its
    /// member is out of the room.
    Left(PeerId),
}

/// A datagram to send from the unit's socket.
#[derive(Debug)]
pub struct Datagram {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Aggregate counts (no room, no address, no member).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    /// Connections now.
    pub peers: u64,
    /// Rooms now.
    pub rooms: u64,
    /// Joins accepted since start.
    pub joins: u64,
    /// Joins refused since start.
    pub refused: u64,
    /// Frames received from members.
    pub frames_in: u64,
    /// Frames sent on to members.
    pub frames_out: u64,
    /// Bytes of frames sent on.
    pub bytes_out: u64,
    /// Datagrams from no known connection, dropped.
    pub unknown_source: u64,
    /// Frames dropped because their sender was over [`FRAME_RATE`].
    pub rate_limited: u64,
    /// Frames dropped for being larger than any sealed Opus frame.
    pub oversize: u64,
}

struct Peer {
    rtc: Rtc,
    ufrag: String,
    /// The unit's ICE password toward this member: a STUN check that does
    /// not carry its integrity teaches the unit no address.
    ice_pass: String,
    mid: Option<Mid>,
    pt: Option<Pt>,
    start: Instant,
    connect_by: Instant,
    connected: bool,
    /// When str0m next wants the time.
    timeout: Instant,
    /// Source addresses learned for it, oldest first.
    addrs: Vec<SocketAddr>,
    /// Transaction ids of its latest STUN checks.
    checks: VecDeque<[u8; 12]>,
    /// Frames it may still send now (a token bucket at [`FRAME_RATE`]).
    budget: f64,
    /// When `budget` was last topped up.
    budget_at: Instant,
}

impl Peer {
    /// Takes one frame from the member's budget; false if it is over its
    /// rate, and the frame is to be dropped.
    fn spend(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.budget_at).as_secs_f64();
        self.budget = (self.budget + elapsed * FRAME_RATE).min(FRAME_BURST);
        self.budget_at = self.budget_at.max(now);
        if self.budget >= 1.0 {
            self.budget -= 1.0;
            true
        } else {
            false
        }
    }

    /// When it next needs the time: str0m's deadline, or the connect
    /// timeout while it is not up.
    fn deadline(&self) -> Instant {
        if self.connected {
            self.timeout
        } else {
            self.timeout.min(self.connect_by)
        }
    }
}

/// The forwarding unit.
pub struct Sfu {
    config: SfuConfig,
    rooms: Rooms,
    peers: HashMap<PeerId, Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    transmits: VecDeque<Datagram>,
    events: VecDeque<SfuEvent>,
    /// Frames waiting to be forwarded (from, payload).
    forward: VecDeque<(PeerId, std::sync::Arc<[u8]>)>,
    /// The earliest deadline of any connection (may be early, never late).
    next_timeout: Option<Instant>,
    stats: SfuStats,
}

fn ufrag() -> String {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

/// The audio m-lines of an offer: the unit takes one, and nothing else.
fn check_offer(offer: &str) -> Result<(), JoinError> {
    let media: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m="))
        .collect();
    match media.as_slice() {
        [m] if m.starts_with("audio ") => Ok(()),
        [] => Err(JoinError::Offer("it has no audio stream".into())),
        _ => Err(JoinError::Offer(format!(
            "it has {} media streams; a group call member sends one audio stream",
            media.len()
        ))),
    }
}

impl Sfu {
    /// A unit with no rooms.
    pub fn new(config: SfuConfig) -> Self {
        let limits = config.limits;
        Self {
            config,
            rooms: Rooms::new(limits),
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            forward: VecDeque::new(),
            next_timeout: None,
            stats: SfuStats::default(),
        }
    }

    /// Aggregate counts.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            peers: self.rooms.peers() as u64,
            rooms: self.rooms.rooms() as u64,
            ..self.stats
        }
    }

    /// How many connections `peer`'s room holds (None once it is gone).
    pub fn room_size(&self, peer: PeerId) -> Option<usize> {
        let n = self.rooms.room_of(peer).len();
        (n > 0).then_some(n)
    }

    /// Joins a member to a room at `now` (`now_unix` for the credential's
    /// expiry), answering its offer.
    pub fn join(
        &mut self,
        now: Instant,
        now_unix: u64,
        req: &JoinRequest<'_>,
    ) -> Result<Joined, JoinError> {
        let joined = self.try_join(now, now_unix, req);
        match &joined {
            Ok(_) => self.stats.joins += 1,
            Err(_) => self.stats.refused += 1,
        }
        joined
    }

    fn try_join(
        &mut self,
        now: Instant,
        now_unix: u64,
        req: &JoinRequest<'_>,
    ) -> Result<Joined, JoinError> {
        credential::check(&self.config.secret, req.username, req.password, now_unix)?;
        check_offer(req.offer)?;
        let offer = SdpOffer::from_sdp_string(req.offer)
            .map_err(|e| JoinError::Offer(format!("not valid SDP: {e}")))?;
        let ufrag = ufrag();
        let ice_pass = format!("{}{}", self::ufrag(), self::ufrag());
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: ice_pass.clone(),
        };
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            // Forward each frame as it comes: members buffer, not the unit.
            .set_reordering_size_audio(0)
            .set_stats_interval(None)
            .build(now);
        let host = Candidate::host(self.config.public, "udp")
            .map_err(|e| JoinError::Offer(format!("the unit's own address: {e}")))?;
        rtc.add_local_candidate(host);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| JoinError::Offer(e.to_string()))?;
        let peer = self.rooms.admit(req.room, req.username)?;
        self.by_ufrag.insert(ufrag.clone(), peer);
        self.peers.insert(
            peer,
            Peer {
                rtc,
                ufrag,
                ice_pass,
                mid: None,
                pt: None,
                start: now,
                connect_by: now + CONNECT_TIMEOUT,
                connected: false,
                timeout: now,
                addrs: Vec::new(),
                checks: VecDeque::new(),
                budget: FRAME_BURST,
                budget_at: now,
            },
        );
        self.drain(peer);
        self.run_forwarding(now);
        Ok(Joined {
            peer,
            answer: answer.to_sdp_string(),
        })
    }

    /// A member leaves (its signalling closed): its connection ends.
    pub fn leave(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtc.disconnect();
        }
        self.drain(peer);
        self.remove(peer);
    }

    fn remove(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            self.by_ufrag.remove(&p.ufrag);
            for a in p.addrs {
                if self.by_addr.get(&a) == Some(&peer) {
                    self.by_addr.remove(&a);
                }
            }
        }
        self.rooms.remove(peer);
    }

    /// A datagram arrived on the unit's socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let stun = data.first().is_some_and(|&b| b < 2);
        let (peer, learning) = match self.by_addr.get(&from) {
            Some(&p) => (Some(p), false),
            None if stun => (self.peer_by_stun(data), true),
            None => (None, false),
        };
        let Some(id) = peer else {
            self.stats.unknown_source += 1;
            return;
        };
        // A new address must prove it holds the connection's ICE password
        // (the username alone crosses the wire in clear), with a check not
        // seen before (one seen can be replayed by whoever saw it).
        let tid: Option<[u8; 12]> = if stun {
            data.get(8..20).and_then(|t| t.try_into().ok())
        } else {
            None
        };
        if learning
            && (!self.signed_for(id, data)
                || self
                    .peers
                    .get(&id)
                    .is_some_and(|p| tid.is_some_and(|t| p.checks.contains(&t))))
        {
            self.stats.unknown_source += 1;
            return;
        }
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.config.public, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.rtc.accepts(&input) {
            self.stats.unknown_source += 1;
            return;
        }
        let handled = p.rtc.handle_input(input);
        if let Err(e) = &handled {
            tracing::debug!(error = %e, "dropped a packet");
        }
        if let (Some(t), true) = (tid, handled.is_ok()) {
            if p.checks.len() == RECENT_CHECKS {
                p.checks.pop_front();
            }
            p.checks.push_back(t);
        }
        // A few addresses per connection at most (a member's path may
        // move): a new one that proved itself takes the oldest's place.
        if learning && handled.is_ok() {
            if p.addrs.len() == MAX_ADDRS {
                let old = p.addrs.remove(0);
                if self.by_addr.get(&old) == Some(&id) {
                    self.by_addr.remove(&old);
                }
            }
            p.addrs.push(from);
            self.by_addr.insert(from, id);
        }
        self.drain(id);
        self.run_forwarding(now);
    }

    /// Whether a STUN message carries the integrity of connection `id`'s
    /// ICE password.
    fn signed_for(&self, id: PeerId, data: &[u8]) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        umbra_turn::Message::decode(data)
            .is_ok_and(|m| m.verify_integrity(p.ice_pass.as_bytes()).is_ok())
    }

    /// The connection a STUN message is for, by the unit's half of its
    /// username.
    fn peer_by_stun(&self, data: &[u8]) -> Option<PeerId> {
        let msg = umbra_turn::Message::decode(data).ok()?;
        let user = msg.username().ok()??;
        let (ours, _) = user.split_once(':')?;
        self.by_ufrag.get(ours).copied()
    }

    /// Timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(p) = self.peers.get_mut(&id)
                && let Err(e) = p.rtc.handle_input(Input::Timeout(now))
            {
                tracing::debug!(error = %e, "a connection failed");
                p.rtc.disconnect();
            }
            self.drain(id);
            let ended = self
                .peers
                .get(&id)
                .is_some_and(|p| !p.rtc.is_alive() || (!p.connected && p.connect_by <= now));
            if ended {
                self.remove(id);
                self.events.push_back(SfuEvent::Left(id));
            }
        }
        self.run_forwarding(now);
        self.next_timeout = self.peers.values().map(Peer::deadline).min();
    }

    /// When [`Self::handle_timeout`] is next due (None with no connection).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// Drains one connection's output (required after every change to it).
    fn drain(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        loop {
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(error = %e, "a connection failed");
                    p.rtc.disconnect();
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    p.timeout = t;
                    let t = p.deadline();
                    self.next_timeout = Some(self.next_timeout.map_or(t, |n| n.min(t)));
                    return;
                }
                Output::Transmit(t) => self.transmits.push_back(Datagram {
                    to: t.destination,
                    data: t.contents.to_vec(),
                }),
                Output::Event(e) => match e {
                    Event::Connected => {
                        p.connected = true;
                        p.pt = p
                            .rtc
                            .codec_config()
                            .find(|c| c.spec().codec == Codec::Opus)
                            .map(|c| c.pt());
                    }
                    Event::MediaAdded(m) if m.kind == MediaKind::Audio && p.mid.is_none() => {
                        p.mid = Some(m.mid);
                    }
                    Event::MediaData(d) => {
                        self.stats.frames_in += 1;
                        if d.data.len() > MAX_FRAME {
                            self.stats.oversize += 1;
                        } else if !p.spend(d.network_time) {
                            self.stats.rate_limited += 1;
                        } else {
                            self.forward.push_back((id, d.data));
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        tracing::debug!("a connection's ICE went away");
                    }
                    _ => {}
                },
            }
        }
    }

    /// Sends every waiting frame on to the rest of its sender's room.
    fn run_forwarding(&mut self, now: Instant) {
        while let Some((from, frame)) = self.forward.pop_front() {
            let others: Vec<PeerId> = self
                .rooms
                .room_of(from)
                .iter()
                .copied()
                .filter(|&p| p != from)
                .collect();
            for to in others {
                if self.write(now, to, &frame) {
                    self.stats.frames_out += 1;
                    self.stats.bytes_out += frame.len() as u64;
                    self.drain(to);
                }
            }
        }
    }

    /// Writes one frame to `to`'s stream; false if it cannot take it yet.
    fn write(&mut self, now: Instant, to: PeerId, frame: &[u8]) -> bool {
        let Some(p) = self.peers.get_mut(&to) else {
            return false;
        };
        let (Some(mid), Some(pt), true) = (p.mid, p.pt, p.connected) else {
            return false;
        };
        // The unit's own clock for this stream: members time playout by
        // the sender's counter inside the frame.
        let ticks = now.saturating_duration_since(p.start).as_micros() * 48 / 1_000;
        let time = MediaTime::new(
            u64::try_from(ticks).unwrap_or(u64::MAX),
            Frequency::FORTY_EIGHT_KHZ,
        );
        let Some(writer) = p.rtc.writer(mid) else {
            return false;
        };
        match writer.write(pt, now, time, frame.to_vec()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "a frame was not forwarded");
                false
            }
        }
    }
}
