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

/// One worker's listening sockets: (socket, is TLS).
type WorkerListeners = Vec<(std::net::TcpListener, bool)>;

/// A bound proxy.
pub struct Proxy {
    /// Per worker thread, its own SO_REUSEPORT copy of every listening port.
    listeners: Vec<WorkerListeners>,
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

/// A listening socket that other workers can share (SO_REUSEPORT: the
/// kernel spreads connections across them); `[::]` is dual-stack.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds every address once per worker; later workers reuse the port the
/// first one got (for port 0).
fn bind_all(
    tls: &[SocketAddr],
    plain: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<Vec<WorkerListeners>> {
    let mut first: WorkerListeners = Vec::new();
    for (addr, is_tls) in tls
        .iter()
        .map(|a| (a, true))
        .chain(plain.iter().map(|a| (a, false)))
    {
        let what = if is_tls { "TLS" } else { "plain" };
        let l = reuseport_listener(*addr).with_context(|| {
            format!("cannot listen on {addr} ({what}); ports below 1024 need root or CAP_NET_BIND_SERVICE")
        })?;
        first.push((l, is_tls));
    }
    let mut all = Vec::with_capacity(workers);
    for _ in 1..workers.max(1) {
        let mut set = Vec::with_capacity(first.len());
        for (l, is_tls) in &first {
            let addr = l.local_addr()?;
            set.push((
                reuseport_listener(addr)
                    .with_context(|| format!("cannot share {addr} across workers"))?,
                *is_tls,
            ));
        }
        all.push(set);
    }
    all.insert(0, first);
    Ok(all)
}

impl Proxy {
    /// Loads the secret and certificate, binds every port.
    pub async fn bind(config: ProxyConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let secret = link::load_or_create_secret(&config.data_dir)?;
        let workers = config.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let listeners = bind_all(&config.tls_listen, &config.plain_listen, workers)?;
        let addrs = |want_tls: bool| -> Vec<SocketAddr> {
            listeners[0]
                .iter()
                .filter(|(_, t)| *t == want_tls)
                .filter_map(|(l, _)| l.local_addr().ok())
                .collect()
        };
        let (tls_addrs, plain_addrs) = (addrs(true), addrs(false));
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
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let (acceptor, fingerprint) = if tls_addrs.is_empty() {
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
            listeners,
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
        self.addrs(true)
    }

    /// Addresses of the plain ports.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(false)
    }

    fn addrs(&self, want_tls: bool) -> Vec<SocketAddr> {
        self.listeners
            .first()
            .map(|set| {
                set.iter()
                    .filter(|(_, t)| *t == want_tls)
                    .filter_map(|(l, _)| l.local_addr().ok())
                    .collect()
            })
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
    /// for a few seconds. Each worker is a thread with its own
    /// single-threaded runtime and its own copy of every listening socket,
    /// so a connection never hops threads.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let metrics_task = tokio::spawn(umbra_daemon::metrics::serve(
            self.metrics_listener,
            self.shared.metrics.clone(),
        ));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = Vec::new();
        for (i, set) in self.listeners.into_iter().enumerate() {
            let (shared, limit, mut stopped) =
                (self.shared.clone(), limit.clone(), stopped.clone());
            let thread = std::thread::Builder::new()
                .name(format!("umbra-proxy-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let mut loops = tokio::task::JoinSet::new();
                        for (l, is_tls) in set {
                            let l = TcpListener::from_std(l)?;
                            loops.spawn(accept_loop(l, is_tls, shared.clone(), limit.clone()));
                        }
                        let _ = stopped.wait_for(|s| *s).await;
                        loops.abort_all();
                        // Let this worker's open connections finish, briefly.
                        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                        while shared.metrics.open.load(Ordering::Relaxed) > 0
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok::<_, anyhow::Error>(())
                    })
                })
                .context("starting a proxy worker")?;
            threads.push(thread);
        }
        tracing::info!(workers = threads.len(), "umbra proxy ready");
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        let _ = stop.send(true);
        for t in threads {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(r)) => r?,
                _ => anyhow::bail!("a proxy worker panicked"),
            }
        }
        metrics_task.abort();
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
            if let Some(forward) = handle(tcp, is_tls, &shared).await {
                forward.await;
            }
            shared.metrics.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Serves a connection up to the start of forwarding: TLS connections are
/// served to the end here; an admitted plain one comes back as the
/// forwarding future to run.
async fn handle(tcp: TcpStream, is_tls: bool, shared: &Shared) -> Option<forward::PlainForward> {
    if is_tls {
        Box::pin(handle_tls(tcp, shared)).await;
        return None;
    }
    let (client, upstream) = Box::pin(admit_plain(tcp, shared)).await?;
    Some(forward::PlainForward::new(
        client,
        upstream,
        shared.idle,
        shared.metrics.clone(),
    ))
}

async fn admit_plain(mut tcp: TcpStream, shared: &Shared) -> Option<(TcpStream, TcpStream)> {
    if shared.proxy_protocol {
        match tokio::time::timeout(shared.handshake, proxy_protocol::strip(&mut tcp)).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
    // Speculative read, as HAProxy does: a client usually sends its first
    // bytes right behind the connect, so they are often here already, and
    // reading now saves a round through epoll.
    let mut early = Vec::new();
    {
        use std::io::Read;
        let mut buf = [0u8; 512];
        if let Ok(n) = (&*socket2::SockRef::from(&tcp)).read(&mut buf) {
            early.extend_from_slice(&buf[..n]);
        }
    }
    let (first, decision) = read_first(&mut tcp, early, shared).await;
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
    let (first, decision) = read_first(&mut stream, Vec::new(), shared).await;
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
async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut first: Vec<u8>,
    shared: &Shared,
) -> (Vec<u8>, Decision) {
    let mut buf = [0u8; 512];
    let decide = async {
        loop {
            if !first.is_empty() {
                match shared.admission.decide(&first, unix_now()) {
                    Decision::NeedMore if first.len() < 4096 => {}
                    Decision::NeedMore => return Decision::Decoy(Reason::NoProof),
                    d => return d,
                }
            }
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Decision::Decoy(Reason::NoProof),
                Ok(n) => n,
            };
            first.extend_from_slice(&buf[..n]);
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
        let to = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        speculative_connect(to, rest).await
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

/// Connects to `to` and writes `rest`, trying the fast path first as HAProxy
/// does: on a near upstream the connection is usually established by the time
/// `connect` returns, so the bytes go out at once, without waiting for epoll
/// to say the socket is writable.
async fn speculative_connect(to: SocketAddr, mut rest: &[u8]) -> std::io::Result<TcpStream> {
    use std::io::Write;
    // Non-blocking from creation (SOCK_NONBLOCK): no fcntl calls.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM.nonblocking(),
        None,
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let std_stream: std::net::TcpStream = socket.into();
    let connected = if rest.is_empty() {
        std_stream.peer_addr().is_ok()
    } else {
        match (&std_stream).write(rest) {
            Ok(n) => {
                rest = &rest[n..];
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::NotConnected =>
            {
                false
            }
            Err(e) => return Err(e),
        }
    };
    let mut up = TcpStream::from_std(std_stream)?;
    if !connected {
        up.writable().await?;
        if let Some(e) = up.take_error()? {
            return Err(e);
        }
    }
    if !rest.is_empty() {
        up.write_all(rest).await?;
    }
    Ok(up)
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
        let size = std::mem::size_of::<crate::forward::PlainForward>();
        assert!(size <= 256, "PlainForward grew to {size} bytes");
    }
}
