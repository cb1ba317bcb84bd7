//! The Umbra messaging server: accounts, devices, key packages and sealed
//! delivery to device mailboxes (protocol: `umbra-wire/proto/umbra.proto`).
//!
//! Entry points: [`ServerArgs`] (clap flags, flatten it into a CLI) →
//! [`ServerConfig::load`] → [`Server::bind`] → [`Server::run`], or just [`run`].
//!
//! Layout, one job per file:
//! - [`config`]: TOML file + `UMBRA_*` environment + flags.
//! - [`server`]: binding, accept loop, connection cap, shutdown.
//! - `connection`: one client session's event loop (frames, replies, pushes).
//! - `requests`: what each request does.
//! - [`storage`]: the storage thread (group commit through `umbra-store`).
//! - [`database`]: which store: the SQLite file, or a PostgreSQL database.
//! - [`devices`]: device lists (linking, unlinking) and link slots.
//! - [`blobs`]: attachment blobs (anonymous, resumable upload; download by
//!   id), kept by `umbra-store`'s blob store under the data directory.
//! - [`doctor`]: `umbra server doctor`'s checks.
//! - [`cluster`]: several nodes on one PostgreSQL database: wake-ups over
//!   NATS.
//! - [`routing`]: mailbox cache and the registry of online devices.
//! - [`budget`]: per-mailbox introduction budget.
//! - [`business`]: business cards, and the operator's verification of them.
//! - [`validate`]: usernames and signatures.
//! - [`error`]: per-request errors and their protocol codes.
//! - [`keyfile`]: the server's Noise static key on disk.
//! - [`metrics`]: aggregate counters and the Prometheus endpoint.
//! - [`shared`]: state shared by connections and storage.
//!
//! Privacy: the server never stores or logs a client address, and its logs
//! carry no username, device id, mailbox id or message bytes: only aggregate
//! events and counts.

pub mod blobs;
pub mod budget;
pub mod business;
pub mod cluster;
pub mod config;
mod connection;
pub mod database;
pub mod devices;
pub mod doctor;
pub mod error;
pub mod keyfile;
pub mod metrics;
mod requests;
pub mod routing;
pub mod server;
pub mod shared;
pub mod storage;
pub mod validate;

pub use config::{ConfigError, ServerArgs, ServerConfig};
pub use error::RequestError;
pub use server::{Server, run};
