//! Server configuration: a TOML file, environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults < the TOML file (`--config`)
//! < environment variables (`UMBRA_*`) < command-line flags. Clap resolves
//! flags and environment variables into [`ServerArgs`]; [`ServerConfig::load`]
//! reads the file and lays every value given in `ServerArgs` over it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use umbra_daemon::config::{Layered, set, set_opt};

/// The resolved configuration (also the TOML file's format: every key is
/// optional and named like the field).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the messaging service listens on.
    pub listen: SocketAddr,
    /// Host name put in invite links (default: the listen address's IP).
    pub public_host: Option<String>,
    /// Directory holding the database and the server key.
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host/db`) to keep the state in
    /// instead of the SQLite file in `data_dir` (for several nodes).
    pub database: Option<crate::database::DatabaseUrl>,
    /// NATS (`nats://host:4222`) carrying wake-ups between the nodes that
    /// share `database`; unset for a node alone.
    pub nats: Option<String>,
    /// File of the key every node of a cluster shares, from which the bus's
    /// subjects are derived (so it never carries a mailbox id).
    pub cluster_key_file: Option<PathBuf>,
    /// Seconds between sweeps of a clustered node's connected mailboxes (the
    /// database asked which hold mail not delivered: what carries the mail
    /// when wake-ups are lost).
    pub sweep_secs: u64,
    /// Address of the Prometheus metrics endpoint.
    pub metrics_listen: SocketAddr,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Largest sealed envelope accepted, in bytes.
    pub max_envelope_bytes: u32,
    /// Largest frame either side may send, in bytes.
    pub max_frame_bytes: u32,
    /// Seconds a client has to complete the Noise handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection that has not logged in may stay silent.
    pub idle_timeout_secs: u64,
    /// Envelopes without a valid delivery token accepted per mailbox per hour.
    pub introductions_per_hour: u32,
    /// Most envelopes stored per mailbox.
    pub mailbox_cap: u64,
    /// Most unclaimed key packages per device.
    pub key_package_cap: u32,
    /// Days after which an undelivered envelope is deleted.
    pub envelope_expiry_days: u32,
    /// Largest attachment blob accepted (sealed and padded), in bytes.
    pub max_blob_bytes: u64,
    /// Days after which an attachment blob is deleted.
    pub blob_expiry_days: u32,
    /// Attachment bytes this node accepts per hour from everyone together
    /// (anonymous uploads: what bounds the disk they can take).
    pub blob_bytes_per_hour: u64,
    /// File holding the secret shared with the call relay (TURN REST scheme);
    /// without it the server hands out no relay credentials.
    pub relay_secret_file: Option<PathBuf>,
    /// TURN URLs of the call relay, given to clients with their credentials.
    pub relay_urls: Vec<String>,
    /// Lifetime of relay credentials, in seconds.
    pub relay_credential_ttl_secs: u64,
    /// The forwarding unit for group calls (`umbra://unit?host=...&port=...&key=...`,
    /// as `umbra relay` prints it), given to clients with relay credentials.
    pub unit: Option<String>,
}

/// The default largest blob: a 2 GiB file, sealed (a 16-byte tag per 64 KiB
/// chunk; 2 GiB needs no padding).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = (2 << 30) + (2 << 30) / (64 * 1024) * 16;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            public_host: None,
            data_dir: PathBuf::from("./umbra-data"),
            database: None,
            nats: None,
            cluster_key_file: None,
            sweep_secs: 5,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9700)),
            max_connections: 20_000,
            max_envelope_bytes: 128 * 1024,
            max_frame_bytes: 256 * 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 60,
            introductions_per_hour: 50,
            mailbox_cap: 10_000,
            key_package_cap: 200,
            envelope_expiry_days: 30,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            blob_expiry_days: 30,
            blob_bytes_per_hour: 64 << 30,
            relay_secret_file: None,
            relay_urls: Vec::new(),
            relay_credential_ttl_secs: 86_400,
            unit: None,
        }
    }
}

