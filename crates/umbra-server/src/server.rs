//! The daemon: binding, the accept loop with its connection cap, background
//! tasks (metrics, expiry) and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use umbra_store::{Limits as StoreLimits, Store};
use umbra_wire::invite::Invite;
use umbra_wire::noise::Keypair;

use crate::budget::IntroductionBudget;
use crate::config::ServerConfig;
use crate::connection::{self, Ctx};
use crate::metrics::{Metrics, inc};
use crate::routing::{MailboxCache, Registry};
use crate::shared::{Limits, Shared};
use crate::storage::{self, Command};

pub use crate::database::DB_FILE;
/// How often old envelopes are expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
/// Connections above the cap that are told BUSY at once (beyond: just closed).
const MAX_REFUSALS: usize = 64;
/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every `every`, asks the database which of the mailboxes connected here
/// hold envelopes past what their connection delivered, or online-only ones
/// held for them, and wakes those: the mail a lost wake-up would otherwise
/// leave waiting.
async fn sweep(shared: Arc<Shared>, storage: crate::storage::StorageHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sessions = shared.registry.main_sessions();
        if !sessions.is_empty() {
            let mailboxes = sessions.iter().map(|(m, _)| *m).collect();
            if let Ok(newest) = storage
                .call(|reply| Command::Newest { mailboxes, reply })
                .await
            {
                let newest: std::collections::HashMap<_, _> = newest.into_iter().collect();
                for (m, inbox) in sessions {
                    if newest.get(&m).is_some_and(|top| *top > inbox.cursor()) {
                        inc(&shared.metrics.sweep_wakes);
                        inbox.wake();
                    }
                }
            }
        }
        // Also forgets, across the cluster, what is past its hold.
        let targets = shared.registry.live_targets();
        let mailboxes = targets.iter().map(|(m, _)| *m).collect();
        if let Ok(waiting) = storage
            .call(|reply| Command::LiveWaiting { mailboxes, reply })
            .await
        {
            for (m, inbox) in targets {
                if waiting.contains(&m) {
                    inc(&shared.metrics.sweep_wakes);
                    inbox.wake_live();
                }
            }
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: TcpListener,
    key: Keypair,
    store: Box<dyn Store>,
    shared: Arc<Shared>,
    invite: Invite,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("invite", &self.invite.to_string())
            .finish_non_exhaustive()
    }
}

fn prepare_data_dir(dir: &PathBuf) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    Ok(())
}

