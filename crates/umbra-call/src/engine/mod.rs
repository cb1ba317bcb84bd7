//! The call engine: one side of a 1:1 call, sans-IO. It owns the WebRTC
//! session (str0m: ICE, DTLS-SRTP, RTP), the relay leg, the Opus codec and
//! the jitter buffer. The caller feeds it datagrams, the time and audio
//! frames, and takes out datagrams, timer deadlines, events and audio to
//! play ([`Engine::handle_datagram`] / [`Engine::poll_transmit`], the same
//! shape as str0m's `handle_input` / `poll_output`). Nothing here touches a
//! socket or reads the clock.
//!
//! Negotiation is SDP offer/answer, so the same engine talks to a browser.
//! The SDP and every trickled candidate travel inside the end-to-end
//! encrypted signalling; the DTLS fingerprint in them is what str0m checks
//! the other side's certificate against, so a relay in the middle can
//! neither read nor take over the media.
//!
//! One UDP socket carries everything: the relay leg, and (only when a direct
//! path is allowed) direct ICE traffic. While the call is relay-only, a
//! packet that would leave for any address other than the relay is dropped
//! and counted ([`Engine::direct_sends_blocked`]); it never reaches the wire.
//!
//! Toward a group call's forwarding unit ([`Engine::toward_unit`]) the same
//! engine carries frames the caller has already encrypted end to end: the
//! unit is then the only address it sends to or hears from.

pub mod candidates;
pub mod relay;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};

use crate::CallError;
use crate::codec::{Decoder, Encoder, FRAME, Pcm};
use crate::jitter::{JitterBuffer, JitterStats, Playout};
pub use relay::RelayServer;
use relay::{RelayEvent, RelayLeg};

/// How long ICE and DTLS may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// First retransmission of an ICE check.
const INITIAL_STUN_RTO: Duration = Duration::from_millis(100);
/// How long the media path may stay silent before the call is lost.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(8);
/// Frames from a forwarding unit held for the caller to take (a second of
/// a 50-member call); beyond that the oldest go.
const UNIT_FRAMES_HELD: usize = 2_500;

/// Which side of the call this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Makes the offer; ICE-controlling; DTLS client.
    Caller,
    /// Answers.
    Callee,
}

/// The path media takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// Peer to peer: each side sees the other's address.
    Direct,
    /// Through a relay: each side sees only a relay's address.
    Relayed,
}

/// Live quality figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CallStats {
    /// Round-trip time from RTCP or ICE, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the other side reported lost (0..1).
    pub loss_out: Option<f32>,
    /// Fraction of the other side's packets we lost (0..1).
    pub loss_in: Option<f32>,
    /// Interarrival jitter of what we receive, in milliseconds.
    pub jitter_ms: f64,
    /// Current playout delay, in milliseconds.
    pub playout_delay_ms: f64,
    /// The path in use, once connected.
    pub path: Option<Path>,
    /// Audio frames sent.
    pub frames_sent: u64,
    /// What the jitter buffer did.
    pub received: JitterStats,
}

/// What the engine reports.
#[derive(Debug)]
pub enum EngineEvent {
    /// The relay allocation exists (callers can now make their offer;
    /// callees their answer).
    RelayReady {
        /// Our relay candidate's address.
        relay: SocketAddr,
    },
    /// A local candidate to trickle to the other side (only once a direct
    /// path is allowed).
    LocalCandidate(String),
    /// ICE and DTLS are up: media flows.
    Connected(Path),
    /// ICE moved the call to another path.
    PathChanged(Path),
    /// The call failed; it is over.
    Failed(CallError),
}

/// A datagram to send from the call's socket.
#[derive(Debug)]
pub struct Datagram {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Caller or callee.
    pub role: Role,
    /// The relay to allocate on. Required while relay-only.
    pub relay: Option<RelayServer>,
    /// The call socket's own address (a concrete IP: it becomes the host
    /// candidate if a direct path is ever allowed).
    pub local: SocketAddr,
    /// Random bytes for the TURN client's transaction ids.
    pub seed: [u8; 32],
    /// Expected loss (percent) the encoder's FEC is tuned for.
    pub expected_loss: i32,
}

