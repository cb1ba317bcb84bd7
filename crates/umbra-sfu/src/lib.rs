//! The Umbra forwarding unit (SFU) for group calls. Every group call is
//! relayed through it: it receives each member's audio once and sends it on
//! to the other members of the room, so no member ever sees another's
//! address. It forwards without decoding or mixing, and what it forwards is
//! end-to-end encrypted per frame (SFrame, keys from the call's MLS group,
//! see `umbra-call`'s `e2ee`): it cannot hear a word, and it knows a room
//! only as a random id and a count of connections, never who is in it.
//!
//! Members join with the relay credentials the messaging server hands to a
//! logged-in member (a random token and an expiry, signed with the secret
//! the server and the unit share): never an account or a group name.
//!
//! # Layout
//!
//! - [`sfu`]: [`Sfu`], the sans-IO unit: joins, demultiplexing, forwarding,
//!   timers (str0m sessions, ICE-lite, DTLS-SRTP toward each member).
//! - [`room`]: rooms, connections and the limits per room, per credential
//!   and in total.
//! - [`credential`]: checking a join's credential.

pub mod credential;
pub mod room;
pub mod sfu;

pub use room::{Limits, PeerId, Refusal, RoomId};
pub use sfu::{
    Datagram, FRAME_BURST, FRAME_RATE, JoinError, JoinRequest, Joined, Sfu, SfuConfig, SfuEvent,
    SfuStats,
};