fn raise_fd_limit(wanted: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted as u64 => tracing::warn!(
            limit,
            max_connections = wanted,
            "the open-file limit is below max_connections; raise it (ulimit -n) or lower max_connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

impl Server {
    /// Opens the data directory (key, database), fills the routing cache and
    /// binds both listeners.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        config.validate()?;
        raise_fd_limit(config.max_connections);
        prepare_data_dir(&config.data_dir)?;
        let key = crate::keyfile::load_or_create(&config.data_dir)?;
        let sign = crate::business::signing_key(&config.data_dir)?;
        let limits = StoreLimits {
            mailbox_cap: config.mailbox_cap,
            key_package_cap: config.key_package_cap,
        };
        let (data_dir, url) = (config.data_dir.clone(), config.database.clone());
        let (store, mailboxes, stored) = tokio::task::spawn_blocking(move || {
            let mut store = crate::database::open(&data_dir, url.as_ref(), limits, true)?;
            let mut tx = store.begin()?;
            let mailboxes = tx.all_mailboxes()?;
            let stored = tx.envelope_count()?;
            tx.commit()?;
            Ok::<_, anyhow::Error>((store, mailboxes, stored))
        })
        .await??;
        let cache = MailboxCache::default();
        for m in &mailboxes {
            cache.insert(m);
        }
        let metrics = Arc::new(Metrics::default());
        metrics
            .envelopes_stored
            .store(i64::try_from(stored).unwrap_or(i64::MAX), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            cache,
            registry: Registry::default(),
            metrics,
            budget: IntroductionBudget::new(config.introductions_per_hour),
            slots: crate::devices::SlotBudget::default(),
            blobs: crate::blobs::Blobs {
                store: crate::blobs::open_store(&config)?,
                max_bytes: config.max_blob_bytes,
                budget: crate::blobs::ByteBudget::new(config.blob_bytes_per_hour),
            },
            limits: Limits {
                max_frame_bytes: config.max_frame_bytes,
                max_envelope_bytes: config.max_envelope_bytes,
                idle_timeout: config.idle_timeout(),
            },
            sign: sign.clone(),
            bus: std::sync::OnceLock::new(),
            shared_database: config.database.is_some(),
            relay: match &config.relay_secret_file {
                Some(path) => Some(crate::shared::RelayCredentialIssuer {
                    secret: umbra_daemon::config::read_secret(path)
                        .with_context(|| format!("reading relay secret {}", path.display()))?,
                    urls: config.relay_urls.clone(),
                    ttl: Duration::from_secs(config.relay_credential_ttl_secs),
                    unit: config.unit.clone().unwrap_or_default(),
                }),
                None => None,
            },
        });
        if let Some(url) = &config.nats {
            let key_file = config
                .cluster_key_file
                .as_ref()
                .context("nats needs cluster_key_file")?;
            let (key, created) = umbra_daemon::keyfile::load_or_create(key_file, rand::random)?;
            if created {
                tracing::warn!(
                    "created a new cluster key: copy the same file to every node of the cluster"
                );
            }
            let woken = Arc::downgrade(&shared);
            let bus = crate::cluster::Bus::connect(url, key, shared.metrics.clone(), move || {
                // The bus (re)connected: hints may have been lost meanwhile.
                if let Some(s) = woken.upgrade() {
                    s.registry.wake_all();
                }
            })
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
            let _ = shared.bus.set(bus);
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        if !config.metrics_listen.ip().is_loopback() {
            tracing::warn!("the metrics endpoint listens beyond loopback, as configured");
        }
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("listening for metrics on {}", config.metrics_listen))?;
        let invite = Invite {
            host: config.invite_host(),
            port: listener.local_addr()?.port(),
            server_key: key.public,
            sign_key: Some(sign.verifying_key().to_bytes()),
        };
        Ok(Self {
            config,
            listener,
            metrics_listener,
            key,
            store,
            shared,
            invite,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the metrics endpoint.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// The invite link naming this server (not secret).
    pub fn invite(&self) -> &Invite {
        &self.invite
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// connections finish their in-flight requests, commits what storage
    /// holds and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            metrics_listener,
            key,
            store,
            shared,
            invite,
        } = self;
        let metrics_addr = metrics_listener.local_addr()?;
        let (storage, storage_thread) =
            storage::spawn(store, shared.clone()).context("starting storage thread")?;
        let metrics_task = tokio::spawn(umbra_daemon::metrics::serve(
            metrics_listener,
            shared.metrics.clone(),
        ));
        let expiry_storage = storage.clone();
        let expiry_days = config.envelope_expiry_days;
        let blob_days = config.blob_expiry_days;
        let expiry_shared = shared.clone();
        let expiry_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                expiry_storage
                    .send(Command::Expire {
                        max_age_days: expiry_days,
                    })
                    .await;
                let blobs = expiry_shared.blobs.store.clone();
                let today = umbra_store::Day::from_unix_seconds(crate::storage::unix_now());
                match tokio::task::spawn_blocking(move || blobs.expire(today, blob_days)).await {
                    Ok(Ok(n)) => {
                        if n > 0 {
                            expiry_shared
                                .metrics
                                .blobs_expired
                                .fetch_add(n, Ordering::Relaxed);
                            tracing::info!(count = n, "expired old attachments");
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "attachment expiry failed"),
                    Err(_) => tracing::error!("attachment expiry stopped"),
                }
            }
        });
        let sweep_task = shared.bus.get().is_some().then(|| {
            tokio::spawn(sweep(
                shared.clone(),
                storage.clone(),
                Duration::from_secs(config.sweep_secs),
            ))
        });
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            storage: storage.clone(),
            key,
            handshake_timeout: config.handshake_timeout(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let max = config.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        tracing::info!(listen = %config.listen, metrics = %metrics_addr, %invite, "umbra server ready");
        let mut last_cap_log: Option<Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    // The peer address is deliberately dropped: never kept or logged.
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let _ = stream.set_nodelay(true);
                            let ctx = ctx.clone();
                            let stop = stop_rx.clone();
                            let m = shared.metrics.clone();
                            m.connections_open.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(async move {
                                connection::serve(stream, ctx, stop).await;
                                m.connections_open.fetch_sub(1, Ordering::Relaxed);
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            inc(&shared.metrics.connections_refused);
                            if last_cap_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                last_cap_log = Some(Instant::now());
                                tracing::warn!(
                                    max_connections = max,
                                    "connection limit reached; refusing new connections"
                                );
                            }
                            // Tell the client why, if few refusals are in progress;
                            // beyond that, just close.
                            if let Ok(p) = refusals.clone().try_acquire_owned() {
                                let ctx = ctx.clone();
                                tokio::spawn(async move {
                                    connection::refuse_busy(stream, &ctx).await;
                                    drop(p);
                                });
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!("shutting down: closing connections");
        let _ = stop_tx.send(true);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        expiry_task.abort();
        metrics_task.abort();
        if let Some(t) = sweep_task {
            t.abort();
        }
        storage.send(Command::Stop).await;
        drop(ctx);
        drop(storage);
        tokio::task::spawn_blocking(move || storage_thread.join())
            .await
            .context("joining storage thread")?
            .map_err(|_| anyhow::anyhow!("the storage thread panicked"))?;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Binds with `config` and serves until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
