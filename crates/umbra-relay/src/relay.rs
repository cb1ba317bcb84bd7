//! [`Relay`]: binds every socket ([`Relay::bind`]), then runs the workers, the TCP/TLS
//! listeners and the metrics endpoint until shutdown ([`Relay::run`]).
//!
//! Listeners run on the caller's tokio runtime and hand each accepted connection to a
//! worker chosen by a hash of the client's address; UDP needs no hand-off, since every
//! worker has its own `SO_REUSEPORT` socket on the same address.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use umbra_turn::AddressFamily;
use umbra_turn::server::{RestAuthenticator, ServerConfig};

use crate::config::RelayConfig;
use crate::metrics::{Metrics, inc};
use crate::policy::{MeshPolicy, RelaySet};
use crate::ports::PortRange;
use crate::quota::Quotas;
use crate::worker::{self, Incoming, Shared, WorkerSetup};

/// A bound, not yet running, TURN relay.
pub struct Relay {
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
    tls: TcpListener,
    metrics_listener: TcpListener,
    shared: Arc<Shared>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    tls_addr: SocketAddr,
    metrics_addr: SocketAddr,
    unit: Option<crate::unit::Unit>,
}

impl Relay {
    /// Binds the client UDP sockets (one per worker), the TCP, TLS and metrics listeners,
    /// and prepares the TLS certificate. Port 0 anywhere picks a free port; read the
    /// result back with the `*_addr` methods.
    pub async fn bind(config: RelayConfig) -> anyhow::Result<Relay> {
        config.validate()?;
        let secret = config.secret()?;
        let workers = config.worker_count();
        let (udp, tcp) = bind_udp_and_tcp(&config, workers).await?;
        let udp_addr = udp[0].local_addr()?;
        let tls_want = config.tls_addr();
        let tls = TcpListener::bind(tls_want)
            .await
            .with_context(|| format!("cannot bind TLS {tls_want}"))?;
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot bind metrics {}", config.metrics_listen))?;
        let files = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let acceptor = crate::tls::acceptor(files, config.advertised_ip())?;

        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut sc = ServerConfig::new(config.realm.clone(), rand::random::<[u8; 32]>());
        sc.max_lifetime = config.max_lifetime();
        sc.default_lifetime = sc.default_lifetime.min(sc.max_lifetime);
        sc.user_quota = config.user_quota;
        sc.total_quota = config.total_quota;
        sc.relay_families = vec![match config.advertised_ip() {
            std::net::IpAddr::V4(_) => AddressFamily::V4,
            std::net::IpAddr::V6(_) => AddressFamily::V6,
        }];
        let metrics = Arc::new(Metrics::default());
        let unit = if config.unit {
            let key = match &config.unit_key_file {
                Some(path) => {
                    let (key, created) = umbra_daemon::keyfile::load_or_create(path, rand::random)?;
                    if created {
                        tracing::info!("created a new forwarding unit key");
                    }
                    key
                }
                None => rand::random(),
            };
            let settings = crate::unit::UnitSettings {
                listen: config.unit_addr(),
                advertised_ip: config.advertised_ip(),
                secret: secret.clone(),
                key,
                limits: umbra_sfu::Limits {
                    per_room: config.unit_room_size,
                    per_credential: config.unit_per_credential,
                    total: config.unit_max_members,
                },
            };
            Some(crate::unit::Unit::bind(settings, metrics.unit.clone()).await?)
        } else {
            None
        };
        let relays = Arc::new(RelaySet::default());
        let shared = Arc::new(Shared {
            metrics,
            relays: relays.clone(),
            policy: MeshPolicy::new(relays, config.advertised_ip(), config.allow_peers.clone()),
            ports: PortRange::new(
                config.relay_ip(),
                config.relay_port_min,
                config.relay_port_max,
                config.user_quota,
                config.total_quota,
            ),
            quotas: Quotas::new(config.user_quota, config.total_quota),
            server_config: sc,
            auth: RestAuthenticator::new(secret, now, unix),
            bandwidth: config.bandwidth_bytes_per_sec,
            bind_ip: config.relay_ip(),
            advertised_ip: config.advertised_ip(),
            tls: acceptor,
            connections: Default::default(),
            max_connections: config.max_connections,
            idle: config.max_lifetime() + Duration::from_secs(30),
        });
        Ok(Relay {
            udp,
            udp_addr,
            tcp_addr: tcp.local_addr()?,
            tls_addr: tls.local_addr()?,
            metrics_addr: metrics_listener.local_addr()?,
            tcp,
            tls,
            metrics_listener,
            shared,
            unit,
        })
    }

    /// The forwarding unit's address (UDP and TCP), when it runs.
    pub fn unit_addr(&self) -> Option<SocketAddr> {
        self.unit.as_ref().map(crate::unit::Unit::addr)
    }

    /// The address members reach the forwarding unit at, when it runs.
    pub fn unit_public(&self) -> Option<SocketAddr> {
        self.unit.as_ref().map(crate::unit::Unit::public)
    }

