//! The daemon: listeners, workers, limits, shutdown.
//!
//! Plain ports are served by the proxy's own event loops ([`crate::plain`]),
//! one thread per core, each with its own `SO_REUSEPORT` copy of every plain
//! listener, so a connection never hops threads. TLS ports are served on the
//! tokio runtime: complete TLS, read the first bytes and decide; admitted,
//! connect the upstream, pass on what followed the preamble, forward both
//! ways; otherwise the website. No address of any client is logged, kept, or
//! sent upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use umbra_wire::proxy::{ProxyLink, Target};

use crate::admission::{Admission, Decision, Reason};
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::shared::{Shared, unix_now};
use crate::upstream::{Upstream, not_yet, start_connect};
use crate::{acme, forward, link, plain, proxy_protocol, tls};

/// How long shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound proxy.
pub struct Proxy {
    /// Per worker thread, its own SO_REUSEPORT copy of every plain port.
    plain: Vec<Vec<std::net::TcpListener>>,
    tls: Vec<std::net::TcpListener>,
    metrics_listener: TcpListener,
    shared: Arc<Shared>,
    link: ProxyLink,
    fingerprint: Option<String>,
    acme: Option<acme::Manager>,
}

/// A listening socket that other workers can share (SO_REUSEPORT: the
/// kernel spreads connections across them); `[::]` is dual-stack. Accepted
/// sockets inherit TCP_NODELAY from it, which saves a call per connection.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn listen(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    reuseport_listener(addr).with_context(|| {
        format!(
            "cannot listen on {addr} ({what}); ports below 1024 need root or CAP_NET_BIND_SERVICE"
        )
    })
}

