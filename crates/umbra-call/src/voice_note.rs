//! Voice messages: a recording encoded to Opus in an Ogg file (RFC 7845,
//! the `.opus` file any player opens) and decoded back to 48 kHz mono for
//! playback or export. Pure transformations over `Read`/`Write`; which files
//! or devices they meet is the caller's business.
//!
//! The encoder is fed the recording and then its own look-ahead in silence,
//! and the last packet's granule position says where the audio ends
//! (RFC 7845 §4.4), so what comes out is as long as what went in, to the
//! sample, without the codec's delay at the front.

use std::io::{Read, Write};

use opus_pure::{
    Application, OggOpusReader, OggOpusWriter, OpusDecoder, OpusEncoder, OpusHead, OpusTags, Trim,
};

use crate::CallError;
use crate::codec::{FRAME, SAMPLE_RATE};

/// A voice message's bit rate: speech at 24 kbit/s, about 180 KB a minute.
pub const BITRATE: i32 = 24_000;
/// The longest voice message, in seconds.
pub const MAX_SECONDS: u32 = 15 * 60;
/// Largest Opus packet, and the longest one decoded (120 ms at 48 kHz).
const MAX_PACKET: usize = 1275;
const MAX_DECODED: usize = 5760;

fn codec(e: opus_pure::Error) -> CallError {
    CallError::Codec(format!("{e:?}"))
}

fn damaged(e: opus_pure::Error) -> CallError {
    CallError::Codec(format!(
        "the voice message is not a readable Opus file ({e:?})"
    ))
}

/// What an encoded voice message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// Its length, in milliseconds.
    pub duration_ms: u64,
    /// The Ogg file's size.
    pub bytes: u64,
}

/// Counts what goes through a writer.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes `samples` (48 kHz mono; `input_rate` is the recording's own,
/// kept as information) into an Ogg Opus stream written to `out`.
pub fn encode(samples: &[i16], input_rate: u32, out: impl Write) -> Result<Encoded, CallError> {
    if samples.len() as u64 > u64::from(MAX_SECONDS) * u64::from(SAMPLE_RATE) {
        return Err(CallError::Codec(format!(
            "a voice message lasts at most {} minutes",
            MAX_SECONDS / 60
        )));
    }
    let mut encoder = OpusEncoder::new(SAMPLE_RATE as i32, 1, Application::Voip).map_err(codec)?;
    encoder.bitrate_bps = BITRATE;
    let head = OpusHead::for_encoder(&encoder, input_rate);
    let pre_skip = usize::from(head.pre_skip);
    let mut writer = OggOpusWriter::with_tags(Counting { inner: out, n: 0 }, head, OpusTags::new())
        .map_err(codec)?;
    // The recording, then the encoder's delay in silence so its last
    // samples come out too.
    let total = samples.len() + pre_skip;
    let packets = total.div_ceil(FRAME).max(1);
    let end_granule = total as u64;
    let mut frame = [0i16; FRAME];
    let mut packet = vec![0u8; MAX_PACKET];
    for i in 0..packets {
        let start = i * FRAME;
        frame.fill(0);
        if start < samples.len() {
            let end = (start + FRAME).min(samples.len());
            frame[..end - start].copy_from_slice(&samples[start..end]);
        }
        let n = encoder
            .encode_s16(&frame, FRAME, &mut packet)
            .map_err(codec)?;
        if i + 1 == packets {
            // The last packet carries padding: its granule says where the
            // audio ends.
            let before = (i * FRAME) as u64;
            let duration = end_granule.saturating_sub(before).max(1) as u32;
            writer
                .write_packet_with_duration(&packet[..n], duration)
                .map_err(codec)?;
        } else {
            writer.write_packet(&packet[..n]).map_err(codec)?;
        }
    }
    let counted = writer.finish().map_err(codec)?;
    Ok(Encoded {
        duration_ms: samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE),
        bytes: counted.n,
    })
}

