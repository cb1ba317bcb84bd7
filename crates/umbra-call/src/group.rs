//! A group call's audio at one member, sans-IO: what this device says,
//! encoded and sealed for everyone ([`crate::e2ee`]), and what each other
//! member says, opened, buffered, decoded and mixed into one stream to play.
//!
//! The forwarding unit sends every other member's frames down one stream,
//! with RTP sequence numbers and timestamps of its own. Who spoke a frame,
//! and when, comes from inside the SFrame header instead, which the unit
//! can neither read past nor change: the key id names the sender, and the
//! counter, which a sender moves once per 20 ms frame and never restarts,
//! is that sender's clock. Each speaker gets its own jitter buffer and
//! decoder on that clock; a frame that does not open is dropped, counted by
//! [`FrameKeys`], and never played. Time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sframe::mls::MlsExporter;

use crate::CallError;
use crate::analysis::level_dbfs;
use crate::codec::{Decoder, Encoder, FRAME, Pcm};
use crate::e2ee::{Dropped, Epoch, FrameKeys, KeyError};
use crate::jitter::{JitterBuffer, JitterStats, Playout};

/// A speaker not heard for this long is shown as silent and mixed no more
/// until it speaks again.
const SPEAKER_IDLE: Duration = Duration::from_secs(3);

/// One other member's audio as this device hears it.
struct Speaker {
    jitter: JitterBuffer,
    decoder: Decoder,
    last_heard: Instant,
    /// The first and highest counters seen (for loss).
    first: u64,
    highest: u64,
    /// Frames opened from this speaker.
    opened: u64,
    /// Level of the last frame played, dBFS.
    level_dbfs: f64,
}

/// What this device hears of one other member.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpeakerStats {
    /// The member's index in the call's group.
    pub member: u32,
    /// Level of what was last played from them, dBFS (-100 for silence).
    pub level_dbfs: f64,
    /// Fraction of their frames that never arrived (end to end: from their
    /// counter, which the forwarding unit cannot change).
    pub loss: f64,
    /// Whether they were heard in the last few seconds.
    pub active: bool,
    /// What their jitter buffer did.
    pub received: JitterStats,
}

/// One member's audio in a group call.
pub struct GroupAudio {
    keys: FrameKeys,
    encoder: Encoder,
    speakers: BTreeMap<u32, Speaker>,
    start: Instant,
}

impl GroupAudio {
    /// Audio for a call whose frame keys are `keys`, at `now`.
    /// `expected_loss` (percent) tunes the encoder's FEC.
    pub fn new(keys: FrameKeys, expected_loss: i32, now: Instant) -> Result<Self, CallError> {
        Ok(Self {
            keys,
            encoder: Encoder::new(expected_loss)?,
            speakers: BTreeMap::new(),
            start: now,
        })
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves to a new epoch of the call's group (someone joined or left):
    /// frames are sealed under its keys from now on, and members it no
    /// longer has are no longer heard or listed.
    pub fn advance(
        &mut self,
        epoch: &Epoch<'_, impl MlsExporter>,
        now: Instant,
    ) -> Result<(), KeyError> {
        let ms = self.ms(now);
        self.keys.advance(epoch, ms)?;
        self.speakers.retain(|m, _| epoch.members.contains(m));
        // What the committer sealed under this epoch before we got here.
        for (at, frame) in self.keys.take_early() {
            self.open_at(now, at, &frame);
        }
        Ok(())
    }

    /// Encodes and seals this device's next 20 ms frame. Call once per
    /// 20 ms whether or not the frame can be sent: the counter is the clock
    /// the others play this device's audio by.
    pub fn seal(&mut self, pcm: &Pcm) -> Result<Vec<u8>, CallError> {
        let packet = self.encoder.encode(pcm)?;
        Ok(self.keys.seal(&packet)?)
    }

    /// A frame from the forwarding unit, received at `now`.
    pub fn receive(&mut self, now: Instant, frame: &[u8]) {
        let ms = self.ms(now);
        self.open_at(now, ms, frame);
    }

    /// Opens a frame that arrived at `ms` (now, or earlier for one held for
    /// the next epoch) and hands it to its speaker.
    fn open_at(&mut self, now: Instant, ms: u64, frame: &[u8]) {
        let Some(opened) = self.keys.open(frame, ms) else {
            return;
        };
        let speaker = match self.speakers.entry(opened.sender) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let Ok(decoder) = Decoder::new() else {
                    return;
                };
                v.insert(Speaker {
                    jitter: JitterBuffer::new(),
                    decoder,
                    last_heard: now,
                    first: opened.counter,
                    highest: opened.counter,
                    opened: 0,
                    level_dbfs: -100.0,
                })
            }
        };
        speaker.last_heard = now;
        speaker.first = speaker.first.min(opened.counter);
        speaker.highest = speaker.highest.max(opened.counter);
        speaker.opened += 1;
        let ts = opened.counter.saturating_mul(FRAME as u64);
        speaker.jitter.push(now, ts, opened.payload);
    }

    /// The next 20 ms to play: every speaker's audio, mixed (call once per
    /// 20 ms).
    pub fn play(&mut self, now: Instant) -> Pcm {
        let mut mix = [0i32; FRAME];
        for speaker in self.speakers.values_mut() {
            if now.saturating_duration_since(speaker.last_heard) >= SPEAKER_IDLE {
                speaker.level_dbfs = -100.0;
                continue;
            }
            let pcm = match speaker.jitter.pop(now) {
                Playout::Idle => continue,
                Playout::Packet(p) => speaker.decoder.decode(&p),
                Playout::Lost(next) => speaker.decoder.conceal(next.as_deref()),
            };
            speaker.level_dbfs = level_dbfs(&pcm);
            for (m, s) in mix.iter_mut().zip(pcm.iter()) {
                *m += i32::from(*s);
            }
        }
        let mut out = [0i16; FRAME];
        for (o, m) in out.iter_mut().zip(mix) {
            *o = m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        out
    }

    /// Every member heard so far in this epoch, by member index.
    pub fn speakers(&self, now: Instant) -> Vec<SpeakerStats> {
        self.speakers
            .iter()
            .map(|(&member, s)| {
                let expected = s.highest - s.first + 1;
                let loss = 1.0 - (s.opened.min(expected) as f64 / expected as f64);
                SpeakerStats {
                    member,
                    level_dbfs: s.level_dbfs,
                    loss,
                    active: now.saturating_duration_since(s.last_heard) < SPEAKER_IDLE,
                    received: s.jitter.stats(),
                }
            })
            .collect()
    }

    /// Frames dropped unopened so far, by reason.
    pub fn dropped(&self) -> Dropped {
        self.keys.dropped()
    }

    /// The epoch frames are sealed under.
    pub fn epoch(&self) -> u64 {
        self.keys.epoch()
    }
}
