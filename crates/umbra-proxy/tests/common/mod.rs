//! What the proxy's integration tests share: a recording, echoing upstream,
//! an in-process proxy on loopback, and reading its metrics.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_proxy::{Proxy, ProxyConfig};

/// An upstream that records every connection's bytes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let index = {
                    let mut r = record.lock().expect("lock");
                    r.push(Vec::new());
                    r.len() - 1
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().expect("lock")[index].extend_from_slice(&buf[..n]);
                    // Echo, so clients can see the path works both ways.
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Upstream { addr, seen }
}

pub struct Running {
    pub tls: SocketAddr,
    pub plain: SocketAddr,
    pub metrics: SocketAddr,
    pub secret: [u8; 32],
    pub _dir: tempfile::TempDir,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start(tweak: impl FnOnce(&mut ProxyConfig)) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ProxyConfig {
        tls_listen: vec!["127.0.0.1:0".parse().expect("addr")],
        plain_listen: vec!["127.0.0.1:0".parse().expect("addr")],
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("proxy"),
        handshake_timeout_secs: 1,
        upstream: Some("127.0.0.1:1".into()),
        ..ProxyConfig::default()
    };
    tweak(&mut config);
    let proxy = Proxy::bind(config).await.expect("bind proxy");
    let (tls, plain) = (
        proxy
            .tls_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| "127.0.0.1:1".parse().expect("addr")),
        proxy
            .plain_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| "127.0.0.1:1".parse().expect("addr")),
    );
    let metrics = proxy.metrics_addr().expect("metrics");
    let secret = proxy.link().secret;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.run(async {
        let _ = stopped.await;
    }));
    Running {
        tls,
        plain,
        metrics,
        secret,
        _dir: dir,
        stop: Some(stop),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let page = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    text(&page)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The link to a running proxy's plain port.
pub fn plain_link(addr: SocketAddr, secret: [u8; 32]) -> umbra_wire::proxy::ProxyLink {
    umbra_wire::proxy::ProxyLink {
        host: addr.ip().to_string(),
        port: addr.port(),
        secret,
        tls: false,
        front: None,
    }
}

/// A plain-port connection opened as a client opens it: the upgrade made
/// with `nonce`, the 101, then the masked stream.
pub async fn admitted_plain(
    addr: SocketAddr,
    secret: [u8; 32],
    nonce: u8,
    target: umbra_wire::proxy::Target,
) -> umbra_net::masked::Masked<TcpStream> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let link = plain_link(addr, secret);
    umbra_net::masked::Masked::open(s, &link, target, now(), [nonce; 16], Duration::from_secs(5))
        .await
        .expect("admitted")
}

/// The upgrade request a client makes with `nonce` at `time` (a probe, or a
/// replay of a captured first flight).
pub fn upgrade_bytes(secret: &[u8; 32], time: u64, nonce: u8) -> Vec<u8> {
    umbra_wire::upgrade::request(
        secret,
        "127.0.0.1",
        time,
        [nonce; 16],
        umbra_wire::proxy::Target::Messaging,
    )
    .into_bytes()
}

/// A CA named `ca_name` (`ca.pem`) and a certificate it signed for
/// localhost and 127.0.0.1 (`STEM.pem`, `STEM.key`), written to `dir`.
pub fn ca_and_leaf(dir: &std::path::Path, ca_name: &str, stem: &str) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca, &ca_key))
        .expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join(format!("{stem}.pem")), leaf.pem()).expect("write");
    std::fs::write(dir.join(format!("{stem}.key")), leaf_key.serialize_pem()).expect("write");
}
