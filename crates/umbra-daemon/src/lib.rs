//! What every Umbra daemon (server, relay, proxy) shares, written once:
//!
//! - [`config`]: reading the TOML file (`deny_unknown_fields` is each
//!   config's own attribute), overlaying flags on it, shared-secret files.
//! - [`keyfile`]: a daemon's private key, kept in a 0600 file.
//! - [`metrics`]: the loopback Prometheus endpoint (`GET /metrics`).
//! - [`time`]: UTC calendar dates for what people read (HTTP dates, message times).

pub mod config;
pub mod keyfile;
pub mod metrics;
pub mod time;

pub use config::FileError;
pub use metrics::Render;
