//! The daemon: listeners, per-connection handling, limits, shutdown.
//!
//! For each connection: (optionally) strip a PROXY v2 header, (on TLS ports)
//! complete TLS, read the first bytes and decide. Admitted: connect the
//! upstream, pass on whatever followed the preamble, forward both ways.
//! Otherwise: the decoy website. No address of any client is logged, kept,
//! or sent upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use umbra_wire::proxy::{PREAMBLE_LEN, ProxyLink, Target};

use crate::admission::{Admission, Decision, Reason};
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::{decoy, forward, link, proxy_protocol, tls};

/// How long shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Shared {
    admission: Admission,
    tls: Option<TlsAcceptor>,
    upstream: String,
    relay_upstream: Option<String>,
    decoy: Option<String>,
    metrics: Arc<Metrics>,
    idle: Duration,
    handshake: Duration,
    proxy_protocol: bool,
}

/// A bound proxy.
pub struct Proxy {
    tls_listeners: Vec<TcpListener>,
    plain_listeners: Vec<TcpListener>,
    metrics_listener: TcpListener,
    shared: Arc<Shared>,
    link: ProxyLink,
    fingerprint: Option<String>,
    max_connections: usize,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn bind_all(addrs: &[SocketAddr], what: &str) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in addrs {
        let l = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} ({what}); ports below 1024 need root or CAP_NET_BIND_SERVICE")
        })?;
        out.push(l);
    }
    Ok(out)
}

impl Proxy {
    /// Loads the secret and certificate, binds every port.
    pub async fn bind(config: ProxyConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let secret = link::load_or_create_secret(&config.data_dir)?;
        let tls_listeners = bind_all(&config.tls_listen, "TLS").await?;
        let plain_listeners = bind_all(&config.plain_listen, "plain").await?;
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} (metrics)", config.metrics_listen))?;
        let first_port = |ls: &[TcpListener]| {
            ls.first()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port())
        };
        let (port, use_tls) = match config.link_port {
            Some(p) => (
                p,
                config.tls_listen.iter().any(|a| a.port() == p) || config.plain_listen.is_empty(),
            ),
            None => match first_port(&tls_listeners) {
                Some(p) => (p, true),
                None => (first_port(&plain_listeners).unwrap_or(80), false),
            },
        };
        let host = config
            .public_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let (acceptor, fingerprint) = if tls_listeners.is_empty() {
            (None, None)
        } else {
            let cert = tls::load(
                config.cert_file.as_deref(),
                config.key_file.as_deref(),
                &config.data_dir,
                &host,
            )?;
            (Some(TlsAcceptor::from(cert.config)), Some(cert.fingerprint))
        };
        let shared = Arc::new(Shared {
            admission: Admission::new(
                secret,
                config.replay_cache_entries,
                Duration::from_secs(config.admission_window_secs),
                config.relay_upstream.is_some(),
            ),
            tls: acceptor,
            upstream: config.upstream.clone().unwrap_or_default(),
            relay_upstream: config.relay_upstream.clone(),
            decoy: config.decoy.clone(),
            metrics: Arc::new(Metrics::default()),
            idle: config.idle_timeout(),
            handshake: config.handshake_timeout(),
            proxy_protocol: config.accept_proxy_protocol,
        });
        Ok(Self {
            tls_listeners,
            plain_listeners,
            metrics_listener,
            shared,
            link: ProxyLink {
                host,
                port,
                secret,
                tls: use_tls,
            },
            fingerprint,
            max_connections: config.max_connections,
        })
    }

    /// The link users open.
    pub fn link(&self) -> &ProxyLink {
        &self.link
    }

    /// Addresses of the TLS ports.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Addresses of the plain ports.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.plain_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Address of the metrics endpoint.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// SHA-256 of the TLS certificate, when TLS is on.
    pub fn certificate_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then lets open connections finish
    /// for a few seconds.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(umbra_daemon::metrics::serve(
            self.metrics_listener,
            self.shared.metrics.clone(),
        ));
        for l in self.tls_listeners {
            tasks.spawn(accept_loop(l, true, self.shared.clone(), limit.clone()));
        }
        for l in self.plain_listeners {
            tasks.spawn(accept_loop(l, false, self.shared.clone(), limit.clone()));
        }
        tracing::info!("umbra proxy ready");
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        tasks.abort_all();
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, limit.acquire_many(all)).await;
        tracing::info!("proxy stopped");
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    is_tls: bool,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.open.fetch_add(1, Ordering::Relaxed);
            handle(tcp, is_tls, &shared).await;
            shared.metrics.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

