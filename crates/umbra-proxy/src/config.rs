//! Configuration: defaults < TOML file (`--config`) < `UMBRA_PROXY_*`
//! environment < flags. Unknown keys in the file are an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use umbra_daemon::config::{Layered, set, set_opt};

/// The resolved configuration (also the TOML file's format).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The messaging server admitted clients are forwarded to (`host:port`).
    pub upstream: Option<String>,
    /// The call relay's TCP/TLS TURN port, for calls through the proxy.
    pub relay_upstream: Option<String>,
    /// TLS listening addresses.
    pub tls_listen: Vec<SocketAddr>,
    /// Plain TCP listening addresses.
    pub plain_listen: Vec<SocketAddr>,
    /// Host name the proxy link names (what users connect to).
    pub public_host: Option<String>,
    /// Port the proxy link names (default: the first TLS port, else the first plain one).
    pub link_port: Option<u16>,
    /// Where the secret, and a generated certificate, are kept.
    pub data_dir: PathBuf,
    /// Certificate chain (PEM) for the TLS ports.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) for the TLS ports.
    pub key_file: Option<PathBuf>,
    /// Obtain and renew the certificate for this domain over ACME.
    pub acme: Option<String>,
    /// The ACME directory URL.
    pub acme_directory: String,
    /// A PEM root to trust for the ACME server (a private or test CA).
    pub acme_ca_root: Option<PathBuf>,
    /// A web server that non-admitted visitors are relayed to (`host:port`);
    /// without it they get the built-in site.
    pub decoy: Option<String>,
    /// A real HTTPS site the TLS ports front (`host:port`): every visitor who
    /// is not admitted talks to it, handshake and certificate included.
    pub front: Option<String>,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Seconds without traffic after which a forwarded connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete TLS and send its first bytes.
    pub handshake_timeout_secs: u64,
    /// Accepted clock difference for admission, in seconds.
    pub admission_window_secs: u64,
    /// Admission nonces remembered against replay (bounds memory).
    pub replay_cache_entries: usize,
    /// Expect a PROXY protocol v2 header from a load balancer on every connection.
    pub accept_proxy_protocol: bool,
    /// Prometheus metrics address (aggregate counters only).
    pub metrics_listen: SocketAddr,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            upstream: None,
            relay_upstream: None,
            tls_listen: vec![SocketAddr::from(([0u16; 8], 443))],
            plain_listen: vec![
                SocketAddr::from(([0u16; 8], 80)),
                SocketAddr::from(([0u16; 8], 5222)),
            ],
            public_host: None,
            link_port: None,
            data_dir: PathBuf::from("./umbra-proxy-data"),
            cert_file: None,
            key_file: None,
            acme: None,
            acme_directory: crate::acme::LETS_ENCRYPT.to_string(),
            acme_ca_root: None,
            decoy: None,
            front: None,
            max_connections: 10_000,
            idle_timeout_secs: 600,
            handshake_timeout_secs: 10,
            admission_window_secs: 120,
            replay_cache_entries: 100_000,
            accept_proxy_protocol: false,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9702)),
            workers: None,
        }
    }
}