/// Flags of `umbra server` (each can also come from the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file; flags and UMBRA_* variables override its values.
    #[arg(long, env = "UMBRA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for clients [default: 127.0.0.1:7700].
    #[arg(long, env = "UMBRA_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Host name that invite links name [default: the listen address's IP].
    #[arg(long, env = "UMBRA_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
    /// Directory for the database and the server key [default: ./umbra-data].
    #[arg(long, env = "UMBRA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the state in this PostgreSQL database (postgres://user@host/db)
    /// instead of the SQLite file in the data directory; the server key and
    /// signing key stay in the data directory [default: SQLite].
    #[arg(long, env = "UMBRA_DATABASE", value_name = "URL")]
    pub database: Option<crate::database::DatabaseUrl>,
    /// NATS URL (nats://host:4222) for wake-ups between nodes sharing the
    /// database; needs --database and --cluster-key-file.
    #[arg(long, env = "UMBRA_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// File with the key every node of the cluster shares (32 random bytes,
    /// hex): the bus's subjects are derived from mailbox ids with it.
    #[arg(long, env = "UMBRA_CLUSTER_KEY_FILE", value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Seconds between sweeps of a clustered node's connected mailboxes [default: 5].
    #[arg(long, env = "UMBRA_SWEEP_SECS", value_name = "SECS")]
    pub sweep_secs: Option<u64>,
    /// Prometheus metrics address; keep it on loopback unless you mean it [default: 127.0.0.1:9700].
    #[arg(long, env = "UMBRA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Most simultaneous client connections [default: 20000].
    #[arg(long, env = "UMBRA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest sealed envelope accepted, in bytes [default: 131072]. Less
    /// keeps larger groups from forming: a post-quantum conversation's
    /// Welcome is about 6 KB for two people and up to 128 KiB at its 40
    /// devices.
    #[arg(long, env = "UMBRA_MAX_ENVELOPE_BYTES", value_name = "BYTES")]
    pub max_envelope_bytes: Option<u32>,
    /// Largest protocol frame, in bytes [default: 262144].
    #[arg(long, env = "UMBRA_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Seconds a client has to finish the handshake [default: 10].
    #[arg(long, env = "UMBRA_HANDSHAKE_TIMEOUT_SECS", value_name = "SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds a connection that has not logged in may stay silent [default: 60].
    #[arg(long, env = "UMBRA_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Envelopes without a valid delivery token accepted per mailbox per hour [default: 50].
    #[arg(long, env = "UMBRA_INTRODUCTIONS_PER_HOUR", value_name = "N")]
    pub introductions_per_hour: Option<u32>,
    /// Most envelopes stored per mailbox [default: 10000].
    #[arg(long, env = "UMBRA_MAILBOX_CAP", value_name = "N")]
    pub mailbox_cap: Option<u64>,
    /// Most unclaimed key packages per device [default: 200].
    #[arg(long, env = "UMBRA_KEY_PACKAGE_CAP", value_name = "N")]
    pub key_package_cap: Option<u32>,
    /// Days after which undelivered envelopes are deleted [default: 30].
    #[arg(long, env = "UMBRA_ENVELOPE_EXPIRY_DAYS", value_name = "DAYS")]
    pub envelope_expiry_days: Option<u32>,
    /// Largest attachment accepted, in bytes once sealed and padded
    /// [default: 2148007936, a 2 GiB file].
    #[arg(long, env = "UMBRA_MAX_BLOB_BYTES", value_name = "BYTES")]
    pub max_blob_bytes: Option<u64>,
    /// Days after which attachments are deleted [default: 30].
    #[arg(long, env = "UMBRA_BLOB_EXPIRY_DAYS", value_name = "DAYS")]
    pub blob_expiry_days: Option<u32>,
    /// Attachment bytes this node takes per hour, from everyone together
    /// [default: 68719476736, 64 GiB]. Uploads are anonymous: this bounds
    /// the disk they can fill.
    #[arg(long, env = "UMBRA_BLOB_BYTES_PER_HOUR", value_name = "BYTES")]
    pub blob_bytes_per_hour: Option<u64>,
    /// File with the secret shared with the call relay; enables handing out
    /// relay credentials to logged-in clients.
    #[arg(long, env = "UMBRA_RELAY_SECRET_FILE", value_name = "FILE")]
    pub relay_secret_file: Option<PathBuf>,
    /// TURN URL of the call relay given to clients (repeat, or comma-separate
    /// in the environment), e.g. turn:relay.example.org:3478?transport=udp.
    #[arg(
        long = "relay-url",
        env = "UMBRA_RELAY_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub relay_urls: Vec<String>,
    /// Lifetime of relay credentials in seconds [default: 86400].
    #[arg(long, env = "UMBRA_RELAY_CREDENTIAL_TTL_SECS", value_name = "SECS")]
    pub relay_credential_ttl_secs: Option<u64>,
    /// The forwarding unit for group calls, as `umbra relay` prints it
    /// (umbra://unit?host=...&port=...&key=...); it must share the relay secret.
    #[arg(long, env = "UMBRA_UNIT", value_name = "LINK")]
    pub unit: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be used.
    #[error(transparent)]
    File(#[from] umbra_daemon::FileError),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// The forwarding unit's link does not parse.
    #[error("invalid configuration: unit: {0}")]
    Unit(umbra_wire::invite::InviteError),
}

