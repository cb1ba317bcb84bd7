//! Where a call's audio comes from and goes to, one 20 ms frame at a time:
//! a generated tone, a WAV file (any rate, mono or stereo, converted to 48 kHz
//! mono), silence, or the microphone; a WAV file, nothing, or the speaker on
//! the way out (sound devices with the `audio-device` feature).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::CallError;
use crate::codec::{FRAME, Pcm, SAMPLE_RATE};

/// Something that produces audio to send.
pub trait Source: Send {
    /// The next 20 ms frame, or `None` when the source has ended.
    fn next_frame(&mut self) -> Option<Pcm>;
}

/// Something that consumes received audio.
pub trait Sink: Send {
    /// Takes the next 20 ms frame.
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError>;
    /// Finishes (flushes files).
    fn finish(&mut self) -> Result<(), CallError> {
        Ok(())
    }
}

/// A sequence of sine tones: `(frequency in Hz, seconds)` each, at a fixed
/// level. A frequency of 0 is silence.
pub struct Tone {
    segments: Vec<(f32, f32)>,
    index: usize,
    /// Samples produced within the current segment.
    done: usize,
    phase: f32,
    repeat: bool,
}

impl Tone {
    /// Plays `segments` once.
    pub fn new(segments: &[(f32, f32)]) -> Self {
        Self {
            segments: segments.to_vec(),
            index: 0,
            done: 0,
            phase: 0.0,
            repeat: false,
        }
    }

    /// Plays `segments` over and over.
    pub fn repeating(segments: &[(f32, f32)]) -> Self {
        Self {
            repeat: true,
            ..Self::new(segments)
        }
    }

    /// The tone `umbra call --audio-in tone` plays: four notes of 400 ms,
    /// which a listener (or a test) can tell apart.
    pub fn standard() -> Self {
        Self::repeating(&STANDARD_TONES)
    }
}

/// The notes of [`Tone::standard`], in order: `(Hz, seconds)`.
pub const STANDARD_TONES: [(f32, f32); 4] =
    [(440.0, 0.4), (660.0, 0.4), (880.0, 0.4), (1320.0, 0.4)];

impl Tone {
    /// The frequency of the next sample, or `None` at the end.
    fn next_sample_frequency(&mut self) -> Option<f32> {
        let total: f32 = self.segments.iter().map(|(_, secs)| secs).sum();
        if total * (SAMPLE_RATE as f32) < 1.0 {
            return None;
        }
        loop {
            if self.index >= self.segments.len() {
                if !self.repeat {
                    return None;
                }
                self.index = 0;
            }
            let (freq, secs) = self.segments[self.index];
            if self.done < (secs * SAMPLE_RATE as f32) as usize {
                self.done += 1;
                return Some(freq);
            }
            self.index += 1;
            self.done = 0;
        }
    }
}

impl Source for Tone {
    fn next_frame(&mut self) -> Option<Pcm> {
        let mut frame = [0i16; FRAME];
        for (i, s) in frame.iter_mut().enumerate() {
            let Some(freq) = self.next_sample_frequency() else {
                // The end: a partly filled last frame is padded with silence.
                return (i > 0).then_some(frame);
            };
            if freq > 0.0 {
                self.phase += std::f32::consts::TAU * freq / SAMPLE_RATE as f32;
                if self.phase > std::f32::consts::TAU {
                    self.phase -= std::f32::consts::TAU;
                }
                *s = (self.phase.sin() * 12_000.0) as i16;
            }
        }
        Some(frame)
    }
}

/// Silence, forever.
pub struct Silence;

impl Source for Silence {
    fn next_frame(&mut self) -> Option<Pcm> {
        Some([0; FRAME])
    }
}

/// A WAV file, converted to 48 kHz mono on reading.
pub struct WavSource {
    samples: Vec<i16>,
    pos: usize,
}

