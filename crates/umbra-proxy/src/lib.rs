//! `umbra proxy`: lets people reach Umbra where it is blocked.
//!
//! A volunteer runs it on ports that are rarely blocked (443 with TLS, 80 and
//! 5222 plain) and shares its link. A client's first bytes prove it knows the
//! link's secret (see `umbra_wire::proxy`); then the proxy forwards the
//! stream, which is the client's Noise session with the server, to the
//! messaging server (or the call relay). Anything else is served as a web
//! visitor, so a prober sees an ordinary website. The proxy learns the
//! client's IP and nothing else, and neither logs it nor passes it on.
//!
//! Layout:
//! - [`config`]: flags, environment, TOML file.
//! - [`replay`]: the bounded cache of seen admission nonces.
//! - [`admission`]: deciding, from the first bytes, admit or decoy.
//! - [`decoy`]: the website probers see (built in, or a configured web server).
//! - [`tls`]: the certificate (operator's PEM, or generated and kept).
//! - [`acme`]: `--acme DOMAIN`: a CA's certificate, obtained and renewed.
//! - `front`: `--front HOST:PORT`: the TLS ports as a real site, admission
//!   on the first record.
//! - [`upstream`]: the upstreams, resolved ahead of time; the fast connect.
//! - [`shared`]: what all connections share: admission, limits, counters.
//! - `plain`: the plain ports' own event loop (one per core).
//! - [`forward`]: copying bytes both ways for TLS connections.
//! - [`proxy_protocol`]: PROXY protocol v2 from a load balancer in front.
//! - [`metrics`]: aggregate counters on loopback.
//! - [`server`]: listeners, workers, TLS connections, shutdown.
//! - [`doctor`]: `umbra proxy doctor`, the operator's checks.
//! - `files`: private directories and files, written atomically.
//! - [`link`]: the proxy's secret and link, printed with a QR code.

pub mod acme;
pub mod admission;
pub mod config;
pub mod decoy;
pub mod doctor;
mod files;
pub mod forward;
mod front;
pub mod link;
pub mod metrics;
mod plain;
pub mod proxy_protocol;
pub mod replay;
pub mod server;
mod shared;
pub mod tls;
pub mod upstream;

pub use config::{ProxyArgs, ProxyConfig};
pub use server::Proxy;
