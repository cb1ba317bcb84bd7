//! What can go wrong in a call, phrased for the user.

use thiserror::Error;

/// A call failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// The other side's DTLS certificate is not the one its end-to-end
    /// signalling announced: someone in the middle (a relay, the network)
    /// tried to take over the media.
    #[error(
        "the other side's media key does not match the one in its end-to-end encrypted offer: \
         the call was refused (someone may be trying to intercept it)"
    )]
    FingerprintMismatch,
    /// The call relay did not answer or refused the allocation.
    #[error("the call relay {0}")]
    Relay(String),
    /// The offer, answer or a candidate could not be used.
    #[error("malformed call signalling: {0}")]
    Signalling(String),
    /// No path between the two sides could be established.
    #[error("no connection could be established within {0} s")]
    NoPath(u64),
    /// The media path went silent for too long.
    #[error("the connection was lost (nothing received for {0} s)")]
    Lost(u64),
    /// The engine was used in the wrong order.
    #[error("{0}")]
    State(&'static str),
    /// The audio codec failed.
    #[error("audio codec: {0}")]
    Codec(String),
    /// Reading or writing an audio file failed.
    #[error("audio file {path}: {why}")]
    AudioFile {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The WebRTC stack failed.
    #[error("media transport: {0}")]
    Rtc(String),
    /// A group call's frame could not be sealed end to end.
    #[error(transparent)]
    Seal(#[from] crate::e2ee::SealError),
    /// A socket failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}
