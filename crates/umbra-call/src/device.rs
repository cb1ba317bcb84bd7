//! Sound devices: the microphone as a [`Source`] and the speaker as a
//! [`Sink`], through cpal (feature `audio-device`; on Linux it builds against
//! ALSA, Debian's `libasound2-dev`). Each device stream lives on a thread of
//! its own (cpal's streams are not `Send` on every platform), joined to the
//! call by a bounded queue of 48 kHz mono samples; the device's own rate and
//! channel count are converted on the device thread.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, Stream, StreamConfig};

use crate::CallError;
use crate::audio::{Sink, Source};
use crate::codec::{FRAME, Pcm, SAMPLE_RATE};

/// Most samples queued between a device and the call (200 ms): beyond
/// that the oldest are dropped, so latency stays bounded.
const MAX_QUEUED: usize = SAMPLE_RATE as usize / 5;

fn dev_err(what: &str, e: impl std::fmt::Display) -> CallError {
    CallError::AudioFile {
        path: what.to_string(),
        why: e.to_string(),
    }
}

/// Linear resampling across buffer boundaries (continuous between calls).
struct Linear {
    /// Input samples per output sample.
    step: f64,
    pos: f64,
    prev: f32,
}

impl Linear {
    fn new(from: u32, to: u32) -> Self {
        Self {
            step: f64::from(from) / f64::from(to.max(1)),
            pos: 0.0,
            prev: 0.0,
        }
    }

    fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        for &x in input {
            while self.pos < 1.0 {
                out.push(self.prev + (x - self.prev) * self.pos as f32);
                self.pos += self.step;
            }
            self.pos -= 1.0;
            self.prev = x;
        }
    }
}

#[derive(Default)]
struct Queue(Mutex<VecDeque<i16>>);

impl Queue {
    fn push(&self, samples: impl Iterator<Item = i16>) {
        if let Ok(mut q) = self.0.lock() {
            q.extend(samples);
            let over = q.len().saturating_sub(MAX_QUEUED);
            q.drain(..over);
        }
    }
}

/// A device stream kept playing on its own thread until dropped.
struct Running {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_on_thread(
    build: impl FnOnce() -> Result<Stream, CallError> + Send + 'static,
) -> Result<Running, CallError> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let stream = match build() {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if let Err(e) = stream.play() {
            let _ = ready_tx.send(Err(dev_err("sound device", e)));
            return;
        }
        let _ = ready_tx.send(Ok(()));
        // Until the call drops us (the sender goes away).
        let _ = stop_rx.recv();
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Running {
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(dev_err("sound device", "its thread ended")),
    }
}

fn find(input: bool, id: Option<&str>) -> Result<cpal::Device, CallError> {
    let host = cpal::default_host();
    let what = if input { "microphone" } else { "speaker" };
    let device = match id {
        Some(id) => {
            let parsed: cpal::DeviceId = id
                .parse()
                .map_err(|e| dev_err(what, format!("`{id}` is not a device id: {e}")))?;
            host.device_by_id(&parsed)
        }
        None if input => host.default_input_device(),
        None => host.default_output_device(),
    };
    device.ok_or_else(|| {
        dev_err(
            what,
            "none found (use --audio-in FILE.wav|tone, --audio-out FILE.wav on a machine without one)",
        )
    })
}

fn to_i16(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * 32_767.0) as i16
}

/// The microphone.
pub struct Microphone {
    queue: Arc<Queue>,
    _running: Running,
}

impl Microphone {
    /// Opens the default microphone, or the device `id` (`alsa:default`, ...).
    pub fn open(id: Option<&str>) -> Result<Self, CallError> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let id = id.map(str::to_string);
        let running = run_on_thread(move || {
            let device = find(true, id.as_deref())?;
            let supported = device
                .default_input_config()
                .map_err(|e| dev_err("microphone", e))?;
            let channels = usize::from(supported.channels().max(1));
            let format = supported.sample_format();
            let mut resampler = Linear::new(supported.sample_rate(), SAMPLE_RATE);
            let config: StreamConfig = supported.into();
            let mut mono = Vec::new();
            let mut out = Vec::new();
            let mut take = move |frames: &mut dyn Iterator<Item = f32>| {
                mono.clear();
                out.clear();
                let all: Vec<f32> = frames.collect();
                mono.extend(
                    all.chunks(channels)
                        .map(|c| c.iter().sum::<f32>() / c.len() as f32),
                );
                resampler.push(&mono, &mut out);
                q.push(out.iter().map(|&x| to_i16(x)));
            };
            let err = |e: cpal::Error| tracing::debug!(error = %e, "microphone error");
            let stream = match format {
                SampleFormat::F32 => device.build_input_stream(
                    config,
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        take(&mut data.iter().copied())
                    },
                    err,
                    None,
                ),
                SampleFormat::I16 => device.build_input_stream(
                    config,
                    move |data: &[i16], _: &cpal::InputCallbackInfo| {
                        take(&mut data.iter().map(|&s| f32::from(s) / 32_768.0))
                    },
                    err,
                    None,
                ),
                other => {
                    return Err(dev_err(
                        "microphone",
                        format!("unsupported sample format {other}"),
                    ));
                }
            };
            stream.map_err(|e| dev_err("microphone", e))
        })?;
        Ok(Self {
            queue,
            _running: running,
        })
    }
}