async fn handle(tcp: TcpStream, is_tls: bool, shared: &Shared) {
    // Everything before forwarding runs in its own boxed future, freed when
    // it ends, so an idle forwarded connection's task holds only the
    // forwarding state.
    if is_tls {
        Box::pin(handle_tls(tcp, shared)).await;
        return;
    }
    if let Some((client, upstream)) = Box::pin(admit_plain(tcp, shared)).await {
        forward::PlainForward::new(client, upstream, shared.idle, &shared.metrics).await;
    }
}

async fn admit_plain(mut tcp: TcpStream, shared: &Shared) -> Option<(TcpStream, TcpStream)> {
    if shared.proxy_protocol {
        match tokio::time::timeout(shared.handshake, proxy_protocol::strip(&mut tcp)).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
    let (first, decision) = read_first(&mut tcp, shared).await;
    match decision {
        Decision::Admit(target) => {
            let up = connect_upstream(shared, target, &first[PREAMBLE_LEN..]).await?;
            Some((tcp, up))
        }
        _ => {
            turn_away(tcp, &first, shared).await;
            None
        }
    }
}

async fn handle_tls(mut tcp: TcpStream, shared: &Shared) {
    if shared.proxy_protocol {
        match tokio::time::timeout(shared.handshake, proxy_protocol::strip(&mut tcp)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let Some(acceptor) = &shared.tls else { return };
    let mut stream = match tokio::time::timeout(shared.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        _ => {
            shared.metrics.tls_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (first, decision) = read_first(&mut stream, shared).await;
    match decision {
        Decision::Admit(target) => {
            if let Some(up) = connect_upstream(shared, target, &first[PREAMBLE_LEN..]).await {
                drop(first);
                forward::buffered(stream, up, shared.idle, &shared.metrics).await;
            }
        }
        _ => turn_away(stream, &first, shared).await,
    }
}

/// Reads until the admission decision is made (or the handshake timeout).
async fn read_first<S: AsyncRead + Unpin>(stream: &mut S, shared: &Shared) -> (Vec<u8>, Decision) {
    let mut first = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let decide = async {
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Decision::Decoy(Reason::NoProof),
                Ok(n) => n,
            };
            first.extend_from_slice(&buf[..n]);
            match shared.admission.decide(&first, unix_now()) {
                Decision::NeedMore if first.len() < 4096 => continue,
                Decision::NeedMore => return Decision::Decoy(Reason::NoProof),
                d => return d,
            }
        }
    };
    let decision = tokio::time::timeout(shared.handshake, decide)
        .await
        .unwrap_or(Decision::Decoy(Reason::NoProof));
    match decision {
        Decision::Admit(Target::Messaging) => {
            shared
                .metrics
                .admitted_messaging
                .fetch_add(1, Ordering::Relaxed);
        }
        Decision::Admit(Target::Relay) => {
            shared
                .metrics
                .admitted_relay
                .fetch_add(1, Ordering::Relaxed);
        }
        Decision::Decoy(reason) => {
            shared.metrics.turned_away.fetch_add(1, Ordering::Relaxed);
            match reason {
                Reason::Stale => shared.metrics.stale.fetch_add(1, Ordering::Relaxed),
                Reason::Replayed => shared.metrics.replayed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        Decision::NeedMore => {}
    }
    (first, decision)
}

async fn connect_upstream(shared: &Shared, target: Target, rest: &[u8]) -> Option<TcpStream> {
    let addr = match target {
        Target::Messaging => shared.upstream.as_str(),
        Target::Relay => shared.relay_upstream.as_deref()?,
    };
    let connect = async {
        let mut up = TcpStream::connect(addr).await?;
        let _ = up.set_nodelay(true);
        if !rest.is_empty() {
            up.write_all(rest).await?;
        }
        Ok::<_, std::io::Error>(up)
    };
    match tokio::time::timeout(shared.handshake, connect).await {
        Ok(Ok(up)) => Some(up),
        _ => {
            shared
                .metrics
                .upstream_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cannot reach the upstream; check `umbra proxy doctor`");
            None
        }
    }
}

async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(stream: S, first: &[u8], shared: &Shared) {
    let _ = match &shared.decoy {
        Some(addr) => decoy::relay_to(stream, first, addr, shared.handshake).await,
        None => decoy::serve_builtin(stream, first, shared.handshake, unix_now()).await,
    };
}

#[cfg(test)]
mod tests {
    /// An idle forwarded connection costs what its future holds: keep it small.
    #[test]
    fn idle_forwarding_state_stays_small() {
        let size = std::mem::size_of::<crate::forward::PlainForward<'static>>();
        assert!(size <= 256, "PlainForward grew to {size} bytes");
    }
}
