//! Running the host: each business's device brought up (its hosting
//! statement made this host's, its journal on if it has webhooks), the API
//! and the metrics endpoint served, and everything stopped in order on
//! shutdown (the API first, then the devices, which send what they hold).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{Notify, mpsc, watch};
use umbra_client::Client;
use umbra_client::journal::Journal;

use crate::api::{AppState, Served};
use crate::config::{BusinessConfig, HostConfig};
use crate::device::{self, Device, HostKey};
use crate::metrics::Metrics;
use crate::ratelimit::Bucket;
use crate::tokens::Tokens;
use crate::webhooks::{self, Hook};

/// The file of the host's own key (its countersignature on hosting
/// statements), in the data directory.
pub const HOST_KEY_FILE: &str = "host.key";

/// A bound host, ready to run.
pub struct Host {
    api: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One line per business, for the operator.
    pub summary: Vec<String>,
}

/// The secret a business's webhooks are signed with: the file's contents,
/// made (64 random hex digits, mode 0600) if it is not there.
pub fn webhook_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the webhook secret {}", path.display()))?;
        writeln!(f, "{}", hex::encode(rand::random::<[u8; 32]>()))?;
    }
    umbra_daemon::config::read_secret(path)
        .with_context(|| format!("cannot read the webhook secret {}", path.display()))
}

/// Where a business's webhook secret is kept.
pub fn secret_path(data_dir: &Path, b: &BusinessConfig, username: &str) -> PathBuf {
    match &b.webhook_secret_file {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => data_dir.join(p),
        None => data_dir.join(format!("{username}.webhook-secret")),
    }
}

/// The host key, made on first start.
pub fn host_key(data_dir: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let (seed, created) =
        umbra_daemon::keyfile::load_or_create(&data_dir.join(HOST_KEY_FILE), rand::random)?;
    if created {
        tracing::info!("created the host key");
    }
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Runs the future `make` builds on a thread of its own, with a
/// single-threaded runtime: a device's client holds its SQLite connection
/// across awaits, so its futures stay on one thread. The handle resolves
/// when the future has.
fn on_own_thread<F, Fut>(name: &str, make: F) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a device's runtime")?;
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            runtime.block_on(make());
            let _ = done.send(());
        })
        .context("cannot start a device's thread")?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

/// The passphrase of a business's profile: from its `passphrase_file`, else
/// from UMBRA_PASSPHRASE, else none (a profile without one).
fn passphrase(b: &BusinessConfig) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if let Some(file) = &b.passphrase_file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?,
        );
        return Ok(Some(zeroize::Zeroizing::new(
            text.trim_end_matches(['\r', '\n']).to_string(),
        )));
    }
    Ok(std::env::var("UMBRA_PASSPHRASE")
        .ok()
        .map(zeroize::Zeroizing::new))
}

/// Opens a business's profile, checked to be a business account.
pub async fn open_business(profile: &Path, passphrase: Option<&str>) -> anyhow::Result<Client> {
    let mut client = Client::open(profile, passphrase)
        .with_context(|| format!("cannot open the business profile {}", profile.display()))?;
    if client.own_card().is_none() {
        client.refresh_business_card().await.with_context(|| {
            format!(
                "cannot fetch the business card of {} from its server",
                client.username()
            )
        })?;
    }
    if client.own_card().is_none() {
        bail!(
            "`{}` (profile {}) is not a business account: run `umbra --profile {} business register --name NAME` first",
            client.username(),
            profile.display(),
            profile.display()
        );
    }
    Ok(client)
}

