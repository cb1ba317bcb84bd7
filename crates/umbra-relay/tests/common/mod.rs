//! Shared test helpers: a running relay on 127.0.0.1 ephemeral ports, REST credentials,
//! and a TURN client (umbra_turn's sans-IO client) driven over UDP, TCP or TLS.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use umbra_relay::{Metrics, Relay, RelayConfig};
use umbra_turn::client::{Client, ClientConfig, ClientEvent};
use umbra_turn::credentials::rest;
use umbra_turn::{Transport, frame_len};

pub const SECRET: &str = "test-shared-secret";

/// A relay running in the test's runtime.
pub struct Running {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// PEM of the TLS certificate clients should trust.
    pub ca_der: Vec<u8>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(10), t).await??,
            None => Ok(()),
        }
    }

    /// The Prometheus text from `GET /metrics`.
    pub async fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics_addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A test configuration: every listener on 127.0.0.1:0, two workers.
pub fn config() -> RelayConfig {
    RelayConfig {
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        auth_secret: Some(SECRET.to_owned()),
        workers: Some(2),
        ..RelayConfig::default()
    }
}

/// Starts a relay with `config` plus a certificate for `localhost` written to PEM files.
pub async fn start(mut config: RelayConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: PathBuf = dir.path().join("cert.pem");
    let key: PathBuf = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    if config.tls_cert.is_none() {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    }
    let relay = Relay::bind(config).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let (udp, tcp, tls) = (relay.udp_addr(), relay.tcp_addr(), relay.tls_addr());
    let (metrics_addr, metrics) = (relay.metrics_addr(), relay.metrics());
    let task = tokio::spawn(relay.run(async move {
        let _ = rx.await;
    }));
    Running {
        udp,
        tcp,
        tls,
        metrics_addr,
        metrics,
        ca_der: ck.cert.der().to_vec(),
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

/// REST credentials valid for an hour (or already expired with `valid_secs` < 0).
pub fn creds(token: &str, valid_secs: i64) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry = u64::try_from(now + valid_secs).unwrap();
    rest::credentials(SECRET.as_bytes(), expiry, token)
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Duplex>, Vec<u8>),
}

/// Which client transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
    Tls,
}

/// umbra_turn's client over a real socket.
pub struct TurnClient {
    conn: Conn,
    pub client: Client,
    events: VecDeque<ClientEvent>,
}

pub type Failure = Option<u16>;

impl TurnClient {
    /// Connects to `relay` over `via` with the given credentials.
    pub async fn connect(relay: &Running, via: Via, user: &str, pass: &str) -> TurnClient {
        Self::connect_with(relay, via, user, pass, None).await
    }