    /// The link group call members reach the forwarding unit by, with
    /// `host` as its name, when it runs.
    pub fn unit_link(&self, host: &str) -> Option<umbra_wire::invite::UnitLink> {
        self.unit.as_ref().map(|u| u.link(host))
    }

    /// The UDP address clients use.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address clients use.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The TLS address clients use.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The Prometheus endpoint's address (`GET /metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Number of worker threads that will run.
    pub fn workers(&self) -> usize {
        self.udp.len()
    }

    /// The relay's counters (live while it runs).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, releases every allocation,
    /// joins the workers and returns. Fails if a worker dies.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Relay {
            udp,
            tcp,
            tls,
            metrics_listener,
            shared,
            unit,
            ..
        } = self;
        let n = udp.len();
        let (stop_tx, stop_rx) = watch::channel(false);
        let nonce_anchor = Instant::now();
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (index, client_udp) in udp.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            let setup = WorkerSetup {
                index,
                client_udp,
                incoming: rx,
                shutdown: stop_rx.clone(),
                shared: shared.clone(),
                nonce_anchor,
            };
            let handle = worker::spawn(setup).context("cannot start a worker thread")?;
            handles.push(handle);
        }
        let senders = Arc::new(senders);
        let tasks = [
            tokio::spawn(accept_loop(tcp, false, senders.clone(), shared.clone())),
            tokio::spawn(accept_loop(tls, true, senders.clone(), shared.clone())),
            tokio::spawn(umbra_daemon::metrics::serve(
                metrics_listener,
                shared.metrics.clone(),
            )),
            tokio::spawn(expire_reservations(shared.clone())),
        ];
        let unit = unit.map(|u| {
            let mut stop = stop_rx.clone();
            tokio::spawn(u.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        tracing::info!(workers = n, "relay running");
        let exited_early = tokio::select! {
            _ = shutdown => false,
            _ = wait_any_finished(&handles) => true,
        };
        for t in &tasks {
            t.abort();
        }
        drop(senders);
        let _ = stop_tx.send(true);
        if let Some(u) = unit {
            u.await.context("the forwarding unit")??;
        }
        let results = tokio::task::spawn_blocking(move || {
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        })
        .await
        .context("joining workers")?;
        let m = &shared.metrics;
        tracing::info!(
            created = m.allocations_created.load(Ordering::Relaxed),
            "relay stopped"
        );
        for r in results {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context("a relay worker failed")),
                Err(_) => anyhow::bail!("a relay worker panicked"),
            }
        }
        if exited_early {
            anyhow::bail!("a relay worker stopped unexpectedly");
        }
        Ok(())
    }
}

/// Resolves when any worker thread has finished.
async fn wait_any_finished(handles: &[std::thread::JoinHandle<std::io::Result<()>>]) {
    loop {
        if handles.iter().any(|h| h.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Closes reserved ports (EVEN-PORT with R) nobody claimed in time, once a second: a
/// reservation lasts `RESERVATION_LIFETIME` (30 s) plus at most a second.
async fn expire_reservations(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let n = shared.ports.expire(Instant::now());
        if n > 0 {
            shared
                .metrics
                .reservations_expired
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A UDP socket with `SO_REUSEPORT`, so each worker can bind the same address.
/// Binds the workers' UDP sockets and the TCP listener. TURN's TCP port is
/// the UDP port unless told otherwise; when the UDP port is left to the
/// system (port 0), the same number may already be taken for TCP, so another
/// is tried (a few times) rather than failing on a busy machine.
async fn bind_udp_and_tcp(
    config: &RelayConfig,
    workers: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    let pick_again = config.udp_listen.port() == 0 && config.tcp_listen.is_none();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let first = reuseport_udp(config.udp_listen)
            .with_context(|| format!("cannot bind UDP {}", config.udp_listen))?;
        let udp_addr = first.local_addr()?;
        let mut udp = vec![first];
        for _ in 1..workers {
            udp.push(reuseport_udp(udp_addr).context("cannot bind a worker's UDP socket")?);
        }
        let tcp_want = config.tcp_listen.unwrap_or(udp_addr);
        match TcpListener::bind(tcp_want).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if pick_again && attempt < 16 && e.kind() == std::io::ErrorKind::AddrInUse => {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind TCP {tcp_want}")),
        }
    }
}

fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Accepts connections and hands them to workers, within the connection cap.
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    workers: Arc<Vec<mpsc::UnboundedSender<Incoming>>>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= shared.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            inc(&shared.metrics.connections_refused);
            continue;
        }
        let Ok(stream) = stream.into_std() else {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        peer.hash(&mut h);
        let i = usize::try_from(h.finish() % workers.len().max(1) as u64).unwrap_or(0);
        let sent = workers
            .get(i)
            .is_some_and(|w| w.send(Incoming { stream, peer, tls }).is_ok());
        if !sent {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
