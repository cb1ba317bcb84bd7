//! Tokio I/O around `umbra-wire`'s sans-IO Noise channel.
//!
//! - [`handshake`]: [`connect`] (client) and [`accept`] (server) run the Noise IK
//!   handshake over any byte stream (TCP today; TLS through a proxy later).
//! - [`dial`]: opening the stream to the server, directly or through a proxy
//!   (TLS and the admission preamble, or a plain port's WebSocket upgrade).
//! - [`masked`]: a plain port's stream, masked where it would show its shape.
//! - [`fronted`]: a fronting port's stream: a marked hello, then masked
//!   bytes in TLS records.
//! - [`channel`]: [`FrameReader`] and [`FrameWriter`], the two halves of an
//!   established channel, usable from different tasks.
//!
//! Nothing here knows what the frames mean: that is the server's and the
//! client's business.

pub mod channel;
pub mod dial;
pub mod fronted;
pub mod handshake;
pub mod masked;

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
    Io(std::io::Error),
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
    /// The proxy's plain port did not admit the connection.
    #[error(transparent)]
    ProxyAnswer(#[from] umbra_wire::upgrade::AnswerError),
    /// The proxy's fronting port did not admit the connection, or broke
    /// its framing.
    #[error(transparent)]
    Front(#[from] umbra_wire::front::FrontError),
    /// The peer closed the connection.
    #[error("the connection was closed by the other side")]
    Closed,
}

impl From<std::io::Error> for NetError {
    /// A socket error, unless it carries one of this crate's own (the
    /// masked and fronted streams report the proxy's answers through
    /// `io::Error`, which is all an `AsyncRead` may return).
    fn from(e: std::io::Error) -> Self {
        use umbra_wire::front::FrontError;
        use umbra_wire::upgrade::AnswerError;
        let ours = e
            .get_ref()
            .is_some_and(|i| i.is::<NetError>() || i.is::<AnswerError>() || i.is::<FrontError>());
        if !ours {
            return NetError::Io(e);
        }
        let unreadable = NetError::Proxy("the proxy's answer could not be read");
        let Some(inner) = e.into_inner() else {
            return unreadable;
        };
        inner
            .downcast::<NetError>()
            .map(|net| *net)
            .or_else(|i| {
                i.downcast::<AnswerError>()
                    .map(|a| NetError::ProxyAnswer(*a))
            })
            .or_else(|i| i.downcast::<FrontError>().map(|f| NetError::Front(*f)))
            .unwrap_or(unreadable)
    }
}
