//! Relay configuration: a TOML file, environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults < the TOML file (`--config`) < environment
//! variables (`UMBRA_RELAY_*`) < command-line flags. Clap resolves flags and environment
//! variables into [`RelayArgs`]; [`RelayConfig::load`] reads the file and lays every value
//! given in `RelayArgs` over it (the same scheme as `umbra-server`'s configuration).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;
use umbra_daemon::config::{Layered, set, set_opt};

/// The largest room: members' frame keys carry an 8-bit member index.
const UNIT_ROOM_SIZE_LIMIT: usize = 256;
/// The most connections a unit may be told to take (its permits are
/// counted in 32 bits, and each connection is a task and a socket's worth).
const UNIT_MAX_MEMBERS_LIMIT: usize = 100_000;

/// The resolved configuration (also the TOML file's format: every key is optional and
/// named like the field).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// UDP address clients reach the TURN server on.
    pub udp_listen: SocketAddr,
    /// TCP address for TURN over TCP (default: the UDP listen address).
    pub tcp_listen: Option<SocketAddr>,
    /// TLS address for TURN over TLS (default: the UDP listen IP, port 5349).
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS (default: a self-signed certificate made at start).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (needed with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// IP the relay sockets bind to (default: the UDP listen IP, which must then be a
    /// concrete address, not 0.0.0.0 or ::).
    pub relay_ip: Option<IpAddr>,
    /// IP advertised in XOR-RELAYED-ADDRESS when it differs from `relay_ip` (a 1:1 NAT).
    pub external_ip: Option<IpAddr>,
    /// Lowest relay port.
    pub relay_port_min: u16,
    /// Highest relay port.
    pub relay_port_max: u16,
    /// TURN realm.
    pub realm: String,
    /// Shared secret of the TURN REST credential scheme (coturn's `static-auth-secret`).
    pub auth_secret: Option<String>,
    /// File holding the shared secret (trailing whitespace ignored); wins over `auth_secret`.
    pub auth_secret_file: Option<PathBuf>,
    /// Most simultaneous allocations per credential (486 beyond).
    pub user_quota: usize,
    /// Most simultaneous allocations in total (508 beyond).
    pub total_quota: usize,
    /// Per-allocation bandwidth cap in bytes per second, each direction (0: no cap).
    pub bandwidth_bytes_per_sec: u64,
    /// Longest allocation lifetime granted, in seconds.
    pub max_lifetime_secs: u64,
    /// Worker threads (default: the number of cores).
    pub workers: Option<usize>,
    /// Prometheus metrics address (keep it on loopback).
    pub metrics_listen: SocketAddr,
    /// Peer networks (CIDR) allocations may send to besides this relay's own allocations.
    pub allow_peers: Vec<IpNet>,
    /// Most simultaneous TCP + TLS client connections.
    pub max_connections: usize,
    /// Run the forwarding unit for group calls beside the relay.
    pub unit: bool,
    /// UDP and TCP address of the forwarding unit (default: the UDP listen IP, port 3479;
    /// a free port when `udp_listen`'s port is 0).
    pub unit_listen: Option<SocketAddr>,
    /// File holding the unit's private key, created on first start (default: a fresh key
    /// at each start, which the messaging server's `unit` link must then follow).
    pub unit_key_file: Option<PathBuf>,
    /// Most connections in one group call.
    pub unit_room_size: usize,
    /// Most group call connections one credential may hold.
    pub unit_per_credential: usize,
    /// Most group call connections in total.
    pub unit_max_members: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 3478)),
            tcp_listen: None,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            relay_ip: None,
            external_ip: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            realm: "umbra".to_owned(),
            auth_secret: None,
            auth_secret_file: None,
            user_quota: 10,
            total_quota: 10_000,
            bandwidth_bytes_per_sec: 10_000_000,
            max_lifetime_secs: 3600,
            workers: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9701)),
            allow_peers: Vec::new(),
            max_connections: 10_000,
            unit: true,
            unit_listen: None,
            unit_key_file: None,
            unit_room_size: 64,
            unit_per_credential: 2,
            unit_max_members: 2_000,
        }
    }
}