/// Decodes the Ogg Opus stream in `input` to 48 kHz mono (a stereo stream
/// is mixed down), handing the audio to `out` a packet at a time. Returns
/// the number of samples. A damaged file is an error, not noise.
pub fn decode(
    input: impl Read,
    mut out: impl FnMut(&[i16]) -> Result<(), CallError>,
) -> Result<u64, CallError> {
    let mut reader = OggOpusReader::new(input).map_err(damaged)?;
    let head = reader.head().clone();
    let mut decoder = OpusDecoder::new(SAMPLE_RATE as i32, 1).map_err(codec)?;
    let mut trim = Trim::new(&head, SAMPLE_RATE as i32, 1).map_err(codec)?;
    let mut pcm = vec![0i16; MAX_DECODED];
    let mut samples = 0u64;
    while let Some(packet) = reader.read_packet().map_err(damaged)? {
        let n = decoder
            .decode_s16(&packet.data, MAX_DECODED, &mut pcm)
            .map_err(damaged)?;
        let keep = trim.keep(&packet, &pcm[..n]);
        if u64::from(MAX_SECONDS) * u64::from(SAMPLE_RATE) < samples + keep.len() as u64 {
            return Err(CallError::Codec(format!(
                "the voice message lasts more than {} minutes",
                MAX_SECONDS / 60
            )));
        }
        samples += keep.len() as u64;
        out(keep)?;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::analysis::dominant_frequency;

    fn tone(hz: f32, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                ((i as f32 * std::f32::consts::TAU * hz / SAMPLE_RATE as f32).sin() * 10_000.0)
                    as i16
            })
            .collect()
    }

    fn round_trip(samples: &[i16]) -> (Encoded, Vec<u8>, Vec<i16>) {
        let mut file = Vec::new();
        let encoded = encode(samples, 44_100, &mut file).unwrap();
        let mut back = Vec::new();
        let n = decode(file.as_slice(), |s| {
            back.extend_from_slice(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, back.len() as u64);
        (encoded, file, back)
    }

    #[test]
    fn a_recording_comes_back_as_long_and_as_pitched_as_it_went_in() {
        // 1.23 s: not a whole number of frames.
        let input = tone(523.0, 59_040);
        let (encoded, file, back) = round_trip(&input);
        assert_eq!(back.len(), input.len(), "the end trim and pre-skip hold");
        assert_eq!(encoded.duration_ms, 1230);
        assert_eq!(encoded.bytes, file.len() as u64);
        assert!(file.starts_with(b"OggS"), "an Ogg file");
        // 24 kbit/s: about 3 KB a second, far below the 96 KB of the PCM.
        assert!(file.len() < 6_000, "{} bytes", file.len());
        let f = dominant_frequency(&back[4_800..], SAMPLE_RATE);
        assert!((f - 523.0).abs() < 15.0, "heard {f} Hz");
    }

    #[test]
    fn empty_and_tiny_recordings_round_trip() {
        assert!(round_trip(&[]).2.is_empty());
        assert_eq!(round_trip(&[100; 7]).2.len(), 7);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_with_a_reason() {
        let e = decode(&b"RIFF....WAVEfmt "[..], |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not a readable Opus file"), "{e}");
        let (_, mut file, _) = round_trip(&tone(440.0, 48_000));
        let mid = file.len() / 2;
        file[mid] ^= 0x55;
        assert!(
            decode(file.as_slice(), |_| Ok(())).is_err(),
            "a page's CRC catches it"
        );
    }

    #[test]
    fn too_long_a_recording_is_refused() {
        let long = vec![0i16; (MAX_SECONDS as usize + 1) * SAMPLE_RATE as usize];
        let e = encode(&long, 48_000, std::io::sink()).unwrap_err();
        assert!(e.to_string().contains("at most 15 minutes"), "{e}");
    }
}