pub(crate) fn file_err(path: &Path, e: impl std::fmt::Display) -> CallError {
    CallError::AudioFile {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// The samples of a WAV file, converted to 48 kHz mono, and the file's own
/// sample rate. `max_seconds` refuses a longer file before reading it.
pub fn read_wav(path: &Path, max_seconds: Option<u32>) -> Result<(Vec<i16>, u32), CallError> {
    let reader = hound::WavReader::open(path).map_err(|e| file_err(path, e))?;
    let spec = reader.spec();
    if let Some(max) = max_seconds {
        let seconds = u64::from(reader.duration()) / u64::from(spec.sample_rate.max(1));
        if seconds > u64::from(max) {
            return Err(file_err(
                path,
                format!("it lasts {seconds} s, longer than the {max} s allowed"),
            ));
        }
    }
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(path, e))?,
        (hound::SampleFormat::Int, bits) if bits <= 32 => {
            let shift = bits.saturating_sub(16);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v >> shift) as i16))
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(path, e))?
        }
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32_767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(path, e))?,
        (fmt, bits) => {
            return Err(file_err(
                path,
                format!("unsupported sample format {fmt:?} with {bits} bits"),
            ));
        }
    };
    let mono: Vec<i16> = raw
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    Ok((
        resample(&mono, spec.sample_rate, SAMPLE_RATE),
        spec.sample_rate,
    ))
}

impl WavSource {
    /// Reads the whole file (a call's worth of audio is small).
    pub fn open(path: &Path) -> Result<Self, CallError> {
        Ok(Self::from_samples(read_wav(path, None)?.0))
    }

    /// Audio already at 48 kHz mono.
    pub fn from_samples(samples: Vec<i16>) -> Self {
        Self { samples, pos: 0 }
    }
}

impl Source for WavSource {
    fn next_frame(&mut self) -> Option<Pcm> {
        if self.pos >= self.samples.len() {
            return None;
        }
        let mut frame = [0i16; FRAME];
        let end = (self.pos + FRAME).min(self.samples.len());
        frame[..end - self.pos].copy_from_slice(&self.samples[self.pos..end]);
        self.pos = end;
        Some(frame)
    }
}

/// Linear-interpolation resampling (enough for speech into a voice codec).
pub fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() || from == 0 {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let x = i as f64 * step;
            let j = x as usize;
            let frac = x - j as f64;
            let a = f64::from(input[j.min(input.len() - 1)]);
            let b = f64::from(input[(j + 1).min(input.len() - 1)]);
            (a + (b - a) * frac) as i16
        })
        .collect()
}

/// Writes what is heard to a 48 kHz mono 16-bit WAV file.
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl WavSink {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self, CallError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| file_err(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(writer),
        })
    }
}

impl WavSink {
    /// Appends samples (any number: a file need not end on a frame).
    pub fn write(&mut self, samples: &[i16]) -> Result<(), CallError> {
        if let Some(w) = self.writer.as_mut() {
            for &s in samples {
                w.write_sample(s).map_err(|e| file_err(&self.path, e))?;
            }
        }
        Ok(())
    }
}

impl Sink for WavSink {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.write(frame)
    }

    fn finish(&mut self) -> Result<(), CallError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| file_err(&self.path, e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Discards audio (a headless call without `--audio-out`).
pub struct Discard;

impl Sink for Discard {
    fn play(&mut self, _frame: &Pcm) -> Result<(), CallError> {
        Ok(())
    }
}

/// Keeps audio in memory (tests, the benchmark).
#[derive(Default)]
pub struct Recorder {
    /// Everything played so far.
    pub samples: Vec<i16>,
}

impl Sink for Recorder {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.samples.extend_from_slice(frame);
        Ok(())
    }
}

/// What a call sends, as a user names it (`--audio-in`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioIn {
    /// [`Tone::standard`], repeated.
    Tone,
    /// A WAV file, played once (then silence).
    Wav(PathBuf),
    /// Silence.
    Silence,
    /// The microphone: the default one, or a cpal device id
    /// (`alsa:hw:0,0`). Needs a build with the `audio-device` feature.
    Microphone(Option<String>),
}

#[cfg(not(feature = "audio-device"))]
fn no_devices() -> CallError {
    CallError::AudioFile {
        path: "sound device".into(),
        why: "this build has no sound-card support: rebuild with `--features audio-device` \
              (on Linux it needs libasound2-dev), or use a WAV file or a tone"
            .into(),
    }
}

impl AudioIn {
    /// Parses `tone`, `silence`, `mic` / `mic:DEVICE`, or a path to a WAV
    /// file.
    pub fn parse(s: &str) -> Self {
        match s {
            "tone" => Self::Tone,
            "silence" => Self::Silence,
            "mic" => Self::Microphone(None),
            other => match other.strip_prefix("mic:") {
                Some(id) => Self::Microphone(Some(id.to_string())),
                None => Self::Wav(PathBuf::from(other)),
            },
        }
    }

