//! Umbra's end-to-end cryptography, with no I/O and no clock.
//!
//! - [`identity`]: the account key that vouches for its devices, and a
//!   device's keys — the Ed25519 identity key that signs MLS
//!   credentials and logins, and the X25519 sealing key envelopes are sealed to.
//! - [`seal`]: sealed envelopes, so the server sees neither content nor sender.
//! - [`attachment`]: files sealed in chunks under a key of their own, padded.
//! - [`mls`]: conversations as MLS groups (RFC 9420, via openmls): a 1:1 chat
//!   is a two-member group. Generic over the openmls provider, so the client
//!   chooses the storage (SQLite, one transaction per operation).
//! - [`safety`]: safety numbers two people compare out of band.
//! - [`error`]: what can go wrong.

pub mod attachment;
pub mod error;
pub mod identity;
pub mod mls;
pub mod safety;
pub mod seal;

pub use error::CryptoError;
pub use identity::{AccountKey, Identity};