impl Host {
    /// Brings every business up and binds the API and metrics addresses.
    pub async fn bind(config: HostConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let tokens = Tokens::open(&config.data_dir)?;
        let host = match &config.host_name {
            Some(name) => Some(HostKey {
                name: name.clone(),
                key: host_key(&config.data_dir)?,
            }),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut businesses = HashMap::new();
        let mut summary = Vec::new();
        for b in &config.business {
            let passphrase = passphrase(b)?;
            let mut client = open_business(&b.profile, passphrase.as_deref().map(|p| &**p)).await?;
            let key = client.key().cloned();
            let username = client.username().to_string();
            if businesses.contains_key(&username) {
                bail!("two profiles here are the account `{username}`");
            }
            device::claim_hosting(&mut client, host.as_ref())
                .await
                .with_context(|| {
                    format!("cannot tell the customers of `{username}` who runs its chats now")
                })?;
            let card = client.own_card().context("the business card went away")?;
            client.keep_journal(b.webhook_url.is_some())?;
            let (send_tx, send_rx) = mpsc::channel(4096);
            let (read_tx, read_rx) = mpsc::channel(256);
            let kick = Arc::new(Notify::new());
            let journal_changed = Arc::new(Notify::new());
            {
                let (kick, journal, metrics, stopped) = (
                    kick.clone(),
                    journal_changed.clone(),
                    metrics.clone(),
                    stopped.clone(),
                );
                let max_batch = config.max_batch;
                tasks.push(on_own_thread(&format!("{username}-send"), move || {
                    device::sender(client, send_rx, kick, journal, max_batch, metrics, stopped)
                })?);
            }
            {
                let receiving = Client::open_with_key(&b.profile, key.as_ref())?;
                let (kick, journal, metrics, stopped) = (
                    kick.clone(),
                    journal_changed.clone(),
                    metrics.clone(),
                    stopped.clone(),
                );
                tasks.push(on_own_thread(&format!("{username}-recv"), move || {
                    device::receiver(receiving, kick, journal, metrics, stopped)
                })?);
            }
            tasks.push(tokio::spawn(device::reader(
                Client::open_with_key(&b.profile, key.as_ref())?,
                read_rx,
                kick,
            )));
            let hooks = match &b.webhook_url {
                Some(url) => {
                    let secret_file = secret_path(&config.data_dir, b, &username);
                    let secret = webhook_secret(&secret_file)?;
                    tasks.push(tokio::spawn(webhooks::run(
                        Journal::open(&b.profile, key.as_ref())?,
                        Hook {
                            business: username.clone(),
                            url: url.clone(),
                            secret,
                            retry: Duration::from_secs(config.webhook_retry_secs),
                            attempts: config.webhook_attempts,
                            timeout: Duration::from_secs(config.webhook_timeout_secs),
                        },
                        journal_changed,
                        metrics.clone(),
                        stopped.clone(),
                    )));
                    format!(
                        "webhooks to {url}, signed with the secret in {}",
                        secret_file.display()
                    )
                }
                None => "no webhooks".to_string(),
            };
            let rate = b.messages_per_second.unwrap_or(config.messages_per_second);
            let now = Instant::now();
            let run_by = match &config.host_name {
                Some(h) => {
                    format!("hosted by {h}: its customers are told {h} can read what they send")
                }
                None => "self-hosted: its chats are end to end with it".to_string(),
            };
            summary.push(format!(
                "  {username} (\"{}\"{}): {run_by}; {hooks}",
                card.name,
                if card.verified { ", verified" } else { "" }
            ));
            businesses.insert(
                username.clone(),
                Arc::new(Served {
                    device: Device {
                        username,
                        name: card.name,
                        verified: card.verified,
                        host: config.host_name.clone(),
                        send: send_tx,
                        read: read_tx,
                    },
                    message_rate: rate,
                    request_rate: config.requests_per_second,
                    messages: Mutex::new(Bucket::new(rate, rate, now)),
                    requests: Mutex::new(Bucket::new(
                        config.requests_per_second,
                        config.requests_per_second,
                        now,
                    )),
                }),
            );
        }
        let api = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.metrics_listen))?;
        Ok(Self {
            api,
            metrics_listener,
            state: Arc::new(AppState {
                tokens: Mutex::new(tokens),
                businesses,
                metrics: metrics.clone(),
            }),
            metrics,
            stop,
            tasks,
            summary,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.api.local_addr()
    }

    /// Where the metrics are.
    pub fn metrics_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops the API, the devices
    /// (which send what they hold, for up to a few seconds) and the webhooks.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            api,
            metrics_listener,
            state,
            metrics,
            stop,
            tasks,
            ..
        } = self;
        let metrics_task = tokio::spawn(umbra_daemon::metrics::serve(metrics_listener, metrics));
        let app = crate::api::router(state);
        axum::serve(api, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("the API stopped")?;
        let _ = stop.send(true);
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                tracing::warn!("a business's task did not stop in time");
            }
        }
        metrics_task.abort();
        Ok(())
    }
}