    /// Opens the source.
    pub fn open(&self) -> Result<Box<dyn Source>, CallError> {
        Ok(match self {
            Self::Tone => Box::new(Tone::standard()),
            Self::Wav(p) => Box::new(WavSource::open(p)?),
            Self::Silence => Box::new(Silence),
            #[cfg(feature = "audio-device")]
            Self::Microphone(id) => Box::new(crate::device::Microphone::open(id.as_deref())?),
            #[cfg(not(feature = "audio-device"))]
            Self::Microphone(_) => return Err(no_devices()),
        })
    }
}

/// Where a call's received audio goes (`--audio-out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOut {
    /// A WAV file (48 kHz mono).
    Wav(PathBuf),
    /// Nowhere.
    Discard,
    /// The speaker: the default one, or a cpal device id. Needs a build
    /// with the `audio-device` feature.
    Speaker(Option<String>),
}

impl AudioOut {
    /// Parses `speaker` / `speaker:DEVICE`, `none`, or a path to a WAV file.
    pub fn parse(s: &str) -> Self {
        match s {
            "speaker" => Self::Speaker(None),
            "none" => Self::Discard,
            other => match other.strip_prefix("speaker:") {
                Some(id) => Self::Speaker(Some(id.to_string())),
                None => Self::Wav(PathBuf::from(other)),
            },
        }
    }

    /// Opens the sink.
    pub fn open(&self) -> Result<Box<dyn Sink>, CallError> {
        Ok(match self {
            Self::Wav(p) => Box::new(WavSink::create(p)?),
            Self::Discard => Box::new(Discard),
            #[cfg(feature = "audio-device")]
            Self::Speaker(id) => Box::new(crate::device::Speaker::open(id.as_deref())?),
            #[cfg(not(feature = "audio-device"))]
            Self::Speaker(_) => return Err(no_devices()),
        })
    }
}

/// Whether this build can use sound devices.
pub const HAS_DEVICES: bool = cfg!(feature = "audio-device");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn audio_names_parse() {
        assert_eq!(AudioIn::parse("tone"), AudioIn::Tone);
        assert_eq!(AudioIn::parse("mic"), AudioIn::Microphone(None));
        assert_eq!(
            AudioIn::parse("mic:alsa:hw:0,0"),
            AudioIn::Microphone(Some("alsa:hw:0,0".into()))
        );
        assert_eq!(AudioIn::parse("x.wav"), AudioIn::Wav("x.wav".into()));
        assert_eq!(AudioOut::parse("speaker"), AudioOut::Speaker(None));
        assert_eq!(AudioOut::parse("none"), AudioOut::Discard);
        if !HAS_DEVICES {
            let e = AudioIn::Microphone(None).open().err().unwrap();
            assert!(e.to_string().contains("no sound-card support"), "{e}");
        }
    }

    #[test]
    fn tone_segments_have_the_right_length_and_repeat() {
        let mut t = Tone::new(&[(440.0, 0.1), (0.0, 0.1)]);
        let mut n = 0;
        while t.next_frame().is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
        let mut r = Tone::repeating(&[(440.0, 0.02)]);
        for _ in 0..100 {
            assert!(r.next_frame().is_some());
        }
    }

    #[test]
    fn wav_round_trip_with_resampling_and_stereo() {
        let dir = std::env::temp_dir().join(format!("umbra-call-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 24_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..24_000 {
            let v = ((i as f32 * std::f32::consts::TAU * 500.0 / 24_000.0).sin() * 8000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let mut src = WavSource::open(&path).unwrap();
        let mut all = Vec::new();
        while let Some(f) = src.next_frame() {
            all.extend_from_slice(&f);
        }
        assert_eq!(all.len(), 48_000);
        let f = crate::analysis::dominant_frequency(&all, SAMPLE_RATE);
        assert!((f - 500.0).abs() < 10.0, "{f}");
        let out = dir.join("out.wav");
        let mut sink = WavSink::create(&out).unwrap();
        sink.play(&[7; FRAME]).unwrap();
        sink.finish().unwrap();
        let back: Vec<i16> = hound::WavReader::open(&out)
            .unwrap()
            .into_samples::<i16>()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(back, vec![7; FRAME]);
        assert!(WavSource::open(&dir.join("missing.wav")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
