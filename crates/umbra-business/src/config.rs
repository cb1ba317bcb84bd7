//! The business host's configuration: a TOML file, environment variables and
//! flags (defaults < file < environment < flags, as every Umbra daemon).
//!
//! One business can be served from flags alone (`--business DIR
//! --webhook-url URL`); several need the file, one `[[business]]` table each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use umbra_daemon::config::{Layered, set, set_opt};

/// One business this host runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessConfig {
    /// The business account's profile directory (made with `umbra register`
    /// and `umbra business register`): its device, keys and chats.
    pub profile: PathBuf,
    /// Where its webhooks go (http:// or https://); none: no webhooks.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The file holding the secret its webhooks are signed with (created,
    /// random, if missing) [default: DATA_DIR/USERNAME.webhook-secret].
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Messages a second it may send through the API [default: the host's].
    #[serde(default)]
    pub messages_per_second: Option<u32>,
    /// The file holding the passphrase its profile is locked with [default:
    /// UMBRA_PASSPHRASE; none for a profile without one].
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
}

/// The resolved configuration (also the TOML file's format).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Address of the HTTP API for the businesses' own systems.
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint.
    pub metrics_listen: SocketAddr,
    /// Directory of the host's own state: API tokens, the host key,
    /// webhook secrets.
    pub data_dir: PathBuf,
    /// Set when this host runs other businesses' endpoints (the hosted
    /// case): its name, shown to their customers with "can read what you
    /// send". Unset: each business runs its own (self-hosted).
    pub host_name: Option<String>,
    /// Messages a second each business may send through the API, unless
    /// its own setting says otherwise.
    pub messages_per_second: u32,
    /// Other API requests a second each business may make.
    pub requests_per_second: u32,
    /// Most messages encrypted and committed together.
    pub max_batch: usize,
    /// Seconds before the first retry of a webhook that failed; each next
    /// one waits twice as long, up to an hour.
    pub webhook_retry_secs: u64,
    /// Attempts at one webhook before it is given up (and counted).
    pub webhook_attempts: u32,
    /// Seconds a webhook receiver has to answer.
    pub webhook_timeout_secs: u64,
    /// The businesses.
    pub business: Vec<BusinessConfig>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9480)),
            data_dir: PathBuf::from("./umbra-business"),
            host_name: None,
            messages_per_second: 1_000,
            requests_per_second: 200,
            max_batch: 256,
            webhook_retry_secs: 2,
            webhook_attempts: 20,
            webhook_timeout_secs: 10,
            business: Vec::new(),
        }
    }
}

/// Flags of `umbra business serve` (each can also come from the
/// environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and UMBRA_BUSINESS_* variables
    /// override its values.
    #[arg(long, env = "UMBRA_BUSINESS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8480].
    #[arg(long, env = "UMBRA_BUSINESS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics address; keep it on loopback unless you mean it
    /// [default: 127.0.0.1:9480].
    #[arg(long, env = "UMBRA_BUSINESS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the host's own state (API tokens, host key, webhook
    /// secrets) [default: ./umbra-business].
    #[arg(long, env = "UMBRA_BUSINESS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run other businesses' endpoints as this host (the hosted case): their
    /// customers are told NAME can read what they send.
    #[arg(long, env = "UMBRA_BUSINESS_HOST_NAME", value_name = "NAME")]
    pub host_name: Option<String>,
    /// A business to run: its profile directory (repeat for several; the
    /// file's [[business]] tables can say more about each).
    #[arg(long = "business", value_name = "DIR")]
    pub business: Vec<PathBuf>,
    /// Where the webhooks of the `--business` given go.
    #[arg(long, env = "UMBRA_BUSINESS_WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,
    /// The file holding the passphrase of the `--business` profiles given
    /// [default: UMBRA_PASSPHRASE; none for profiles without one].
    #[arg(long, env = "UMBRA_BUSINESS_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Messages a second each business may send [default: 1000].
    #[arg(long, env = "UMBRA_BUSINESS_MESSAGES_PER_SECOND", value_name = "N")]
    pub messages_per_second: Option<u32>,
    /// Seconds before a failed webhook's first retry [default: 2].
    #[arg(long, env = "UMBRA_BUSINESS_WEBHOOK_RETRY_SECS", value_name = "SECS")]
    pub webhook_retry_secs: Option<u64>,
}