/// Binds every plain address once per worker; later workers reuse the port
/// the first one got (for port 0).
fn bind_plain(
    plain: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<Vec<Vec<std::net::TcpListener>>> {
    let first = plain
        .iter()
        .map(|a| listen(*a, "plain"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut all = Vec::with_capacity(workers);
    for _ in 1..workers.max(1) {
        let mut set = Vec::with_capacity(first.len());
        for l in &first {
            let addr = l.local_addr()?;
            set.push(
                reuseport_listener(addr)
                    .with_context(|| format!("cannot share {addr} across workers"))?,
            );
        }
        all.push(set);
    }
    all.insert(0, first);
    Ok(all)
}

impl Proxy {
    /// Loads the secret and certificate, binds every port, resolves the
    /// upstreams once.
    pub async fn bind(config: ProxyConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let secret = link::load_or_create_secret(&config.data_dir)?;
        let workers = config.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let tls_listeners = config
            .tls_listen
            .iter()
            .map(|a| listen(*a, "TLS"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plain = bind_plain(&config.plain_listen, workers)?;
        let local = |ls: &[std::net::TcpListener]| -> Vec<SocketAddr> {
            ls.iter().filter_map(|l| l.local_addr().ok()).collect()
        };
        let tls_addrs = local(&tls_listeners);
        let plain_addrs = plain.first().map(|p| local(p)).unwrap_or_default();
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} (metrics)", config.metrics_listen))?;
        let first_port = |addrs: &[SocketAddr]| addrs.first().map(|a| a.port());
        let (port, use_tls) = match config.link_port {
            Some(p) => (
                p,
                config.tls_listen.iter().any(|a| a.port() == p) || config.plain_listen.is_empty(),
            ),
            None => match first_port(&tls_addrs) {
                Some(p) => (p, true),
                None => (first_port(&plain_addrs).unwrap_or(80), false),
            },
        };
        let host = config
            .public_host
            .clone()
            .or_else(|| config.acme.clone())
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let mut acme = None;
        let (acceptor, fingerprint) = if tls_addrs.is_empty() || config.front.is_some() {
            // Fronting shows the fronted site's certificate, never one of ours.
            (None, None)
        } else if let Some(domain) = &config.acme {
            let manager = acme::Manager::load(
                acme::Settings {
                    domain: domain.clone(),
                    directory: config.acme_directory.clone(),
                    ca_root: config.acme_ca_root.clone(),
                },
                &config.data_dir,
            )?;
            let tls = Arc::new(manager.server_config()?);
            acme = Some(manager);
            (Some(TlsAcceptor::from(tls)), None)
        } else {
            let cert = tls::load(
                config.cert_file.as_deref(),
                config.key_file.as_deref(),
                &config.data_dir,
                &host,
            )?;
            (Some(TlsAcceptor::from(cert.config)), Some(cert.fingerprint))
        };
        let upstream = Upstream::new(config.upstream.as_deref().unwrap_or_default());
        let relay_upstream = config.relay_upstream.as_deref().map(Upstream::new);
        for u in std::iter::once(&upstream).chain(relay_upstream.as_ref()) {
            if !u.resolve().await {
                tracing::warn!("an upstream name does not resolve yet; retrying in the background");
            }
        }
        let shared = Arc::new(Shared {
            admission: Admission::new(
                secret,
                config.replay_cache_entries,
                Duration::from_secs(config.admission_window_secs),
                config.relay_upstream.is_some(),
                unix_now(),
            ),
            tls: acceptor,
            upstream,
            relay_upstream,
            decoy: config.decoy.clone(),
            site: crate::decoy::builtin(&secret, link::created(&config.data_dir)),
            front: config
                .front
                .clone()
                .zip(config.front_name())
                .map(|(addr, name)| crate::front::Front::new(addr, name)),
            metrics: Arc::new(Metrics::default()),
            idle: config.idle_timeout(),
            handshake: config.handshake_timeout(),
            proxy_protocol: config.accept_proxy_protocol,
            max_connections: config.max_connections,
        });
        Ok(Self {
            plain,
            tls: tls_listeners,
            metrics_listener,
            shared,
            link: ProxyLink {
                host,
                port,
                secret,
                tls: use_tls,
                front: config.front_name().filter(|_| use_tls),
            },
            fingerprint,
            acme,
        })
    }

    /// The link users open.
    pub fn link(&self) -> &ProxyLink {
        &self.link
    }

    /// Addresses of the TLS ports.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Addresses of the plain ports.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.plain
            .first()
            .map(|set| set.iter().filter_map(|l| l.local_addr().ok()).collect())
            .unwrap_or_default()
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
        let shared = self.shared;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(umbra_daemon::metrics::serve(
            self.metrics_listener,
            shared.metrics.clone(),
        ));
        {
            let shared = shared.clone();
            tasks.spawn(async move {
                let relay = async {
                    if let Some(r) = &shared.relay_upstream {
                        r.keep_resolved().await;
                    }
                };
                tokio::join!(shared.upstream.keep_resolved(), relay);
            });
        }
        if let Some(manager) = self.acme {
            tasks.spawn(manager.run(shared.metrics.clone()));
        }
        if shared.front.is_some() {
            let shared = shared.clone();
            tasks.spawn(async move {
                if let Some(front) = &shared.front {
                    front.keep_learning(shared.handshake).await;
                }
            });
        }
        for l in self.tls {
            tasks.spawn(accept_tls(TcpListener::from_std(l)?, shared.clone()));
        }
        let runtime = tokio::runtime::Handle::current();
        let (mut stoppers, mut threads) = (Vec::new(), Vec::new());
        for (i, set) in self.plain.into_iter().enumerate() {
            let (worker, stopper) = plain::Worker::new(set, shared.clone(), runtime.clone())
                .context("starting a proxy worker")?;
            stoppers.push(stopper);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("umbra-proxy-{i}"))
                    .spawn(move || worker.run(SHUTDOWN_GRACE))
                    .context("starting a proxy worker")?,
            );
        }
        tracing::info!(workers = threads.len(), "umbra proxy ready");
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        tasks.abort_all();
        stoppers.iter().for_each(plain::Stopper::stop);
        for t in threads {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(r)) => r.context("a proxy worker failed")?,
                _ => anyhow::bail!("a proxy worker panicked"),
            }
        }
        // TLS connections and websites being served: a short grace too.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while shared.open_now() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("proxy stopped");
        Ok(())
    }
}

async fn accept_tls(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        // The peer's address is dropped here, unread.
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.open() {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            Box::pin(handle_tls(tcp, &shared)).await;
            shared.close();
        });
    }
}

