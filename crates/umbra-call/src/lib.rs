//! Umbra's call media engine.
//!
//! Layout (each module one job; the sans-IO core never touches a socket or
//! the clock):
//! - [`engine`]: one side of a call: WebRTC (str0m) session, relay leg
//!   (`umbra-turn`'s client), candidate policy ("protect IP address"),
//!   codec and jitter buffer, driven by datagrams and time passed in.
//! - [`codec`]: Opus, 48 kHz mono, 20 ms frames, FEC and concealment.
//! - [`jitter`]: the jitter buffer.
//! - [`e2ee`]: group calls' end-to-end frame encryption (SFrame, keys from
//!   the call's MLS group).
//! - [`group`]: a group call's audio at one member: sealing what it says,
//!   and opening, buffering and mixing what each other member says.
//! - [`audio`]: sources (tone, WAV, silence) and sinks (WAV, memory).
//! - [`voice_note`]: voice messages: a recording to an Ogg Opus file and
//!   back.
//! - [`analysis`]: frequency and level measurement of what was heard.
//! - `device` (feature `audio-device`): microphone and speaker through cpal.
//! - [`driver`]: the I/O edge: a UDP socket, a 20 ms audio clock and a tokio
//!   task around one [`engine::Engine`].
//!
//! - [`group_driver`]: the same edge for a member of a group call: the
//!   socket toward the forwarding unit, the clock, [`group::GroupAudio`].
//!
//! Group calls reuse this engine toward a forwarding unit
//! ([`Engine::toward_unit`]); their per-frame end-to-end encryption
//! ([`e2ee`], in [`group`]) wraps the Opus payload between [`codec`] and the
//! RTP writer, so the transport below does not change.

pub mod analysis;
pub mod audio;
pub mod codec;
#[cfg(feature = "audio-device")]
pub mod device;
pub mod driver;
pub mod e2ee;
pub mod engine;
mod error;
pub mod group;
pub mod group_driver;
pub mod jitter;
pub mod voice_note;

pub use engine::relay::Transport;
pub use engine::{CallStats, Engine, EngineConfig, EngineEvent, Path, RelayServer, Role};
pub use error::CallError;
