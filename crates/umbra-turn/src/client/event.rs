//! What the client reports to its owner ([`ClientEvent`]) and its errors ([`ClientError`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

use crate::error::{DecodeError, EncodeError};
use crate::header::Method;

/// Something that happened to the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The allocation exists.
    Allocated {
        /// The relayed address peers send to.
        relay: SocketAddr,
        /// Our address as the server saw it (server-reflexive).
        mapped: Option<SocketAddr>,
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// A Refresh succeeded.
    Refreshed {
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// Permissions are installed for these peers.
    PermissionCreated {
        /// Peer IPs.
        peers: Vec<IpAddr>,
    },
    /// A channel is bound (or its binding refreshed).
    ChannelBound {
        /// Channel number.
        channel: u16,
        /// Peer.
        peer: SocketAddr,
    },
    /// Application data from a peer (Data indication or ChannelData).
    Data {
        /// The peer that sent it.
        peer: SocketAddr,
        /// The data.
        data: Vec<u8>,
    },
    /// A request failed: `code` is the error code, or `None` on timeout.
    RequestFailed {
        /// The request's method.
        method: Method,
        /// Error code, or `None` if the server never answered.
        code: Option<u16>,
    },
    /// The allocation is gone (released with lifetime 0, refused by the server, or expired).
    AllocationEnded,
}

/// Misuse of the client API, or a packet the client could not use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The operation needs an allocation.
    #[error("no allocation")]
    NotAllocated,
    /// Allocate called while one exists or is in progress.
    #[error("allocation already exists or is in progress")]
    AlreadyAllocating,
    /// Send to a peer without a permission (call `create_permission` first).
    #[error("no permission for peer")]
    NoPermission,
    /// All channel numbers are in use.
    #[error("no free channel number")]
    NoFreeChannel,
    /// A packet was malformed.
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    /// A message could not be built.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// A response matched no outstanding request (late retransmission, or spoofed).
    #[error("unknown transaction")]
    UnknownTransaction,
    /// A response failed its integrity check and was ignored.
    #[error("response integrity check failed")]
    Integrity,
    /// ChannelData on a channel we did not bind.
    #[error("unknown channel")]
    UnknownChannel,
    /// A STUN message the client does not expect.
    #[error("unexpected message")]
    Unexpected,
}
