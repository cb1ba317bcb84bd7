//! Umbra's wire protocol, with no I/O.
//!
//! - [`proto`], [`e2e`] and [`unit`]: the protobuf messages generated from
//!   `proto/*.proto`, which are the written specification of the protocol.
//! - [`frame`]: length-prefixed protobuf frames inside the decrypted stream.
//! - [`noise`]: the Noise IK handshake and the encrypted, chunked byte stream
//!   that carries the frames (client pins the server's static key).
//! - [`business`] and [`hosting`]: what a business's card and its hosting
//!   statement sign, and the rules they are checked by.
//! - [`devices`]: what an account key signs of its devices (certificates in
//!   their MLS leaves, the versioned device list) and the checks.
//! - [`invite`]: the `umbra://join?...` links that carry host, port and server key,
//!   and the `umbra://unit?...` addresses of forwarding units.
//! - [`proxy`]: proxy links (`umbra://proxy?...`) and the admission preamble
//!   a client sends a proxy first.
//! - [`upgrade`]: the WebSocket upgrade a client opens a proxy's plain
//!   port with, carrying the same proof as the preamble.
//! - [`front`]: fronting mode's marked ClientHello, the proxy's server
//!   flight and the TLS records that carry the stream after it.
//! - [`mask`]: keystream masks that hide the framing of a proxied stream
//!   and of every Noise channel's length prefixes.
//! - [`suites`]: the MLS ciphersuites key packages are kept and claimed by.
//! - [`error`]: what can go wrong on the wire.
//!
//! Sockets live in `umbra-net`; this crate only turns bytes into messages and
//! back, so every parser can be fuzzed and tested in memory.

mod aead;
pub mod business;
pub mod devices;
pub mod error;
pub mod frame;
pub mod front;
pub mod hosting;
pub mod invite;
mod link;
pub mod mask;
pub mod noise;
pub mod proxy;
pub mod signature;
pub mod suites;
pub mod upgrade;

pub use error::WireError;

/// Messages between client and server (`proto/umbra.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/umbra.v1.rs"));
}

/// End-to-end payloads the server never reads (`proto/e2e.proto`).
#[allow(missing_docs, clippy::all)]
pub mod e2e {
    include!(concat!(env!("OUT_DIR"), "/umbra.e2e.v1.rs"));
}

/// Group call members and the forwarding unit (`proto/unit.proto`).
#[allow(missing_docs, clippy::all)]
pub mod unit {
    include!(concat!(env!("OUT_DIR"), "/umbra.unit.v1.rs"));
}

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = proto::ProtocolVersion::ProtocolVersion1 as u32;

/// Hard upper bound on one frame, whatever a peer announces (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
