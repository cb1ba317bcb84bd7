//! Opus at 48 kHz, mono, 20 ms frames (960 samples), through the pure-Rust
//! `opus-pure` codec (no C library to build or install). In-band FEC is on,
//! so a lost frame can be rebuilt from the next packet; otherwise the
//! decoder conceals it (packet loss concealment).

use opus_pure::{Application, OpusDecoder, OpusEncoder};

use crate::CallError;

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME: usize = 960;
/// Largest Opus packet we produce.
const MAX_PACKET: usize = 1275;

/// One 20 ms frame of mono 16-bit PCM.
pub type Pcm = [i16; FRAME];

fn codec_err(e: opus_pure::Error) -> CallError {
    CallError::Codec(format!("{e:?}"))
}

/// Encodes 20 ms frames to Opus packets.
pub struct Encoder {
    inner: OpusEncoder,
    out: Vec<u8>,
}

impl Encoder {
    /// A voice encoder at 32 kbit/s with in-band FEC, tuned for `loss_percent`
    /// expected loss.
    pub fn new(loss_percent: i32) -> Result<Self, CallError> {
        let mut inner =
            OpusEncoder::new(SAMPLE_RATE as i32, 1, Application::Voip).map_err(codec_err)?;
        inner.bitrate_bps = 32_000;
        inner.use_inband_fec = true;
        inner.packet_loss_perc = loss_percent.clamp(0, 100);
        Ok(Self {
            inner,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Encodes one frame.
    pub fn encode(&mut self, pcm: &Pcm) -> Result<Vec<u8>, CallError> {
        let n = self
            .inner
            .encode_s16(pcm, FRAME, &mut self.out)
            .map_err(codec_err)?;
        Ok(self.out[..n].to_vec())
    }
}

/// Decodes Opus packets (or conceals missing ones) into 20 ms frames.
pub struct Decoder {
    inner: OpusDecoder,
}

impl Decoder {
    /// A mono 48 kHz decoder.
    pub fn new() -> Result<Self, CallError> {
        Ok(Self {
            inner: OpusDecoder::new(SAMPLE_RATE as i32, 1).map_err(codec_err)?,
        })
    }

    /// Decodes one packet. A malformed packet is concealed instead (a peer's
    /// bad packet never stops playback).
    pub fn decode(&mut self, packet: &[u8]) -> Pcm {
        let mut pcm = [0i16; FRAME];
        if self.inner.decode_s16(packet, FRAME, &mut pcm).is_err() {
            return self.conceal(None);
        }
        pcm
    }

    /// A frame for a lost packet: rebuilt from the next packet's FEC when it
    /// is here, else extrapolated by the decoder's concealment.
    pub fn conceal(&mut self, next: Option<&[u8]>) -> Pcm {
        let mut pcm = [0i16; FRAME];
        let ok = match next {
            Some(p) => self.inner.decode_fec_s16(p, FRAME, &mut pcm).is_ok(),
            None => self.inner.decode_s16(&[], FRAME, &mut pcm).is_ok(),
        };
        if !ok {
            pcm = [0; FRAME];
        }
        pcm
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::analysis::dominant_frequency;
    use crate::audio::{Source, Tone};

    #[test]
    fn a_tone_survives_encoding_and_concealment_stays_bounded() {
        let mut enc = Encoder::new(5).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut tone = Tone::new(&[(880.0, 2.0)]);
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        while let Some(frame) = tone.next_frame() {
            let pkt = enc.encode(&frame).unwrap();
            sizes.push(pkt.len());
            out.extend_from_slice(&dec.decode(&pkt));
        }
        // 32 kbit/s is 80 bytes per 20 ms frame on average.
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((20..=200).contains(&mean), "mean packet {mean} bytes");
        // Skip the codec's start-up, then the tone is where it was.
        let f = dominant_frequency(&out[FRAME * 10..], SAMPLE_RATE);
        assert!((f - 880.0).abs() < 15.0, "decoded {f} Hz");
        // Concealment produces a frame and does not blow up.
        let pcm = dec.conceal(None);
        assert!(pcm.iter().all(|s| s.unsigned_abs() < 32_000));
        // Garbage is concealed, not an error.
        let _ = dec.decode(&[0xff; 3]);
    }
}
