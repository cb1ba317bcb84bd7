//! Tokio I/O around `umbra-wire`'s sans-IO Noise channel.
//!
//! - [`handshake`]: [`connect`] (client) and [`accept`] (server) run the Noise IK
//!   handshake over any byte stream (TCP today; TLS through a proxy later).
//! - [`dial`]: opening the stream to the server, directly or through a proxy
//!   (TCP or TLS, then the admission preamble).
//! - [`channel`]: [`FrameReader`] and [`FrameWriter`], the two halves of an
//!   established channel, usable from different tasks.
//!
//! Nothing here knows what the frames mean: that is the server's and the
//! client's business.

pub mod channel;
pub mod dial;
pub mod handshake;

pub use channel::{FrameReader, FrameWriter};
pub use handshake::{Channel, accept, connect};

use thiserror::Error;

/// A byte stream the channel can run over.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Errors of a channel.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something the protocol does not allow.
    #[error(transparent)]
    Wire(#[from] umbra_wire::WireError),
    /// The peer took too long.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// The server closed the connection before answering the handshake.
    #[error(
        "the server closed the connection during the handshake: it may be at its connection \
         limit, or this address is not an Umbra server"
    )]
    ClosedDuringHandshake,
    /// Going through the proxy failed.
    #[error("proxy: {0}")]
    Proxy(&'static str),
    /// The peer closed the connection.
    #[error("the connection was closed by the other side")]
    Closed,
}