    /// Like [`TurnClient::connect`], asking for a LIFETIME.
    pub async fn connect_with(
        relay: &Running,
        via: Via,
        user: &str,
        pass: &str,
        lifetime: Option<u32>,
    ) -> TurnClient {
        let (conn, transport) = match via {
            Via::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                s.connect(relay.udp).await.unwrap();
                (Conn::Udp(s), Transport::Udp)
            }
            Via::Tcp => {
                let s = TcpStream::connect(relay.tcp).await.unwrap();
                s.set_nodelay(true).unwrap();
                (Conn::Stream(Box::new(s), Vec::new()), Transport::Tcp)
            }
            Via::Tls => {
                let s = TcpStream::connect(relay.tls).await.unwrap();
                let tls = tls_connect(s, &relay.ca_der).await;
                (Conn::Stream(Box::new(tls), Vec::new()), Transport::Tcp)
            }
        };
        let mut cfg = ClientConfig::new(transport, user, pass);
        cfg.lifetime = lifetime;
        TurnClient {
            conn,
            client: Client::new(cfg, rand::random()),
            events: VecDeque::new(),
        }
    }

    async fn flush(&mut self) {
        while let Some(b) = self.client.poll_transmit() {
            match &mut self.conn {
                Conn::Udp(s) => {
                    let _ = s.send(&b).await;
                }
                Conn::Stream(s, _) => {
                    let _ = s.write_all(&b).await;
                }
            }
        }
    }

    /// Reads once (or until a timer), feeding the client.
    async fn pump(&mut self, until: Instant) {
        self.flush().await;
        let wake = self.client.poll_timeout().map_or(until, |t| t.min(until));
        let mut buf = vec![0u8; 70_000];
        let read = async {
            match &mut self.conn {
                Conn::Udp(s) => s.recv(&mut buf).await.map(|n| vec![buf[..n].to_vec()]),
                Conn::Stream(s, pending) => {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    pending.extend_from_slice(&buf[..n]);
                    let mut frames = Vec::new();
                    while let Ok(Some(len)) = frame_len(pending) {
                        if len > pending.len() {
                            break;
                        }
                        frames.push(pending.drain(..len).collect());
                    }
                    Ok(frames)
                }
            }
        };
        match tokio::time::timeout_at(wake.into(), read).await {
            Ok(Ok(frames)) => {
                for f in frames {
                    let _ = self.client.handle_packet(Instant::now(), &f);
                }
            }
            Ok(Err(_)) => tokio::time::sleep_until(wake.into()).await,
            Err(_) => {}
        }
        self.client.handle_timeout(Instant::now());
        while let Some(e) = self.client.poll_event() {
            self.events.push_back(e);
        }
        self.flush().await;
    }

    /// Waits for the first event matching `pick`, keeping the others.
    pub async fn event<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> Option<T> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| pick(e).is_some()) {
                let e = self.events.remove(i)?;
                return pick(&e);
            }
            if Instant::now() >= until {
                return None;
            }
            self.pump(until).await;
        }
    }

    /// Allocates; the relayed address, or the failure code.
    pub async fn allocate(&mut self) -> Result<SocketAddr, Failure> {
        self.client.allocate(Instant::now()).unwrap();
        self.event(Duration::from_secs(5), |e| match e {
            ClientEvent::Allocated { relay, .. } => Some(Ok(*relay)),
            ClientEvent::RequestFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
        .unwrap_or(Err(None))
    }

    /// Installs a permission for `peer`.
    pub async fn permit(&mut self, peer: SocketAddr) -> Result<(), Failure> {
        self.client
            .create_permission(Instant::now(), &[peer])
            .unwrap();
        self.event(Duration::from_secs(5), |e| match e {
            ClientEvent::PermissionCreated { .. } => Some(Ok(())),
            ClientEvent::RequestFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
        .unwrap_or(Err(None))
    }

    /// Binds a channel to `peer`.
    pub async fn bind(&mut self, peer: SocketAddr) -> Result<u16, Failure> {
        self.client.bind_channel(Instant::now(), peer).unwrap();
        self.event(Duration::from_secs(5), |e| match e {
            ClientEvent::ChannelBound { channel, .. } => Some(Ok(*channel)),
            ClientEvent::RequestFailed { code, .. } => Some(Err(*code)),
            _ => None,
        })
        .await
        .unwrap_or(Err(None))
    }

    /// Sends data to `peer` through the relay (ChannelData if bound, else Send).
    pub async fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        self.client.send_to(peer, data).unwrap();
        self.flush().await;
    }

    /// The next data received, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        self.event(timeout, |e| match e {
            ClientEvent::Data { peer, data } => Some((*peer, data.clone())),
            _ => None,
        })
        .await
    }

    /// Waits until the connection is closed by the relay (stream transports).
    pub async fn closed(&mut self, timeout: Duration) -> bool {
        let Conn::Stream(s, _) = &mut self.conn else {
            return false;
        };
        let mut buf = [0u8; 1024];
        let until = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

async fn tls_connect(s: TcpStream, ca_der: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), s)
        .await
        .unwrap()
}

/// Two clients over `via_a` / `via_b`, allocated, each permitted toward the other.
pub async fn pair(
    relay: &Running,
    via_a: Via,
    via_b: Via,
) -> (TurnClient, SocketAddr, TurnClient, SocketAddr) {
    let (ua, pa) = creds("alice", 3600);
    let (ub, pb) = creds("bob", 3600);
    let mut a = TurnClient::connect(relay, via_a, &ua, &pa).await;
    let mut b = TurnClient::connect(relay, via_b, &ub, &pb).await;
    let ra = a.allocate().await.expect("alice allocates");
    let rb = b.allocate().await.expect("bob allocates");
    a.permit(rb).await.expect("alice permits bob");
    b.permit(ra).await.expect("bob permits alice");
    (a, ra, b, rb)
}

/// Polls `f` until true or `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
