//! One peer connection toward Janus's VideoRoom, as a browser would open
//! it: str0m with Opus only, a host candidate on the bench's namespace
//! address, SDP offer/answer. A member opens two, as the VideoRoom asks:
//! one publishing its audio, one subscribed to everyone else's feeds.
//! The same engine (str0m) and settings as Umbra's members use toward
//! Umbra's unit, so the two anchors differ only in the server.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

/// Samples of a 20 ms frame at 48 kHz.
const FRAME_SAMPLES: u64 = 960;

/// A peer connection and its socket.
pub(crate) struct Peer {
    rtc: Rtc,
    /// Its socket.
    pub socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    rtp_time: u64,
    /// When str0m next wants the time.
    pub timeout: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Payloads received and not taken yet.
    pub frames: Vec<Vec<u8>>,
    out: Vec<(SocketAddr, Vec<u8>)>,
}

impl Peer {
    /// A peer connection on a fresh socket at `ip`.
    pub fn new(ip: IpAddr) -> anyhow::Result<Self> {
        let std = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        std.set_nonblocking(true)?;
        let local = std.local_addr()?;
        let socket = UdpSocket::from_std(std)?;
        let now = Instant::now();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .set_reordering_size_audio(0)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .build(now);
        let c = Candidate::host(local, "udp").context("host candidate")?;
        rtc.add_local_candidate(c);
        Ok(Self {
            rtc,
            socket,
            local,
            pending: None,
            mid: None,
            pt: None,
            rtp_time: 0,
            timeout: now,
            connected: false,
            frames: Vec::new(),
            out: Vec::new(),
        })
    }

    /// A publisher's offer: one audio stream, send only.
    pub fn offer_audio(&mut self) -> anyhow::Result<String> {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().context("nothing to offer")?;
        self.mid = Some(mid);
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// Janus's answer to our offer.
    pub fn accept_answer(&mut self, sdp: &str) -> anyhow::Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp).context("janus's answer")?;
        let pending = self.pending.take().context("no offer out")?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        // str0m starts ICE on the next time it is given.
        self.tick(Instant::now());
        Ok(())
    }

    /// A subscriber's answer to Janus's offer of the feeds.
    pub fn accept_offer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).context("janus's offer")?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        self.tick(Instant::now());
        Ok(answer.to_sdp_string())
    }

    /// A datagram arrived.
    pub fn input(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
        }
        self.drain(now);
    }

    /// The time passed `timeout`.
    pub fn tick(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain(now);
    }

    /// Sends one 20 ms frame (dropped before the connection is up).
    pub fn send_frame(&mut self, now: Instant, payload: Vec<u8>) {
        let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        self.rtp_time += FRAME_SAMPLES;
        if let (Some(mid), Some(pt), true) = (self.mid, self.pt, self.connected)
            && let Some(w) = self.rtc.writer(mid)
        {
            let _ = w.write(pt, now, time, payload);
        }
        self.drain(now);
    }

    /// Sends what str0m has queued.
    pub async fn flush(&mut self) {
        for (to, data) in self.out.drain(..) {
            let _ = self.socket.send_to(&data, to).await;
        }
    }

    /// Closes the connection (DTLS close notify).
    pub async fn close(&mut self) {
        self.rtc.disconnect();
        self.drain(Instant::now());
        self.flush().await;
    }

    fn drain(&mut self, now: Instant) {
        loop {
            let Ok(out) = self.rtc.poll_output() else {
                // A broken connection: look again a little later.
                self.timeout = now + Duration::from_millis(100);
                return;
            };
            match out {
                Output::Timeout(t) => {
                    self.timeout = t.max(now);
                    return;
                }
                Output::Transmit(t) => self.out.push((t.destination, t.contents.to_vec())),
                Output::Event(Event::Connected) => {
                    self.connected = true;
                    self.pt = self
                        .rtc
                        .codec_config()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt());
                }
                Output::Event(Event::MediaData(d)) => self.frames.push(d.data.to_vec()),
                Output::Event(_) => {}
            }
        }
    }
}