impl Layered for ServerConfig {
    type Args = ServerArgs;

    fn file(args: &ServerArgs) -> Option<&Path> {
        args.config.as_deref()
    }

    fn overlay(mut self, args: &Self::Args) -> Self {
        set(&mut self.listen, &args.listen);
        set_opt(&mut self.public_host, &args.public_host);
        set(&mut self.data_dir, &args.data_dir);
        set_opt(&mut self.database, &args.database);
        set_opt(&mut self.nats, &args.nats);
        set_opt(&mut self.cluster_key_file, &args.cluster_key_file);
        set(&mut self.sweep_secs, &args.sweep_secs);
        set(&mut self.metrics_listen, &args.metrics_listen);
        set(&mut self.max_connections, &args.max_connections);
        set(&mut self.max_envelope_bytes, &args.max_envelope_bytes);
        set(&mut self.max_frame_bytes, &args.max_frame_bytes);
        set(
            &mut self.handshake_timeout_secs,
            &args.handshake_timeout_secs,
        );
        set(&mut self.idle_timeout_secs, &args.idle_timeout_secs);
        set(
            &mut self.introductions_per_hour,
            &args.introductions_per_hour,
        );
        set(&mut self.mailbox_cap, &args.mailbox_cap);
        set(&mut self.key_package_cap, &args.key_package_cap);
        set(&mut self.envelope_expiry_days, &args.envelope_expiry_days);
        set(&mut self.max_blob_bytes, &args.max_blob_bytes);
        set(&mut self.blob_expiry_days, &args.blob_expiry_days);
        set(&mut self.blob_bytes_per_hour, &args.blob_bytes_per_hour);
        set_opt(&mut self.relay_secret_file, &args.relay_secret_file);
        if !args.relay_urls.is_empty() {
            self.relay_urls = args.relay_urls.clone();
        }
        set(
            &mut self.relay_credential_ttl_secs,
            &args.relay_credential_ttl_secs,
        );
        set_opt(&mut self.unit, &args.unit);
        self
    }
}

