//! What the server asks the daemon to do ([`Output`]), the daemon's answers about relay
//! sockets ([`RelayGrant`], [`RelayError`]), and why an input produced nothing
//! ([`Discarded`]).

use std::net::SocketAddr;

use thiserror::Error;

use crate::attribute::AddressFamily;
use crate::demux::Transport;
use crate::error::{DecodeError, EncodeError};

/// Identifies one pending relay allocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayRequestId(pub u64);

/// An action for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send `bytes` to a client over the transport it used.
    SendToClient {
        /// Transport to the client.
        transport: Transport,
        /// The client's address.
        client: SocketAddr,
        /// A STUN message or ChannelData frame (padded on stream transports).
        bytes: Vec<u8>,
    },
    /// Send `bytes` from the relay socket `relay` to `peer` (UDP).
    SendFromRelay {
        /// The allocation's relay address (the source).
        relay: SocketAddr,
        /// The peer (the destination).
        peer: SocketAddr,
        /// Application data.
        bytes: Vec<u8>,
        /// Set the DF bit (the client asked with DONT-FRAGMENT).
        dont_fragment: bool,
    },
    /// Open a relay socket and answer with [`super::Server::relay_allocated`]. The
    /// port rules of RFC 8656 §7.2 (EVEN-PORT, RESERVATION-TOKEN) are
    /// [`super::RelayPorts`]'s, which takes these fields as a [`super::PortRequest`].
    AllocateRelay {
        /// Echo this in the answer.
        request: RelayRequestId,
        /// Address family of the relay address (with `reservation_token`, the reserved
        /// address decides and this is only the default, IPv4).
        family: AddressFamily,
        /// `Some(reserve)` if the client asked for an even port; `reserve` also asks to hold
        /// the next port and return a reservation token in the grant (the server refuses a
        /// grant with an odd port, or without a token when one was asked for).
        even_port: Option<bool>,
        /// A token from an earlier reservation the client wants to use: grant the reserved
        /// address, or refuse with [`RelayError::InsufficientCapacity`] if the token is
        /// unknown, used or expired. Never together with `even_port`.
        reservation_token: Option<[u8; 8]>,
        /// The authenticated username, so a daemon running several servers can enforce a
        /// per-credential quota across all of them. Never log it.
        username: String,
    },
    /// Close the relay socket of an allocation that ended.
    ReleaseRelay {
        /// The relay address.
        relay: SocketAddr,
    },
}

/// A relayed datagram handed back to the daemon by [`super::Server::handle_packet_forward`]
/// or [`super::Server::handle_relayed_forward`], borrowing the input: the same action as
/// the [`Output`] named in each variant, without allocating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forward<'a> {
    /// As [`Output::SendFromRelay`] (without DONT-FRAGMENT): send `data` from the relay
    /// socket `relay` to `peer`.
    ToPeer {
        /// The allocation's relay address (the source).
        relay: SocketAddr,
        /// The peer (the destination).
        peer: SocketAddr,
        /// Application data.
        data: &'a [u8],
    },
    /// As [`Output::SendToClient`] with a ChannelData frame: send `data` on `channel` to
    /// `client` (frame it with [`crate::ChannelData::encode_into`], padded on stream
    /// transports).
    ToClient {
        /// Transport to the client.
        transport: Transport,
        /// The client's address.
        client: SocketAddr,
        /// The channel bound to the peer that sent the data.
        channel: u16,
        /// Application data.
        data: &'a [u8],
    },
}

/// The daemon's successful answer to [`Output::AllocateRelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayGrant {
    /// The relayed transport address (what peers see).
    pub relay: SocketAddr,
    /// Token for the next (odd) port, when a reservation was requested and made.
    pub reservation_token: Option<[u8; 8]>,
}

/// The daemon's refusal of [`Output::AllocateRelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RelayError {
    /// No port available, a reservation not possible, or an unknown, used or expired
    /// reservation token (508).
    #[error("insufficient capacity")]
    InsufficientCapacity,
    /// The address family cannot be served (440).
    #[error("address family not supported")]
    FamilyNotSupported,
    /// The credential's allocation quota is used up (486), e.g. across daemon workers.
    #[error("allocation quota reached")]
    QuotaReached,
    /// Anything else (500).
    #[error("server error")]
    Internal,
}

/// Why an input was dropped without a response (RFC 8656 discards silently in these
/// cases). Useful for counters; never contains peer data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Discarded {
    /// Not a valid STUN or ChannelData message.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// A response or an indication other than Send arrived from a client.
    #[error("unexpected message class or method")]
    Unexpected,
    /// No allocation for this client (or relay address).
    #[error("no allocation")]
    NoAllocation,
    /// Channel not bound (or expired).
    #[error("channel not bound")]
    NoChannel,
    /// No (unexpired) permission for the peer.
    #[error("no permission for peer")]
    NoPermission,
    /// The peer policy refused the peer.
    #[error("peer forbidden by policy")]
    PeerForbidden,
    /// A Send indication lacked XOR-PEER-ADDRESS or DATA, or had an unsupported attribute.
    #[error("incomplete or unsupported indication")]
    BadIndication,
    /// A retransmission of an Allocate whose relay is still being opened.
    #[error("allocation in progress")]
    InProgress,
    /// Unknown relay request id.
    #[error("unknown relay request")]
    UnknownRelayRequest,
    /// A response could not be encoded (a bug, or oversize data).
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}
