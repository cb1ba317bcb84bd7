//! The Prometheus endpoint every daemon serves on loopback.
//!
//! A deliberately tiny HTTP/1.1 responder: `GET /metrics` gets the text
//! exposition, anything else 404. Metrics are aggregate counters; nothing
//! about a client (no address, no name) ever appears in them.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Something with counters to expose.
pub trait Render: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn render(&self) -> String;
}

/// Appends one metric (`# HELP`, `# TYPE` and the sample) to `out`.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// Appends a counter family with one label (`name{label="value"} n` per
/// row) to `out`.
pub fn write_family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (&'a str, u64)>,
) {
    use std::fmt::Write;
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve<M: Render>(listener: TcpListener, metrics: Arc<M>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &*metrics)).await;
        });
    }
}

async fn answer<M: Render>(mut stream: TcpStream, metrics: &M) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = if buf.starts_with(b"GET /metrics ") || buf.starts_with(b"GET /metrics?") {
        ("200 OK", metrics.render())
    } else {
        ("404 Not Found", "not found\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Render for Fixed {
        fn render(&self) -> String {
            let mut out = String::new();
            write_metric(&mut out, "umbra_example_total", "counter", "An example.", 3);
            out
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_404s_the_rest() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, Arc::new(Fixed)));
        for (path, want) in [
            ("/metrics", "umbra_example_total 3"),
            ("/", "404 Not Found"),
        ] {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut got = String::new();
            s.read_to_string(&mut got).await.expect("read");
            assert!(got.contains(want), "{got}");
        }
    }
}
