//! The jitter buffer: received Opus packets, keyed by RTP timestamp, played
//! out one 20 ms frame per tick after a delay that follows the measured
//! jitter. A packet that is missing when its turn comes is concealed (from
//! the next packet's FEC when that one is already here); a packet that
//! arrives after its turn is dropped as late; when the buffer holds more
//! than it needs, a frame is skipped to bring the delay back down. Time is
//! passed in; nothing here reads a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::codec::{FRAME, SAMPLE_RATE};

/// RTP timestamp units (48 kHz) per frame.
const TICKS: u64 = FRAME as u64;
/// Smallest and largest playout delay.
const MIN_DELAY: Duration = Duration::from_millis(40);
const MAX_DELAY: Duration = Duration::from_millis(300);
/// Most packets held (6 s of audio): anything beyond is dropped.
const MAX_PACKETS: usize = 300;
/// After this many concealed frames in a row the stream is taken as paused:
/// the next packet starts playout afresh.
const REBUFFER_AFTER: u32 = 25;

/// What to play for one tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout {
    /// Nothing received yet (or paused): play silence.
    Idle,
    /// Decode this packet.
    Packet(Vec<u8>),
    /// The packet is missing: conceal it, with the next packet's FEC if given.
    Lost(Option<Vec<u8>>),
}

/// Counters since the start of the call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub received: u64,
    /// Frames played from a packet.
    pub played: u64,
    /// Frames concealed because their packet was missing.
    pub concealed: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Frames skipped to reduce delay.
    pub skipped: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets that arrived just after their turn and were played one frame
    /// late instead (the delay grew by a frame).
    pub stretched: u64,
}

