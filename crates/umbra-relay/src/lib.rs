//! `umbra relay`: the Umbra call relay, a standard TURN server (RFC 8656) that hides
//! callers' IP addresses from each other. Each side of a relayed call only ever sees the
//! relay's address; the relay forwards end-to-end encrypted media it cannot read.
//!
//! # Running it
//!
//! ```text
//! umbra relay --auth-secret-file /etc/umbra/turn-secret \
//!     --udp-listen 0.0.0.0:3478 --relay-ip 203.0.113.7 \
//!     --tls-listen 0.0.0.0:5349 --tls-cert fullchain.pem --tls-key privkey.pem
//! ```
//!
//! Every flag has an `UMBRA_RELAY_*` environment variable and a key in the TOML file given
//! with `--config` (keys are the field names of [`RelayConfig`]); precedence is defaults <
//! file < environment < flags. Defaults are safe: loopback listeners (UDP and TCP on
//! 127.0.0.1:3478, TLS on 127.0.0.1:5349, metrics on 127.0.0.1:9701), relay ports
//! 49152–65535, 10 allocations per credential, 10 000 in total, 10 MB/s per allocation and
//! direction, lifetimes of at most an hour, one worker per core. A secret is required.
//!
//! **Credentials** are the TURN REST scheme coturn calls `use-auth-secret` /
//! `static-auth-secret`: username `"<unix-expiry>:<token>"`, password
//! `base64(HMAC-SHA1(secret, username))` (see [`umbra_turn::credentials::rest`]). Whoever
//! holds the secret (the messaging server) mints them; they expire on their own.
//! A WebRTC application uses them as
//! `{"urls": ["turn:HOST:3478?transport=udp", "turn:HOST:3478?transport=tcp",
//! "turns:HOST:5349?transport=tcp"], "username": "...", "credential": "..."}`.
//!
//! **Peer policy** is a closed world: an allocation may only send to the relayed address
//! of another live allocation of this relay, so the relay cannot reach loopback services,
//! private networks or the internet at large. `--allow-peer CIDR` (repeatable) widens it.
//!
//! **Privacy**: no log line carries a client IP, a peer address or a username; the
//! Prometheus endpoint (`GET /metrics`, keep it on loopback) exports aggregate counts only.
//! Allocations, nonces and credentials live in memory and die with the process.
//!
//! # Layout
//!
//! - [`config`]: [`RelayArgs`] (flags/environment) and [`RelayConfig`] (TOML, merging).
//! - [`relay`]: [`Relay::bind`] and [`Relay::run`]: sockets, workers, listeners, shutdown.
//! - `worker`: one thread per core, each with its own `umbra_turn` server, its own
//!   `SO_REUSEPORT` client UDP socket, its allocations' relay sockets, and the TCP/TLS
//!   connections hashed to it (`worker/io.rs`: datagram and timer tasks;
//!   `worker/stream.rs`: TCP/TLS framing).
//! - [`udp`]: batched UDP (`recvmmsg`, GRO, GSO) through `quinn-udp`.
//! - [`policy`]: the closed-world [`policy::MeshPolicy`] and the shared set of relayed
//!   addresses.
//! - [`quota`]: per-credential and total allocation quotas across workers.
//! - [`bandwidth`]: the per-allocation token bucket.
//! - [`ports`]: binding relay sockets in the port range, even ports and the reservations
//!   of EVEN-PORT / RESERVATION-TOKEN (RFC 8656 §7.2), shared by the workers.
//! - [`tls`]: certificates from PEM files or self-signed.
//! - [`metrics`]: counters and the Prometheus endpoint.
//! - [`unit`]: the forwarding unit of group calls (`umbra-sfu` on a UDP
//!   socket, members' control connections over Noise on TCP), on its own
//!   port beside the relay, under the same secret.

pub mod bandwidth;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod ports;
pub mod quota;
pub mod relay;
pub mod tls;
pub mod udp;
pub mod unit;

mod worker;

pub use config::{ConfigError, RelayArgs, RelayConfig};
pub use metrics::Metrics;
pub use relay::Relay;
