//! Errors of the wire layer: framing, decoding and the Noise channel.

use thiserror::Error;

/// Something a peer sent could not be accepted. Every variant closes the
/// connection it happened on, and only that one.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame announced more bytes than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The frame's bytes are not a valid protobuf message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A Noise message failed authentication or could not be processed.
    #[error("encrypted message failed authentication")]
    Decrypt,
    /// The server could not read our handshake: the key we pinned is not its key.
    #[error(
        "the server rejected the handshake: the server key in your invite link does not match \
         this server's key (ask the operator for a fresh invite link)"
    )]
    ServerKeyMismatch,
    /// The server's handshake reply did not authenticate under the pinned key.
    #[error(
        "the server's handshake reply does not match the pinned server key: this is not the \
         server named in your invite link"
    )]
    ServerNotAuthenticated,
    /// The handshake was malformed.
    #[error("malformed handshake: {0}")]
    Handshake(&'static str),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// A key had the wrong length.
    #[error("invalid key: expected 32 bytes")]
    InvalidKey,
    /// Noise internal error (should not happen with valid parameters).
    #[error("noise: {0}")]
    Noise(String),
}
