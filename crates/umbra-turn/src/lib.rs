//! Sans-IO STUN (RFC 8489) and TURN (RFC 8656) for Umbra.
//!
//! No sockets, no clock, no async runtime: callers feed bytes and the current
//! [`std::time::Instant`] in, and take bytes and timer deadlines out. The relay daemon owns
//! the sockets; this crate owns the protocol.
//!
//! # Layout
//!
//! Codec (bytes ⇄ values):
//! - [`header`]: the 20-byte header, classes, methods, transaction ids.
//! - [`attribute`]: attribute type numbers and typed values ([`Attribute`]).
//! - [`message`]: decoding a whole message ([`Message`]), padding and ordering rules.
//! - [`builder`]: encoding ([`MessageBuilder`]) with integrity and fingerprint trailers.
//! - [`integrity`]: HMAC-SHA1 / HMAC-SHA256 / CRC-32 primitives over the covered bytes.
//! - [`credentials`]: long-term keys, USERHASH, the TURN REST time-limited scheme.
//! - [`channel_data`]: ChannelData frames.
//! - [`demux`]: STUN vs ChannelData, and stream framing for TCP/TLS.
//! - [`hash`]: the keyed fast hasher of the per-packet maps.
//! - [`error`]: codec error enums.
//!
//! State machines:
//! - [`server`]: the TURN server ([`server::Server`]): allocations, permissions, channels,
//!   authentication, nonces, quotas, peer policy.
//! - [`client`]: the TURN client ([`client::Client`]): allocate with the 401/438 dance,
//!   refreshes, permissions, channels, data.
//!
//! Never panics on network input: every parser returns a [`DecodeError`].
//!
//! # Example: a Binding round trip
//!
//! ```
//! use umbra_turn::{Attribute, Class, Message, MessageBuilder, Method, TransactionId};
//!
//! let tid = TransactionId([7; 12]);
//! let bytes = MessageBuilder::new(Class::Request, Method::BINDING, tid)
//!     .attr(&Attribute::Software("umbra"))
//!     .message_integrity(b"password")
//!     .fingerprint()
//!     .build()?;
//! let msg = Message::decode(&bytes)?;
//! assert_eq!(msg.software()?, Some("umbra"));
//! assert!(msg.verify_integrity(b"password").is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attribute;
pub mod builder;
pub mod channel_data;
pub mod client;
pub mod credentials;
pub mod demux;
pub mod error;
pub mod hash;
pub mod header;
pub mod integrity;
pub mod message;
pub mod server;

pub use attribute::{AddressFamily, Attribute, ErrorCode, PasswordAlgorithm};
pub use builder::MessageBuilder;
pub use channel_data::ChannelData;
pub use credentials::{LongTermKey, userhash};
pub use demux::{Packet, Transport, demux, frame_len, split_frames};
pub use error::{DecodeError, EncodeError, IntegrityError};
pub use header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use integrity::IntegrityKind;
pub use message::Message;