/// One side of a call.
pub struct Engine {
    rtc: Rtc,
    role: Role,
    local: SocketAddr,
    relay: Option<RelayLeg>,
    relay_only: bool,
    /// The offer waiting to be answered (caller) / to be accepted once the
    /// relay is ready (callee).
    pending_offer: Option<SdpPendingOffer>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    encoder: Encoder,
    decoder: Decoder,
    jitter: JitterBuffer,
    rtp_time: u64,
    transmits: VecDeque<Datagram>,
    events: VecDeque<EngineEvent>,
    rtc_timeout: Instant,
    connect_by: Option<Instant>,
    last_heard: Option<Instant>,
    connected: bool,
    path: Option<Path>,
    stats: CallStats,
    direct_blocked: u64,
    over: bool,
    /// A group call's forwarding unit, the only address this side uses.
    unit: Option<SocketAddr>,
    /// Frames received from the unit, still sealed end to end.
    frames: VecDeque<Vec<u8>>,
}

fn rtc_err(e: RtcError) -> CallError {
    let text = e.to_string();
    if text.contains("fingerprint") {
        CallError::FingerprintMismatch
    } else {
        CallError::Rtc(text)
    }
}

impl Engine {
    /// A new call side, relay-only, starting its relay allocation at `now`.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, CallError> {
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            // The engine runs its own jitter buffer: deliver packets at once.
            .set_reordering_size_audio(0)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_rtcp_report_interval_audio(Duration::from_secs(1));
        // The callee's first checks reach the caller's relay before the
        // caller (who has not seen the answer yet) permits them, and are
        // dropped there: retry them sooner than the default 250 ms.
        rtc.set_initial_stun_rto(INITIAL_STUN_RTO);
        let rtc = rtc.build(now);
        let relay = match &config.relay {
            Some(server) => Some(RelayLeg::new(server, config.seed, now)?),
            None => None,
        };
        let mut engine = Self {
            rtc,
            role: config.role,
            local: config.local,
            relay,
            relay_only: true,
            pending_offer: None,
            mid: None,
            pt: None,
            encoder: Encoder::new(config.expected_loss)?,
            decoder: Decoder::new()?,
            jitter: JitterBuffer::new(),
            rtp_time: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rtc_timeout: now,
            connect_by: None,
            last_heard: None,
            connected: false,
            path: None,
            stats: CallStats::default(),
            direct_blocked: 0,
            over: false,
            unit: None,
            frames: VecDeque::new(),
        };
        engine.flush_relay();
        Ok(engine)
    }

    /// One member's side of a group call, toward the forwarding unit at
    /// `unit`. There is no relay leg: the unit is the relay, and members
    /// see only its address. The offer carries this socket's candidate for
    /// the unit alone; the answer's candidates other than the unit's are
    /// ignored, and nothing is sent to, or taken from, any other address.
    /// Frames are encrypted by the caller (`crate::group`), written with
    /// [`Self::send_frame`] and taken with [`Self::poll_frame`].
    pub fn toward_unit(
        unit: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> Result<Self, CallError> {
        let config = EngineConfig {
            role: Role::Caller,
            relay: None,
            local,
            seed: [0; 32],
            expected_loss: 0,
        };
        let mut engine = Self::new(config, now)?;
        engine.unit = Some(unit);
        Ok(engine)
    }

    /// Caller or callee.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the call is (still) relay-only.
    pub fn relay_only(&self) -> bool {
        self.relay_only
    }

    /// Our relay candidate's address, once allocated.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().and_then(|r| r.relay_addr())
    }

    /// The relay server this side uses.
    pub fn relay_server(&self) -> Option<SocketAddr> {
        self.relay.as_ref().map(|r| r.server())
    }

    /// Packets that would have gone straight to the other side while the
    /// call was relay-only, and were dropped instead.
    pub fn direct_sends_blocked(&self) -> u64 {
        self.direct_blocked
    }

    /// Whether media is flowing.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the call has ended (failed or hung up).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// What the jitter buffer did so far (cheap: no allocation).
    pub fn received(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Live figures.
    pub fn stats(&self) -> CallStats {
        let mut s = self.stats.clone();
        s.jitter_ms = self.jitter.jitter().as_secs_f64() * 1000.0;
        s.playout_delay_ms = self.jitter.target_delay().as_secs_f64() * 1000.0;
        s.received = self.jitter.stats();
        s.path = self.path;
        s
    }

    /// Caller: the SDP offer, with only the relay candidate in it. Call
    /// after [`EngineEvent::RelayReady`].
    pub fn create_offer(&mut self, now: Instant) -> Result<String, CallError> {
        if self.role != Role::Caller {
            return Err(CallError::State("only the caller makes an offer"));
        }
        if self.unit.is_some() {
            let c = Candidate::host(self.local, "udp")
                .map_err(|e| CallError::Signalling(format!("host candidate: {e}")))?;
            self.rtc.add_local_candidate(c);
        } else {
            self.add_relay_candidate()?;
        }
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let Some((offer, pending)) = api.apply() else {
            return Err(CallError::State("nothing to offer"));
        };
        self.mid = Some(mid);
        self.pending_offer = Some(pending);
        self.connect_by = Some(now + CONNECT_TIMEOUT);
        self.drain_rtc(now);
        Ok(offer.to_sdp_string())
    }

    /// Callee: accepts the caller's offer and returns the answer, with only
    /// our relay candidate in it. Call after [`EngineEvent::RelayReady`],
    /// that is, only once the user has answered: before that the callee
    /// sends nothing at all. `direct_allowed` is false when either side
    /// protects its address: the offer's other candidates are then ignored.
    pub fn accept_offer(&mut self, now: Instant, offer: &str) -> Result<String, CallError> {
        if self.role != Role::Callee {
            return Err(CallError::State("only the callee accepts an offer"));
        }
        let (filtered, accepted) = candidates::filter_sdp(offer, self.relay_only)?;
        let offer = SdpOffer::from_sdp_string(&filtered)
            .map_err(|e| CallError::Signalling(format!("the offer is not valid SDP: {e}")))?;
        self.add_relay_candidate()?;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(rtc_err)?;
        for a in accepted {
            self.permit(now, a.addr);
        }
        self.connect_by = Some(now + CONNECT_TIMEOUT);
        self.drain_rtc(now);
        Ok(answer.to_sdp_string())
    }

    /// Caller: applies the callee's answer.
    pub fn accept_answer(&mut self, now: Instant, answer: &str) -> Result<(), CallError> {
        if self.pending_offer.is_none() {
            return Err(CallError::State("no offer is waiting for an answer"));
        }
        // A malformed answer is refused before the offer is used up, so a
        // good one can still follow.
        let (filtered, accepted) = candidates::filter_sdp_by(answer, |c| self.admits(c))?;
        let answer = SdpAnswer::from_sdp_string(&filtered)
            .map_err(|e| CallError::Signalling(format!("the answer is not valid SDP: {e}")))?;
        let Some(pending) = self.pending_offer.take() else {
            return Err(CallError::State("no offer is waiting for an answer"));
        };
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(rtc_err)?;
        for a in accepted {
            self.permit(now, a.addr);
        }
        self.drain_rtc(now);
        Ok(())
    }

    /// A candidate the other side trickled. Returns false when the
    /// relay-only rule ignores it.
    pub fn add_remote_candidate(&mut self, now: Instant, line: &str) -> Result<bool, CallError> {
        let c = candidates::parse(line)?;
        if !self.admits(&c) {
            return Ok(false);
        }
        let addr = c.addr();
        self.rtc.add_remote_candidate(c);
        self.permit(now, addr);
        self.drain_rtc(now);
        Ok(true)
    }

    /// Both sides allow a direct path (the callee has answered and neither
    /// protects its address): adds our host and server-reflexive candidates,
    /// reported as [`EngineEvent::LocalCandidate`] to trickle, and accepts
    /// the other side's from now on.
    pub fn allow_direct(&mut self, now: Instant) -> Result<(), CallError> {
        // A group call stays with its forwarding unit, whatever is asked.
        if !self.relay_only || self.unit.is_some() {
            return Ok(());
        }
        self.relay_only = false;
        let mut local = vec![
            Candidate::host(self.local, "udp")
                .map_err(|e| CallError::Signalling(format!("host candidate: {e}")))?,
        ];
        if let Some(mapped) = self.relay.as_ref().and_then(|r| r.mapped_addr())
            && mapped != self.local
            && let Ok(c) = Candidate::server_reflexive(mapped, self.local, "udp")
        {
            local.push(c);
        }
        for c in local {
            if let Some(added) = self.rtc.add_local_candidate(c) {
                let line = added.to_sdp_string();
                self.events.push_back(EngineEvent::LocalCandidate(line));
            }
        }
        self.drain_rtc(now);
        Ok(())
    }

    /// A datagram arrived on the call's socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.over {
            return;
        }
        if let Some(leg) = self.relay.as_mut()
            && leg.server() == from
        {
            let mut out = Vec::new();
            leg.handle_packet(now, data, &mut out);
            self.on_relay_events(now, out);
            self.flush_relay();
            return;
        }
        if let Some(unit) = self.unit {
            if unit == from {
                self.feed_rtc(now, from, self.local, data);
            }
            return;
        }
        if self.relay_only {
            // Nothing but the relay may reach a relay-only call.
            return;
        }
        self.feed_rtc(now, from, self.local, data);
    }

    /// Timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.over {
            return;
        }
        if let Some(leg) = self.relay.as_mut() {
            let mut out = Vec::new();
            leg.handle_timeout(now, &mut out);
            self.on_relay_events(now, out);
            self.flush_relay();
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(now, rtc_err(e));
            return;
        }
        self.drain_rtc(now);
        if !self.connected && self.connect_by.is_some_and(|t| now >= t) {
            self.fail(now, CallError::NoPath(CONNECT_TIMEOUT.as_secs()));
        } else if self.connected
            && self
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) >= SILENCE_TIMEOUT)
        {
            self.fail(now, CallError::Lost(SILENCE_TIMEOUT.as_secs()));
        }
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.rtc_timeout;
        if let Some(r) = self.relay.as_ref().and_then(|r| r.poll_timeout()) {
            t = t.min(r);
        }
        if !self.connected
            && let Some(c) = self.connect_by
        {
            t = t.min(c);
        }
        t
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    /// Encodes and sends one 20 ms frame of our audio (dropped until the
    /// call is connected).
    pub fn send_audio(&mut self, now: Instant, pcm: &Pcm) -> Result<(), CallError> {
        // Not encoded before the call is up; the frame's time passes all
        // the same.
        let packet = if self.connected {
            self.encoder.encode(pcm)?
        } else {
            Vec::new()
        };
        self.send_frame(now, packet);
        Ok(())
    }

    /// Sends one 20 ms frame as it is (a group call's, already sealed end
    /// to end); dropped until the call is connected.
    pub fn send_frame(&mut self, now: Instant, packet: Vec<u8>) {
        let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        self.rtp_time += FRAME as u64;
        let (Some(mid), Some(pt), true) = (self.mid, self.pt, self.connected) else {
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        if let Err(e) = writer.write(pt, now, time, packet) {
            self.fail(now, rtc_err(e));
            return;
        }
        self.stats.frames_sent += 1;
        self.drain_rtc(now);
    }

    /// The next frame the forwarding unit delivered (group calls).
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        self.frames.pop_front()
    }

    /// The next 20 ms frame to play (call once per 20 ms).
    pub fn play(&mut self, now: Instant) -> Pcm {
        match self.jitter.pop(now) {
            Playout::Idle => [0; FRAME],
            Playout::Packet(p) => self.decoder.decode(&p),
            Playout::Lost(next) => self.decoder.conceal(next.as_deref()),
        }
    }

    /// Ends the call: closes DTLS and deletes the relay allocation.
    pub fn hang_up(&mut self, now: Instant) {
        if self.over {
            return;
        }
        self.over = true;
        self.rtc.disconnect();
        self.drain_rtc(now);
        if let Some(leg) = self.relay.as_mut() {
            leg.release(now);
        }
        self.flush_relay();
    }

    fn add_relay_candidate(&mut self) -> Result<(), CallError> {
        let Some(relay) = self.relay_addr() else {
            return Err(CallError::State("the relay allocation is not ready"));
        };
        let c = Candidate::relayed(relay, self.local, "udp")
            .map_err(|e| CallError::Relay(format!("unusable relay address: {e}")))?;
        self.rtc.add_local_candidate(c);
        Ok(())
    }

    /// Whether a remote candidate may be used: the unit's alone toward a
    /// forwarding unit, else by the relay-only rule.
    fn admits(&self, c: &Candidate) -> bool {
        match self.unit {
            Some(unit) => c.addr() == unit,
            None => candidates::allowed(c, self.relay_only),
        }
    }

    fn permit(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(leg) = self.relay.as_mut() {
            leg.permit(now, peer);
        }
        self.flush_relay();
    }

    fn on_relay_events(&mut self, now: Instant, events: Vec<RelayEvent>) {
        for e in events {
            match e {
                RelayEvent::Ready { relay, .. } => {
                    self.events.push_back(EngineEvent::RelayReady { relay });
                }
                RelayEvent::Data { peer, data } => {
                    if let Some(relay) = self.relay_addr() {
                        self.feed_rtc(now, peer, relay, &data);
                    }
                }
                RelayEvent::Failed(e) => {
                    // Losing the relay ends a relay-only call; a direct call
                    // that is up can carry on without it.
                    if self.relay_only || !self.connected {
                        self.fail(now, e);
                    }
                }
            }
        }
    }

    fn feed_rtc(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            return;
        };
        self.last_heard = Some(now);
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            let e = rtc_err(e);
            if matches!(e, CallError::FingerprintMismatch) {
                self.fail(now, e);
                return;
            }
            tracing::debug!(error = %e, "dropped a media packet");
        }
        self.drain_rtc(now);
    }

    fn flush_relay(&mut self) {
        if let Some(leg) = self.relay.as_mut() {
            let server = leg.server();
            while let Some(data) = leg.poll_transmit() {
                self.transmits.push_back(Datagram { to: server, data });
            }
        }
    }

    fn fail(&mut self, now: Instant, e: CallError) {
        if self.over {
            return;
        }
        self.events.push_back(EngineEvent::Failed(e));
        self.over = true;
        self.rtc.disconnect();
        if let Some(leg) = self.relay.as_mut() {
            leg.release(now);
        }
        self.flush_relay();
    }

    /// Drains str0m's output (required after every change to it).
    fn drain_rtc(&mut self, now: Instant) {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.fail(now, rtc_err(e));
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    self.rtc_timeout = t;
                    return;
                }
                Output::Transmit(t) => self.route(t.source, t.destination, &t.contents),
                Output::Event(e) => self.on_rtc_event(now, e),
            }
        }
    }

    fn route(&mut self, source: SocketAddr, to: SocketAddr, data: &[u8]) {
        if let Some(leg) = self.relay.as_mut()
            && leg.relay_addr() == Some(source)
        {
            if leg.send(to, data) {
                let server = leg.server();
                while let Some(bytes) = leg.poll_transmit() {
                    self.transmits.push_back(Datagram {
                        to: server,
                        data: bytes,
                    });
                }
            }
            return;
        }
        if self.relay_only && self.unit != Some(to) {
            self.direct_blocked += 1;
            return;
        }
        self.transmits.push_back(Datagram {
            to,
            data: data.to_vec(),
        });
    }

    fn on_rtc_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.last_heard = Some(now);
                if self.pt.is_none() {
                    self.pt = self
                        .rtc
                        .codec_config()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt());
                }
                // Every call starts relay-only, so it first connects through
                // the relay; ICE may move it to a direct pair later, which
                // the statistics then report as a path change.
                let path = *self.path.get_or_insert(Path::Relayed);
                self.events.push_back(EngineEvent::Connected(path));
            }
            Event::MediaAdded(m) if self.mid.is_none() => {
                self.mid = Some(m.mid);
            }
            Event::MediaData(d) if self.unit.is_some() => {
                if self.frames.len() == UNIT_FRAMES_HELD {
                    self.frames.pop_front();
                }
                self.frames.push_back(d.data.to_vec());
            }
            Event::MediaData(d) => {
                let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer();
                self.jitter.push(now, ts, d.data.to_vec());
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!("ICE disconnected");
            }
            Event::PeerStats(s) => {
                self.stats.rtt_ms = s.rtt.map(|d| d.as_secs_f64() * 1000.0).or_else(|| {
                    s.selected_candidate_pair
                        .as_ref()
                        .and_then(|p| p.current_round_trip_time)
                        .map(|d| d.as_secs_f64() * 1000.0)
                });
                self.stats.loss_in = s.ingress_loss_fraction;
                self.stats.loss_out = s.egress_loss_fraction;
                if let Some(pair) = s.selected_candidate_pair {
                    let path = if self.unit.is_some() || Some(pair.local.addr) == self.relay_addr()
                    {
                        Path::Relayed
                    } else {
                        Path::Direct
                    };
                    if self.path.is_some_and(|p| p != path) {
                        self.events.push_back(EngineEvent::PathChanged(path));
                    }
                    self.path = Some(path);
                }
            }
            _ => {}
        }
    }
}