/// Why the configuration could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be used.
    #[error(transparent)]
    File(#[from] umbra_daemon::FileError),
    /// A value is out of range or missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Layered for HostConfig {
    type Args = ServeArgs;

    fn file(args: &ServeArgs) -> Option<&Path> {
        args.config.as_deref()
    }

    fn overlay(mut self, args: &ServeArgs) -> Self {
        set(&mut self.listen, &args.listen);
        set(&mut self.metrics_listen, &args.metrics_listen);
        set(&mut self.data_dir, &args.data_dir);
        set_opt(&mut self.host_name, &args.host_name);
        set(&mut self.messages_per_second, &args.messages_per_second);
        set(&mut self.webhook_retry_secs, &args.webhook_retry_secs);
        for dir in &args.business {
            self.business.push(BusinessConfig {
                profile: dir.clone(),
                webhook_url: args.webhook_url.clone(),
                webhook_secret_file: None,
                messages_per_second: None,
                passphrase_file: args.passphrase_file.clone(),
            });
        }
        self
    }
}

impl HostConfig {
    /// Defaults < file < environment < flags, checked.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let merged = Self::merge(args)?;
        merged.validate()?;
        Ok(merged)
    }

    /// Checks ranges and what must be there.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.business.is_empty() {
            return bad(
                "no business to run: give --business PROFILE_DIR, or [[business]] tables in --config",
            );
        }
        if let Some(h) = &self.host_name
            && !umbra_wire::hosting::valid_host_name(h)
        {
            return bad("host_name has 1 to 64 characters and no control characters");
        }
        if self.messages_per_second == 0 || self.requests_per_second == 0 {
            return bad("messages_per_second and requests_per_second must be at least 1");
        }
        if !(1..=4096).contains(&self.max_batch) {
            return bad("max_batch is between 1 and 4096");
        }
        if self.webhook_retry_secs == 0 || self.webhook_attempts == 0 {
            return bad("webhook_retry_secs and webhook_attempts must be at least 1");
        }
        if self.webhook_timeout_secs == 0 {
            return bad("webhook_timeout_secs must be at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.business {
            if !seen.insert(&b.profile) {
                return Err(ConfigError::Invalid(format!(
                    "the business profile {} is listed twice",
                    b.profile.display()
                )));
            }
            if let Some(url) = &b.webhook_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::Invalid(format!(
                    "webhook_url `{url}` is not an http:// or https:// URL"
                )));
            }
            if b.messages_per_second == Some(0) {
                return bad("a business's messages_per_second must be at least 1");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_and_what_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("host.toml");
        std::fs::write(
            &file,
            "host_name = \"HostCo\"\nmessages_per_second = 80\n\
             [[business]]\nprofile = \"/p/acme\"\nwebhook_url = \"https://acme.example/hook\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file.clone()),
            messages_per_second: Some(1000),
            business: vec![PathBuf::from("/p/bank")],
            ..ServeArgs::default()
        };
        let c = HostConfig::load(&args).expect("load");
        assert_eq!(c.host_name.as_deref(), Some("HostCo"));
        assert_eq!(c.messages_per_second, 1000);
        assert_eq!(c.business.len(), 2);
        assert_eq!(
            c.business[0].webhook_url.as_deref(),
            Some("https://acme.example/hook")
        );

        std::fs::write(&file, "[[business]]\nprofile = \"/p\"\nsurprise = 1\n").expect("write");
        let err = HostConfig::load(&args).expect_err("unknown key");
        assert!(err.to_string().contains("surprise"), "{err}");
        let none = HostConfig::load(&ServeArgs::default()).expect_err("no business");
        assert!(none.to_string().contains("--business"), "{none}");
        let twice = ServeArgs {
            business: vec![PathBuf::from("/p"), PathBuf::from("/p")],
            ..ServeArgs::default()
        };
        assert!(HostConfig::load(&twice).is_err());
        let ftp = ServeArgs {
            business: vec![PathBuf::from("/p")],
            webhook_url: Some("ftp://x".into()),
            ..ServeArgs::default()
        };
        assert!(HostConfig::load(&ftp).is_err());
    }
}