impl ServerConfig {
    /// Defaults < file named by `args.config` < environment < flags.
    pub fn load(args: &ServerArgs) -> Result<Self, ConfigError> {
        let merged = Self::merge(args)?;
        merged.validate()?;
        Ok(merged)
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame_bytes as usize > umbra_wire::MAX_FRAME_BYTES {
            return Err(ConfigError::Invalid(
                "max_frame_bytes exceeds the protocol limit of 1 MiB",
            ));
        }
        if u64::from(self.max_envelope_bytes) + 1024 > u64::from(self.max_frame_bytes) {
            return Err(ConfigError::Invalid(
                "max_frame_bytes must exceed max_envelope_bytes by at least 1024",
            ));
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize {
            return Err(ConfigError::Invalid("max_connections must be at least 1"));
        }
        if self.handshake_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid("timeouts must be at least one second"));
        }
        if self.relay_credential_ttl_secs == 0
            || self.relay_credential_ttl_secs > u64::from(u32::MAX)
        {
            return Err(ConfigError::Invalid(
                "relay_credential_ttl_secs must be between 1 and 2^32-1",
            ));
        }
        if let Some(unit) = &self.unit {
            umbra_wire::invite::UnitLink::parse(unit).map_err(ConfigError::Unit)?;
            if self.relay_secret_file.is_none() {
                return Err(ConfigError::Invalid(
                    "a forwarding unit (unit) needs the relay secret (relay_secret_file) it shares",
                ));
            }
        }
        if let Some(u) = &self.database
            && u.check().is_err()
        {
            return Err(ConfigError::Invalid(
                "database is a postgres://user@host[:port]/dbname URL",
            ));
        }
        if self.nats.is_some() && (self.database.is_none() || self.cluster_key_file.is_none()) {
            return Err(ConfigError::Invalid(
                "nats is for nodes sharing a PostgreSQL database: give database and cluster_key_file too",
            ));
        }
        if self.sweep_secs == 0 {
            return Err(ConfigError::Invalid("sweep_secs must be at least 1"));
        }
        if self.mailbox_cap == 0 || self.envelope_expiry_days == 0 || self.blob_expiry_days == 0 {
            return Err(ConfigError::Invalid(
                "mailbox_cap, envelope_expiry_days and blob_expiry_days must be at least 1",
            ));
        }
        Ok(())
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The idle timeout for connections that have not logged in.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The host invite links name.
    pub fn invite_host(&self) -> String {
        match &self.public_host {
            Some(h) => h.clone(),
            None => match self.listen.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:1234\"\nmailbox_cap = 7\n").expect("write");
        let args = ServerArgs {
            config: Some(path.clone()),
            mailbox_cap: Some(9),
            ..ServerArgs::default()
        };
        let cfg = ServerConfig::load(&args).expect("load");
        assert_eq!(cfg.listen.port(), 1234);
        assert_eq!(cfg.mailbox_cap, 9);
        assert_eq!(cfg.envelope_expiry_days, 30);
        assert_eq!(cfg.invite_host(), "0.0.0.0");

        std::fs::write(&path, "listen_on = \"x\"\n").expect("write");
        assert!(matches!(
            ServerConfig::load(&args),
            Err(ConfigError::File(umbra_daemon::FileError::Parse { .. }))
        ));
    }

    #[test]
    fn clap_reads_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            server: ServerArgs,
        }
        let cli = Cli::parse_from(["umbra", "--listen", "127.0.0.1:9", "--mailbox-cap", "3"]);
        let cfg = ServerConfig::load(&cli.server).expect("load");
        assert_eq!(cfg.listen.port(), 9);
        assert_eq!(cfg.mailbox_cap, 3);
    }

    #[test]
    fn frame_must_hold_an_envelope() {
        let cfg = ServerConfig {
            max_frame_bytes: 1000,
            ..ServerConfig::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn a_unit_must_parse_and_share_the_relay_secret() {
        let link = format!(
            "umbra://unit?host=relay.example.org&port=3479&key={}",
            umbra_wire::invite::encode_key(&[5; 32])
        );
        let without_secret = ServerConfig {
            unit: Some(link.clone()),
            ..ServerConfig::default()
        };
        let e = without_secret.validate().expect_err("no secret");
        assert!(e.to_string().contains("relay secret"), "{e}");
        let garbled = ServerConfig {
            unit: Some("umbra://join?host=a&port=1".into()),
            relay_secret_file: Some("/dev/null".into()),
            ..ServerConfig::default()
        };
        let e = garbled.validate().expect_err("not a unit link");
        assert!(e.to_string().contains("forwarding unit link"), "{e}");
        let good = ServerConfig {
            unit: Some(link),
            relay_secret_file: Some("/dev/null".into()),
            ..ServerConfig::default()
        };
        assert!(good.validate().is_ok());
    }
}