/// Flags of `umbra relay` (each can also come from the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RelayArgs {
    /// TOML configuration file; flags and UMBRA_RELAY_* variables override its values.
    #[arg(long = "config", env = "UMBRA_RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address for TURN clients [default: 127.0.0.1:3478].
    #[arg(long, env = "UMBRA_RELAY_UDP_LISTEN", value_name = "ADDR")]
    pub udp_listen: Option<SocketAddr>,
    /// TCP address for TURN clients [default: the UDP listen address].
    #[arg(long, env = "UMBRA_RELAY_TCP_LISTEN", value_name = "ADDR")]
    pub tcp_listen: Option<SocketAddr>,
    /// TLS address for TURN clients [default: the UDP listen IP, port 5349].
    #[arg(long, env = "UMBRA_RELAY_TLS_LISTEN", value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS [default: a self-signed certificate made at start].
    #[arg(long, env = "UMBRA_RELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "UMBRA_RELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// IP relay sockets bind to [default: the UDP listen IP].
    #[arg(long, env = "UMBRA_RELAY_RELAY_IP", value_name = "IP")]
    pub relay_ip: Option<IpAddr>,
    /// IP advertised to clients as the relayed address, when behind a 1:1 NAT [default: relay IP].
    #[arg(long, env = "UMBRA_RELAY_EXTERNAL_IP", value_name = "IP")]
    pub external_ip: Option<IpAddr>,
    /// Lowest relay port [default: 49152].
    #[arg(long, env = "UMBRA_RELAY_RELAY_PORT_MIN", value_name = "PORT")]
    pub relay_port_min: Option<u16>,
    /// Highest relay port [default: 65535].
    #[arg(long, env = "UMBRA_RELAY_RELAY_PORT_MAX", value_name = "PORT")]
    pub relay_port_max: Option<u16>,
    /// TURN realm [default: umbra].
    #[arg(long, env = "UMBRA_RELAY_REALM", value_name = "REALM")]
    pub realm: Option<String>,
    /// Shared secret for TURN REST credentials (coturn's static-auth-secret).
    #[arg(
        long,
        env = "UMBRA_RELAY_AUTH_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,
    /// File holding the shared secret (preferred over --auth-secret: not in `ps`).
    #[arg(long, env = "UMBRA_RELAY_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// Most simultaneous allocations per credential [default: 10].
    #[arg(long, env = "UMBRA_RELAY_USER_QUOTA", value_name = "N")]
    pub user_quota: Option<usize>,
    /// Most simultaneous allocations in total [default: 10000].
    #[arg(long, env = "UMBRA_RELAY_TOTAL_QUOTA", value_name = "N")]
    pub total_quota: Option<usize>,
    /// Per-allocation bandwidth cap, bytes/s in each direction, 0 for none [default: 10000000].
    #[arg(
        long,
        env = "UMBRA_RELAY_BANDWIDTH_BYTES_PER_SEC",
        value_name = "BYTES"
    )]
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Longest allocation lifetime granted, in seconds [default: 3600].
    #[arg(long, env = "UMBRA_RELAY_MAX_LIFETIME_SECS", value_name = "SECS")]
    pub max_lifetime_secs: Option<u64>,
    /// Worker threads [default: the number of cores].
    #[arg(long, env = "UMBRA_RELAY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Prometheus metrics address; keep it on loopback [default: 127.0.0.1:9701].
    #[arg(long, env = "UMBRA_RELAY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Also allow peers in this network (CIDR; repeat, or comma-separate in the environment).
    /// By default allocations may only reach other allocations of this relay.
    #[arg(
        long = "allow-peer",
        env = "UMBRA_RELAY_ALLOW_PEERS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_peers: Vec<IpNet>,
    /// Most simultaneous TCP + TLS client connections [default: 10000].
    #[arg(long, env = "UMBRA_RELAY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Do not run the forwarding unit for group calls.
    #[arg(long, env = "UMBRA_RELAY_NO_UNIT")]
    pub no_unit: bool,
    /// UDP and TCP address of the group call forwarding unit [default: the UDP listen IP, port 3479].
    #[arg(long, env = "UMBRA_RELAY_UNIT_LISTEN", value_name = "ADDR")]
    pub unit_listen: Option<SocketAddr>,
    /// File with the unit's private key, created on first start [default: a new key each start].
    #[arg(long, env = "UMBRA_RELAY_UNIT_KEY_FILE", value_name = "FILE")]
    pub unit_key_file: Option<PathBuf>,
    /// Most connections in one group call [default: 64].
    #[arg(long, env = "UMBRA_RELAY_UNIT_ROOM_SIZE", value_name = "N")]
    pub unit_room_size: Option<usize>,
    /// Most group call connections per credential [default: 2].
    #[arg(long, env = "UMBRA_RELAY_UNIT_PER_CREDENTIAL", value_name = "N")]
    pub unit_per_credential: Option<usize>,
    /// Most group call connections in total [default: 2000].
    #[arg(long, env = "UMBRA_RELAY_UNIT_MAX_MEMBERS", value_name = "N")]
    pub unit_max_members: Option<usize>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be used.
    #[error(transparent)]
    File(#[from] umbra_daemon::FileError),
    /// The auth secret file could not be read.
    #[error("cannot read the auth secret file {path}: {source}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

impl Layered for RelayConfig {
    type Args = RelayArgs;

    fn file(args: &RelayArgs) -> Option<&Path> {
        args.config.as_deref()
    }

    fn overlay(mut self, args: &Self::Args) -> Self {
        set(&mut self.udp_listen, &args.udp_listen);
        set_opt(&mut self.tcp_listen, &args.tcp_listen);
        set_opt(&mut self.tls_listen, &args.tls_listen);
        set_opt(&mut self.tls_cert, &args.tls_cert);
        set_opt(&mut self.tls_key, &args.tls_key);
        set_opt(&mut self.relay_ip, &args.relay_ip);
        set_opt(&mut self.external_ip, &args.external_ip);
        set(&mut self.relay_port_min, &args.relay_port_min);
        set(&mut self.relay_port_max, &args.relay_port_max);
        set(&mut self.realm, &args.realm);
        set_opt(&mut self.auth_secret, &args.auth_secret);
        set_opt(&mut self.auth_secret_file, &args.auth_secret_file);
        set(&mut self.user_quota, &args.user_quota);
        set(&mut self.total_quota, &args.total_quota);
        set(
            &mut self.bandwidth_bytes_per_sec,
            &args.bandwidth_bytes_per_sec,
        );
        set(&mut self.max_lifetime_secs, &args.max_lifetime_secs);
        set_opt(&mut self.workers, &args.workers);
        set(&mut self.metrics_listen, &args.metrics_listen);
        if !args.allow_peers.is_empty() {
            self.allow_peers = args.allow_peers.clone();
        }
        set(&mut self.max_connections, &args.max_connections);
        if args.no_unit {
            self.unit = false;
        }
        set_opt(&mut self.unit_listen, &args.unit_listen);
        set_opt(&mut self.unit_key_file, &args.unit_key_file);
        set(&mut self.unit_room_size, &args.unit_room_size);
        set(&mut self.unit_per_credential, &args.unit_per_credential);
        set(&mut self.unit_max_members, &args.unit_max_members);
        self
    }
}

impl RelayConfig {
    /// Defaults < file named by `args.config` < environment < flags.
    pub fn load(args: &RelayArgs) -> Result<Self, ConfigError> {
        let merged = Self::merge(args)?;
        merged.validate()?;
        Ok(merged)
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.relay_port_min > self.relay_port_max || self.relay_port_min < 1024 {
            return Err(ConfigError::Invalid(
                "relay ports: need 1024 <= relay_port_min <= relay_port_max",
            ));
        }
        if self.relay_ip().is_unspecified() {
            return Err(ConfigError::Invalid(
                "relay_ip is required when udp_listen is a wildcard address",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid("tls_cert and tls_key go together"));
        }
        if self.user_quota == 0 || self.total_quota == 0 || self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "user_quota, total_quota and max_connections must be at least 1",
            ));
        }
        if self.max_lifetime_secs == 0 || self.max_lifetime_secs > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid("max_lifetime_secs out of range"));
        }
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid("workers must be at least 1"));
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err(ConfigError::Invalid("realm must be 1 to 127 bytes"));
        }
        if self.unit
            && (self.unit_room_size < 2
                || self.unit_per_credential == 0
                || self.unit_max_members < self.unit_room_size
                || self.unit_max_members > UNIT_MAX_MEMBERS_LIMIT
                || self.unit_room_size > UNIT_ROOM_SIZE_LIMIT)
        {
            return Err(ConfigError::Invalid(
                "unit limits: need 2 <= unit_room_size <= 256, unit_per_credential >= 1 and \
                 unit_room_size <= unit_max_members <= 100000",
            ));
        }
        if self.auth_secret.is_none() && self.auth_secret_file.is_none() {
            return Err(ConfigError::Invalid(
                "an auth secret is required (auth_secret or auth_secret_file)",
            ));
        }
        Ok(())
    }

    /// The shared REST secret, read from `auth_secret_file` if set.
    pub fn secret(&self) -> Result<Vec<u8>, ConfigError> {
        let secret = match (&self.auth_secret_file, &self.auth_secret) {
            (Some(path), _) => {
                let bytes = umbra_daemon::config::read_secret(path).map_err(|source| {
                    ConfigError::Secret {
                        path: path.clone(),
                        source,
                    }
                })?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        };
        if secret.is_empty() {
            return Err(ConfigError::Invalid("the auth secret is empty"));
        }
        Ok(secret.into_bytes())
    }

    /// The TCP listen address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_listen.unwrap_or(self.udp_listen)
    }

    /// Where the forwarding unit binds (UDP and TCP): by default the UDP
    /// listen IP, port 3479, or any free port when the UDP port is 0.
    pub fn unit_addr(&self) -> SocketAddr {
        let port = if self.udp_listen.port() == 0 { 0 } else { 3479 };
        self.unit_listen
            .unwrap_or_else(|| SocketAddr::new(self.udp_listen.ip(), port))
    }

    /// The TLS listen address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_listen
            .unwrap_or_else(|| SocketAddr::new(self.udp_listen.ip(), 5349))
    }

    /// The IP relay sockets bind to.
    pub fn relay_ip(&self) -> IpAddr {
        self.relay_ip.unwrap_or(self.udp_listen.ip())
    }

    /// The IP advertised as the relayed address.
    pub fn advertised_ip(&self) -> IpAddr {
        self.external_ip.unwrap_or_else(|| self.relay_ip())
    }

    /// The longest allocation lifetime.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_secs)
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "udp_listen = \"127.0.0.2:4000\"\nuser_quota = 3\nauth_secret = \"s\"\nallow_peers = [\"10.0.0.0/8\"]\n",
        )
        .expect("write");
        let args = RelayArgs {
            config: Some(path.clone()),
            user_quota: Some(5),
            ..RelayArgs::default()
        };
        let cfg = RelayConfig::load(&args).expect("load");
        assert_eq!(cfg.udp_listen.port(), 4000);
        assert_eq!(cfg.tcp_addr().port(), 4000);
        assert_eq!(cfg.tls_addr(), "127.0.0.2:5349".parse().expect("addr"));
        assert_eq!(cfg.user_quota, 5);
        assert_eq!(cfg.relay_port_min, 49152);
        assert_eq!(cfg.allow_peers.len(), 1);
        assert_eq!(cfg.secret().expect("secret"), b"s");

        std::fs::write(&path, "udp_listen_on = \"x\"\n").expect("write");
        assert!(matches!(
            RelayConfig::load(&args),
            Err(ConfigError::File(umbra_daemon::FileError::Parse { .. }))
        ));
    }

    #[test]
    fn clap_reads_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            relay: RelayArgs,
        }
        let cli = Cli::parse_from([
            "umbra",
            "--udp-listen",
            "127.0.0.1:9",
            "--auth-secret",
            "x",
            "--allow-peer",
            "192.0.2.0/24",
            "--allow-peer",
            "2001:db8::/32",
        ]);
        let cfg = RelayConfig::load(&cli.relay).expect("load");
        assert_eq!(cfg.udp_listen.port(), 9);
        assert_eq!(cfg.allow_peers.len(), 2);
    }

    #[test]
    fn refuses_bad_values() {
        let ok = RelayConfig {
            auth_secret: Some("s".into()),
            ..RelayConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert!(RelayConfig::default().validate().is_err());
        let wildcard = RelayConfig {
            udp_listen: "0.0.0.0:3478".parse().expect("addr"),
            ..ok.clone()
        };
        assert!(wildcard.validate().is_err());
        let ports = RelayConfig {
            relay_port_min: 60000,
            relay_port_max: 50000,
            ..ok
        };
        assert!(ports.validate().is_err());
    }
}