async fn handle_tls(mut tcp: TcpStream, shared: &Shared) {
    let started = std::time::Instant::now();
    if shared.proxy_protocol {
        match tokio::time::timeout(shared.handshake, proxy_protocol::strip(&mut tcp)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    if let Some(front) = &shared.front {
        crate::front::handle(tcp, shared, front).await;
        return;
    }
    let Some(acceptor) = &shared.tls else { return };
    // Plain HTTP on the TLS port: nginx's answer, unless the operator's own
    // web server answers everything.
    let mut peeked = [0u8; 1];
    if shared.decoy.is_none()
        && let Ok(Ok(1)) = tokio::time::timeout(shared.handshake, tcp.peek(&mut peeked)).await
        && peeked[0].is_ascii_uppercase()
    {
        shared.count(Decision::Decoy(Reason::NoProof));
        let _ = crate::decoy::plain_on_tls(tcp, &shared.site).await;
        return;
    }
    let mut stream = match tokio::time::timeout(shared.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        _ => {
            shared
                .metrics
                .tls_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(acme::ACME_TLS_ALPN) {
        // The CA checked the challenge certificate; nothing else is said.
        let _ = stream.shutdown().await;
        return;
    }
    let (first, decision) = read_first(&mut stream, shared).await;
    shared.count(decision);
    match decision {
        Decision::Admit(a) => {
            if let Some(up) = connect_upstream(shared, a.target, &first[a.proof_len..]).await {
                drop(first);
                forward::buffered(stream, up, shared.idle, &shared.metrics).await;
            }
        }
        _ => {
            shared
                .turn_away(stream, &first, true, started.elapsed())
                .await
        }
    }
}

/// Reads until the admission decision is made (or the handshake timeout).
async fn read_first<S: AsyncRead + Unpin>(stream: &mut S, shared: &Shared) -> (Vec<u8>, Decision) {
    let mut first = Vec::new();
    let mut buf = [0u8; 512];
    let decide = async {
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Decision::Decoy(Reason::NoProof),
                Ok(n) => n,
            };
            first.extend_from_slice(&buf[..n]);
            match shared.admission.decide(&first, unix_now()) {
                // As on the plain ports: no waiting where the site answers.
                Decision::NeedMore if first.len() < 4096 && crate::plain::site_waits(&first) => {}
                Decision::NeedMore => return Decision::Decoy(Reason::NoProof),
                d => return d,
            }
        }
    };
    let decision = tokio::time::timeout(shared.handshake, decide)
        .await
        .unwrap_or(Decision::Decoy(Reason::NoProof));
    (first, decision)
}

/// Connects the upstream for `target` and sends it `rest`.
pub(crate) async fn connect_upstream(
    shared: &Shared,
    target: Target,
    rest: &[u8],
) -> Option<TcpStream> {
    let connect = async {
        let to = shared
            .upstream_for(target)
            .and_then(Upstream::addr)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unresolved"))?;
        let std_stream = start_connect(to, !rest.is_empty())?;
        // Write at once if the connection is already up (usually, nearby).
        let sent = match std::io::Write::write(&mut &std_stream, rest) {
            Ok(n) => n,
            Err(e) if not_yet(&e) => 0,
            Err(e) => return Err(e),
        };
        let mut up = TcpStream::from_std(std_stream)?;
        if sent < rest.len() || rest.is_empty() {
            up.writable().await?;
            if let Some(e) = up.take_error()? {
                return Err(e);
            }
            up.write_all(&rest[sent..]).await?;
        }
        Ok::<_, std::io::Error>(up)
    };
    match tokio::time::timeout(shared.handshake, connect).await {
        Ok(Ok(up)) => Some(up),
        _ => {
            shared.upstream_failed();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain loop sets no TCP_NODELAY on accepted sockets: they must get
    /// it from the listener (Linux copies it), or small writes would wait.
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let listener = reuseport_listener("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        listener.set_nonblocking(false).expect("blocking");
        let (accepted, _) = listener.accept().expect("accept");
        assert!(accepted.nodelay().expect("nodelay"));
    }
}