/// A jitter buffer for one incoming audio stream.
pub struct JitterBuffer {
    packets: BTreeMap<u64, Vec<u8>>,
    /// Timestamp of the next frame to play, once playing.
    next: Option<u64>,
    /// When playout may begin (first packet's arrival plus the delay).
    start_at: Option<Instant>,
    /// Interarrival jitter estimate (RFC 3550 §6.4.1), in seconds.
    jitter: f64,
    last_transit: Option<f64>,
    epoch: Option<Instant>,
    lost_in_a_row: u32,
    /// Timestamp of the frame just concealed, if the last tick concealed.
    concealed_last: Option<u64>,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self {
            packets: BTreeMap::new(),
            next: None,
            start_at: None,
            jitter: 0.0,
            last_transit: None,
            epoch: None,
            lost_in_a_row: 0,
            concealed_last: None,
            stats: JitterStats::default(),
        }
    }

    /// The playout delay the buffer aims for now.
    pub fn target_delay(&self) -> Duration {
        let d = Duration::from_secs_f64(self.jitter * 3.0) + Duration::from_millis(30);
        d.clamp(MIN_DELAY, MAX_DELAY)
    }

    /// The interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// A packet with RTP timestamp `ts` (48 kHz units) arrived at `now`.
    pub fn push(&mut self, now: Instant, ts: u64, payload: Vec<u8>) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = now.saturating_duration_since(epoch).as_secs_f64();
        let transit = arrival - ts as f64 / f64::from(SAMPLE_RATE);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // Over a second is a new timestamp base (the sender restarted or
            // paused), not jitter.
            if d < 1.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        if self.next.is_some_and(|next| ts < next) {
            if self.concealed_last == Some(ts) {
                // Just missed its turn, which was concealed: play it next,
                // one frame later than planned. The concealed frame becomes
                // an inserted one and the delay grows by a frame, which is
                // what this path's jitter needs.
                self.concealed_last = None;
                self.next = Some(ts);
                self.packets.insert(ts, payload);
                self.stats.concealed = self.stats.concealed.saturating_sub(1);
                self.stats.stretched += 1;
                self.stats.received += 1;
                return;
            }
            self.stats.late += 1;
            return;
        }
        if self.packets.contains_key(&ts) {
            self.stats.duplicates += 1;
            return;
        }
        if self.packets.len() >= MAX_PACKETS {
            return;
        }
        if self.next.is_none() && self.start_at.is_none() {
            self.start_at = Some(now + self.target_delay());
        }
        self.packets.insert(ts, payload);
        self.stats.received += 1;
    }

    /// What to play for the tick at `now` (call once every 20 ms).
    pub fn pop(&mut self, now: Instant) -> Playout {
        let next = match self.next {
            Some(n) => n,
            None => {
                let Some(at) = self.start_at else {
                    if !self.packets.is_empty() {
                        self.start_at = Some(now + self.target_delay());
                    }
                    return Playout::Idle;
                };
                if now < at {
                    return Playout::Idle;
                }
                let Some((&first, _)) = self.packets.first_key_value() else {
                    return Playout::Idle;
                };
                self.start_at = None;
                first
            }
        };
        // More buffered than the delay needs: skip a frame to catch up.
        let target_frames = (self.target_delay().as_millis() / 20) as u64 + 1;
        if let Some((&last, _)) = self.packets.last_key_value()
            && last >= next + (target_frames + 3) * TICKS
            && self.packets.contains_key(&(next + TICKS))
        {
            self.packets.remove(&next);
            self.stats.skipped += 1;
            return self.play_at(next + TICKS);
        }
        self.play_at(next)
    }

    fn play_at(&mut self, ts: u64) -> Playout {
        self.next = Some(ts + TICKS);
        // Older leftovers can never be played.
        while let Some((&k, _)) = self.packets.first_key_value() {
            if k >= ts {
                break;
            }
            self.packets.remove(&k);
        }
        self.concealed_last = None;
        if let Some(p) = self.packets.remove(&ts) {
            self.lost_in_a_row = 0;
            self.stats.played += 1;
            return Playout::Packet(p);
        }
        self.lost_in_a_row += 1;
        if self.lost_in_a_row > REBUFFER_AFTER {
            // The sender paused (or the path is gone): start afresh on the
            // next packet instead of concealing forever.
            self.next = None;
            self.start_at = None;
            self.last_transit = None;
            self.lost_in_a_row = 0;
            return Playout::Idle;
        }
        self.stats.concealed += 1;
        self.concealed_last = Some(ts);
        Playout::Lost(self.packets.get(&(ts + TICKS)).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn plays_in_order_after_the_delay_and_conceals_a_gap_with_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        assert_eq!(jb.pop(t0), Playout::Idle);
        // One packet every 20 ms: 3 is missing, 5 and 6 arrive swapped.
        let arrivals = [0u64, 1, 2, 4, 6, 5, 7, 8, 9, 10, 11, 12];
        let mut out = Vec::new();
        for (i, seq) in arrivals.iter().enumerate() {
            let now = t0 + ms(20 * i as u64);
            jb.push(now, seq * TICKS, vec![*seq as u8]);
            match jb.pop(now) {
                Playout::Idle => {}
                p => out.push(p),
            }
        }
        assert_eq!(out[0], Playout::Packet(vec![0]));
        assert_eq!(out[2], Playout::Packet(vec![2]));
        assert_eq!(
            out[3],
            Playout::Lost(Some(vec![4])),
            "FEC from the next packet"
        );
        assert_eq!(out[4], Playout::Packet(vec![4]));
        assert_eq!(
            out[5],
            Playout::Packet(vec![5]),
            "reordered packets play in order"
        );
        assert_eq!(out[6], Playout::Packet(vec![6]));
        let s = jb.stats();
        assert_eq!((s.concealed, s.late, s.skipped), (1, 0, 0));
        // A packet for a frame already played is late.
        jb.push(t0 + ms(400), 3 * TICKS, vec![3]);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_packet_just_after_its_concealed_turn_is_played_a_frame_late() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        let mut now = t0;
        for seq in 0..5u64 {
            jb.push(now, seq * TICKS, vec![seq as u8]);
            let _ = jb.pop(now);
            now += ms(20);
        }
        // Drain what is buffered, then the next packet is late by a bit.
        let mut played = Vec::new();
        while !matches!(played.last(), Some(Playout::Lost(None))) && played.len() < 10 {
            played.push(jb.pop(now));
            now += ms(20);
        }
        assert_eq!(played.len(), 3, "{played:?}");
        jb.push(now, 5 * TICKS, vec![5]);
        assert_eq!(jb.pop(now), Playout::Packet(vec![5]));
        let s = jb.stats();
        assert_eq!((s.stretched, s.late, s.concealed), (1, 0, 0), "{s:?}");
    }

    #[test]
    fn delay_follows_jitter_and_a_backlog_is_trimmed() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        // Arrivals wobble by +-40 ms.
        for i in 0..200u64 {
            let wobble = if i % 2 == 0 { 0 } else { 40 };
            jb.push(t0 + ms(20 * i + wobble), i * TICKS, vec![1]);
        }
        let d = jb.target_delay();
        assert!(d >= ms(50) && d <= MAX_DELAY, "{d:?}");
        // 200 packets are waiting: playout skips until the delay is back.
        let mut now = t0 + ms(4000);
        for _ in 0..100 {
            let _ = jb.pop(now);
            now += ms(20);
        }
        assert!(jb.stats().skipped > 50, "{:?}", jb.stats());
    }

    #[test]
    fn a_long_silence_rebuffers_instead_of_concealing_forever() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new();
        jb.push(t0, 0, vec![1]);
        let mut now = t0 + ms(100);
        let mut idle = 0;
        for _ in 0..60 {
            if jb.pop(now) == Playout::Idle {
                idle += 1;
            }
            now += ms(20);
        }
        assert!(jb.stats().concealed <= u64::from(REBUFFER_AFTER));
        assert!(idle > 20);
        // The stream resumes much later with a new timestamp base.
        jb.push(now, 1_000_000, vec![9]);
        let mut got = Playout::Idle;
        for _ in 0..10 {
            now += ms(20);
            got = jb.pop(now);
            if got != Playout::Idle {
                break;
            }
        }
        assert_eq!(got, Playout::Packet(vec![9]));
    }
}