/// Flags of `umbra proxy` (each can also come from the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyArgs {
    /// TOML configuration file; flags and UMBRA_PROXY_* variables override it.
    #[arg(long, env = "UMBRA_PROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The Umbra messaging server to forward admitted users to (HOST:PORT).
    #[arg(long, env = "UMBRA_PROXY_UPSTREAM", value_name = "HOST:PORT")]
    pub upstream: Option<String>,
    /// The call relay's TCP/TLS port, so calls go through this proxy too (HOST:PORT).
    #[arg(long, env = "UMBRA_PROXY_RELAY_UPSTREAM", value_name = "HOST:PORT")]
    pub relay_upstream: Option<String>,
    /// TLS port(s) to listen on (repeatable) [default: [::]:443].
    #[arg(
        long,
        env = "UMBRA_PROXY_TLS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub tls_listen: Vec<SocketAddr>,
    /// Plain TCP port(s) to listen on (repeatable) [default: [::]:80 and [::]:5222].
    #[arg(
        long,
        env = "UMBRA_PROXY_PLAIN_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub plain_listen: Vec<SocketAddr>,
    /// Do not listen with TLS at all.
    #[arg(long, env = "UMBRA_PROXY_NO_TLS")]
    pub no_tls: bool,
    /// Do not listen on plain TCP ports at all.
    #[arg(long, env = "UMBRA_PROXY_NO_PLAIN")]
    pub no_plain: bool,
    /// Host name or address users reach this proxy at (put in the link).
    #[arg(long, env = "UMBRA_PROXY_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
    /// Port the link names [default: the first TLS port, else the first plain one].
    #[arg(long, env = "UMBRA_PROXY_LINK_PORT", value_name = "PORT")]
    pub link_port: Option<u16>,
    /// Directory for the proxy's secret and generated certificate [default: ./umbra-proxy-data].
    #[arg(long, env = "UMBRA_PROXY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Certificate chain (PEM) for TLS; a self-signed one is generated without it.
    #[arg(long, env = "UMBRA_PROXY_CERT", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) for --cert-file.
    #[arg(long, env = "UMBRA_PROXY_KEY", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Get a real certificate for DOMAIN from Let's Encrypt (ACME, TLS-ALPN-01 on port 443) and renew it.
    #[arg(long, env = "UMBRA_PROXY_ACME", value_name = "DOMAIN")]
    pub acme: Option<String>,
    /// ACME directory to use with --acme [default: Let's Encrypt].
    #[arg(long, env = "UMBRA_PROXY_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Trust this PEM root for the ACME server instead of the system's (a private or test CA).
    #[arg(long, env = "UMBRA_PROXY_ACME_CA_ROOT", value_name = "FILE")]
    pub acme_ca_root: Option<PathBuf>,
    /// Web server to relay non-Umbra visitors to (HOST:PORT) [default: a built-in site].
    #[arg(long, env = "UMBRA_PROXY_DECOY", value_name = "HOST:PORT")]
    pub decoy: Option<String>,
    /// Front this real HTTPS site on the TLS ports (HOST:443): everyone who is not admitted talks to it, its handshake and certificate included; no certificate of the proxy's own is used.
    #[arg(long, env = "UMBRA_PROXY_FRONT", value_name = "HOST:PORT")]
    pub front: Option<String>,
    /// Most simultaneous connections [default: 10000].
    #[arg(long, env = "UMBRA_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Close forwarded connections silent for this many seconds [default: 600].
    #[arg(long, env = "UMBRA_PROXY_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a client has for TLS and its first bytes [default: 10].
    #[arg(long, env = "UMBRA_PROXY_HANDSHAKE_TIMEOUT_SECS", value_name = "SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Clock difference accepted for admission, in seconds [default: 120].
    #[arg(long, env = "UMBRA_PROXY_ADMISSION_WINDOW_SECS", value_name = "SECS")]
    pub admission_window_secs: Option<u64>,
    /// Admission nonces remembered against replay [default: 100000].
    #[arg(long, env = "UMBRA_PROXY_REPLAY_CACHE_ENTRIES", value_name = "N")]
    pub replay_cache_entries: Option<usize>,
    /// Expect PROXY protocol v2 from a load balancer in front (its address information is discarded).
    #[arg(long, env = "UMBRA_PROXY_ACCEPT_PROXY_PROTOCOL")]
    pub accept_proxy_protocol: bool,
    /// Prometheus metrics address; keep it on loopback [default: 127.0.0.1:9702].
    #[arg(long, env = "UMBRA_PROXY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Worker threads, each with its own share of the listening ports [default: one per core].
    #[arg(long, env = "UMBRA_PROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be used.
    #[error(transparent)]
    File(#[from] umbra_daemon::FileError),
    /// A value is missing or out of range.
    #[error("invalid proxy configuration: {0}")]
    Invalid(&'static str),
}

impl Layered for ProxyConfig {
    type Args = ProxyArgs;

    fn file(args: &ProxyArgs) -> Option<&Path> {
        args.config.as_deref()
    }

    fn overlay(mut self, args: &Self::Args) -> Self {
        set_opt(&mut self.upstream, &args.upstream);
        set_opt(&mut self.relay_upstream, &args.relay_upstream);
        if !args.tls_listen.is_empty() {
            self.tls_listen = args.tls_listen.clone();
        }
        if !args.plain_listen.is_empty() {
            self.plain_listen = args.plain_listen.clone();
        }
        if args.no_tls {
            self.tls_listen.clear();
        }
        if args.no_plain {
            self.plain_listen.clear();
        }
        set_opt(&mut self.public_host, &args.public_host);
        set_opt(&mut self.link_port, &args.link_port);
        set(&mut self.data_dir, &args.data_dir);
        set_opt(&mut self.cert_file, &args.cert_file);
        set_opt(&mut self.key_file, &args.key_file);
        set_opt(&mut self.acme, &args.acme);
        set(&mut self.acme_directory, &args.acme_directory);
        set_opt(&mut self.acme_ca_root, &args.acme_ca_root);
        set_opt(&mut self.decoy, &args.decoy);
        set_opt(&mut self.front, &args.front);
        set(&mut self.max_connections, &args.max_connections);
        set(&mut self.idle_timeout_secs, &args.idle_timeout_secs);
        set(
            &mut self.handshake_timeout_secs,
            &args.handshake_timeout_secs,
        );
        set(&mut self.admission_window_secs, &args.admission_window_secs);
        set(&mut self.replay_cache_entries, &args.replay_cache_entries);
        self.accept_proxy_protocol |= args.accept_proxy_protocol;
        set(&mut self.metrics_listen, &args.metrics_listen);
        set_opt(&mut self.workers, &args.workers);
        self
    }
}

impl ProxyConfig {
    /// Defaults < file < environment < flags, then validated.
    pub fn load(args: &ProxyArgs) -> Result<Self, ConfigError> {
        let merged = Self::merge(args)?;
        merged.validate()?;
        Ok(merged)
    }

    /// Checks the configuration makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upstream.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(
                "name the messaging server to forward to: --upstream HOST:PORT",
            ));
        }
        if self.tls_listen.is_empty() && self.plain_listen.is_empty() {
            return Err(ConfigError::Invalid("no port to listen on"));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Invalid(
                "give both --cert-file and --key-file, or neither",
            ));
        }
        if self.acme.is_some() && self.cert_file.is_some() {
            return Err(ConfigError::Invalid("give --acme or --cert-file, not both"));
        }
        if self.acme.is_some() && self.tls_listen.is_empty() {
            return Err(ConfigError::Invalid(
                "--acme needs a TLS port (the CA validates on it)",
            ));
        }
        if self.front.is_some() {
            if self.front_name().is_none() {
                return Err(ConfigError::Invalid(
                    "--front needs the site as HOST:PORT, with a host name (what clients' hellos name)",
                ));
            }
            if self.tls_listen.is_empty() {
                return Err(ConfigError::Invalid("--front needs a TLS port to front on"));
            }
            if self.acme.is_some() || self.cert_file.is_some() {
                return Err(ConfigError::Invalid(
                    "--front shows the fronted site's certificate: drop --acme and --cert-file",
                ));
            }
        }
        if self.max_connections == 0 || self.replay_cache_entries == 0 {
            return Err(ConfigError::Invalid(
                "max_connections and replay_cache_entries must be at least 1",
            ));
        }
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid("workers must be at least 1"));
        }
        if self.idle_timeout_secs == 0 || self.handshake_timeout_secs == 0 {
            return Err(ConfigError::Invalid("timeouts must be at least one second"));
        }
        Ok(())
    }

    /// The fronted site's host name (from `front`), which clients name in
    /// their hellos.
    pub fn front_name(&self) -> Option<String> {
        let front = self.front.as_deref()?;
        let (host, port) = front.rsplit_once(':')?;
        let valid = port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host.parse::<std::net::IpAddr>().is_err()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        valid.then(|| host.to_ascii_lowercase())
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            "upstream = \"chat.example.org:7700\"\nmax_connections = 50\n",
        )
        .expect("write");
        let args = ProxyArgs {
            config: Some(path.clone()),
            max_connections: Some(70),
            no_plain: true,
            ..ProxyArgs::default()
        };
        let c = ProxyConfig::load(&args).expect("load");
        assert_eq!(c.upstream.as_deref(), Some("chat.example.org:7700"));
        assert_eq!(c.max_connections, 70);
        assert!(c.plain_listen.is_empty());
        assert_eq!(c.tls_listen.len(), 1);
        std::fs::write(&path, "upstream = \"x:1\"\nbogus = 1\n").expect("write");
        assert!(matches!(
            ProxyConfig::load(&args),
            Err(ConfigError::File(umbra_daemon::FileError::Parse { .. }))
        ));
        assert!(matches!(
            ProxyConfig::load(&ProxyArgs::default()),
            Err(ConfigError::Invalid(_))
        ));
    }
}
