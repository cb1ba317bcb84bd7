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