impl Source for Microphone {
    fn next_frame(&mut self) -> Option<Pcm> {
        let mut frame = [0i16; FRAME];
        if let Ok(mut q) = self.queue.0.lock() {
            let n = q.len().min(FRAME);
            for (slot, s) in frame.iter_mut().zip(q.drain(..n)) {
                *slot = s;
            }
        }
        // An underrun plays as silence: the microphone never ends a call.
        Some(frame)
    }
}

/// The speaker.
pub struct Speaker {
    queue: Arc<Queue>,
    _running: Running,
}

impl Speaker {
    /// Opens the default speaker, or the device `id`.
    pub fn open(id: Option<&str>) -> Result<Self, CallError> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let id = id.map(str::to_string);
        let running = run_on_thread(move || {
            let device = find(false, id.as_deref())?;
            let supported = device
                .default_output_config()
                .map_err(|e| dev_err("speaker", e))?;
            let channels = usize::from(supported.channels().max(1));
            let format = supported.sample_format();
            let mut resampler = Linear::new(SAMPLE_RATE, supported.sample_rate());
            let config: StreamConfig = supported.into();
            let mut pending: VecDeque<f32> = VecDeque::new();
            let mut scratch = Vec::new();
            let mut fill = move |frames: usize, write: &mut dyn FnMut(usize, f32)| {
                while pending.len() < frames {
                    let chunk: Vec<f32> = match q.0.lock() {
                        Ok(mut q) => {
                            let n = q.len().min(FRAME);
                            q.drain(..n).map(|s| f32::from(s) / 32_768.0).collect()
                        }
                        Err(_) => Vec::new(),
                    };
                    // Nothing heard yet: silence.
                    let chunk = if chunk.is_empty() {
                        vec![0.0; FRAME / 4]
                    } else {
                        chunk
                    };
                    scratch.clear();
                    resampler.push(&chunk, &mut scratch);
                    pending.extend(scratch.iter().copied());
                }
                for i in 0..frames {
                    write(i, pending.pop_front().unwrap_or(0.0));
                }
            };
            let err = |e: cpal::Error| tracing::debug!(error = %e, "speaker error");
            let stream = match format {
                SampleFormat::F32 => device.build_output_stream(
                    config,
                    move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                        let frames = data.len() / channels;
                        fill(frames, &mut |i, x| {
                            data[i * channels..(i + 1) * channels].fill(x);
                        });
                    },
                    err,
                    None,
                ),
                SampleFormat::I16 => device.build_output_stream(
                    config,
                    move |data: &mut [i16], _: &cpal::OutputCallbackInfo| {
                        let frames = data.len() / channels;
                        fill(frames, &mut |i, x| {
                            data[i * channels..(i + 1) * channels].fill(to_i16(x));
                        });
                    },
                    err,
                    None,
                ),
                other => {
                    return Err(dev_err(
                        "speaker",
                        format!("unsupported sample format {other}"),
                    ));
                }
            };
            stream.map_err(|e| dev_err("speaker", e))
        })?;
        Ok(Self {
            queue,
            _running: running,
        })
    }
}

impl Sink for Speaker {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.queue.push(frame.iter().copied());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resampling_keeps_a_tone_across_buffers() {
        let mut r = Linear::new(44_100, 48_000);
        let mut out = Vec::new();
        let tone: Vec<f32> = (0..44_100)
            .map(|i| (i as f32 * std::f32::consts::TAU * 440.0 / 44_100.0).sin() * 0.3)
            .collect();
        for chunk in tone.chunks(441) {
            r.push(chunk, &mut out);
        }
        assert!((out.len() as i64 - 48_000).abs() < 3, "{}", out.len());
        let pcm: Vec<i16> = out.iter().map(|&x| to_i16(x)).collect();
        let f = crate::analysis::dominant_frequency(&pcm, 48_000);
        assert!((f - 440.0).abs() < 10.0, "{f}");
    }

    /// ALSA's `null` device takes and gives silence without any hardware:
    /// the microphone and speaker paths run end to end on it.
    #[test]
    fn microphone_and_speaker_run_on_the_null_device() {
        let mut mic = match Microphone::open(Some("alsa:null")) {
            Ok(m) => m,
            Err(e) => panic!("no ALSA null device ({e}): is libasound2 installed?"),
        };
        let mut spk = Speaker::open(Some("alsa:null")).unwrap();
        for _ in 0..25 {
            let f = mic.next_frame().unwrap();
            spk.play(&f).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let e = Microphone::open(Some("not-a-device-id")).err().unwrap();
        assert!(e.to_string().contains("not a device id"), "{e}");
    }
}
