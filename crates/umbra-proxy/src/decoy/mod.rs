//! What anyone who is not an admitted Umbra client sees: a website.
//!
//! Either the operator's own web server (every byte, including those already
//! read while deciding, is relayed to it), or the built-in site: pages
//! generated for this proxy ([`site`]) served as a stock nginx would serve
//! them ([`http`]), keep-alive and timeouts included.
//!
//! Layout:
//! - [`site`]: the pages, generated from a seed.
//! - [`http`]: request heads and answers, without I/O.
//! - this file: the persona, serving a connection, relaying to a web server.

pub mod http;
pub mod site;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use http::Builtin;
use http::{Context, Scan};
use site::Site;

/// How long nginx waits for a request head (`client_header_timeout`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx keeps an idle connection open (`keepalive_timeout`).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// `Server` headers of stock nginx packages, one picked per proxy.
const SERVERS: &[&str] = &[
    "nginx",
    "nginx/1.18.0 (Ubuntu)",
    "nginx/1.22.1",
    "nginx/1.24.0 (Ubuntu)",
    "nginx/1.26.3",
    "nginx/1.20.1",
];

/// The built-in site of the proxy whose secret is `secret`, first started at
/// `created_unix`. The seed is one-way from the secret: the site reveals
/// nothing of it.
pub fn builtin(secret: &[u8; 32], created_unix: u64) -> Builtin {
    let seed = umbra_wire::mask::prf(secret, &[b"umbra-proxy built-in site"]);
    let server = SERVERS[usize::from(seed[31]) % SERVERS.len()];
    Builtin {
        site: Site::generate(seed, created_unix),
        server: server.to_string(),
    }
}

/// Serves the built-in site on `stream`, `first` being bytes already read
/// and `waited` the time the visitor already spent on them.
pub async fn serve_builtin<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    first: &[u8],
    site: &Builtin,
    tls: bool,
    waited: Duration,
) -> std::io::Result<()> {
    let mut buf = first.to_vec();
    let mut chunk = vec![0u8; 4096];
    let mut served = 0u32;
    loop {
        let limit = if served == 0 {
            HEADER_TIMEOUT.saturating_sub(waited)
        } else {
            KEEPALIVE_TIMEOUT
        };
        let read_head = async {
            loop {
                match http::scan(&buf) {
                    Scan::Incomplete => {}
                    done => return Ok(Some(done)),
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        // A visitor who says nothing is closed on silently, as nginx does.
        let Ok(scanned) = tokio::time::timeout(limit, read_head).await else {
            return Ok(());
        };
        let Some(scanned) = scanned? else {
            return Ok(());
        };
        let now = crate::shared::unix_now();
        let (answer, used) = match scanned {
            Scan::Head(n) => (site.answer(&buf[..n], Context { now, tls, served }), n),
            Scan::Simple(n) => (site.simple(&buf[..n]), n),
            Scan::Reject(status) => (site.reject(status, now), buf.len()),
            Scan::Incomplete => (site.reject(400, now), buf.len()),
        };
        stream.write_all(&answer.bytes).await?;
        served += 1;
        if !answer.keep_alive {
            return stream.shutdown().await;
        }
        buf.drain(..used.min(buf.len()));
        // The request's body: dropped, as a static site does.
        let mut left = answer.discard;
        let from_buf = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        buf.drain(..from_buf);
        left -= from_buf as u64;
        while left > 0 {
            let n = match tokio::time::timeout(HEADER_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            let dropped = usize::try_from(left).unwrap_or(usize::MAX).min(n);
            buf.extend_from_slice(&chunk[dropped..n]);
            left -= dropped as u64;
        }
    }
}

/// Answers plain HTTP sent to the TLS port as nginx does: reads the head,
/// then a 400 that says so, and closes.
pub async fn plain_on_tls<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    site: &Builtin,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let read_head = async {
        loop {
            match http::scan(&buf) {
                Scan::Incomplete => {}
                Scan::Reject(status) => return Ok(Some(status)),
                Scan::Head(_) | Scan::Simple(_) => return Ok(Some(497)),
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let Ok(Ok(Some(status))) = tokio::time::timeout(HEADER_TIMEOUT, read_head).await else {
        return Ok(());
    };
    let answer = site.reject(status, crate::shared::unix_now());
    stream.write_all(&answer.bytes).await?;
    stream.shutdown().await
}

/// Relays the visitor to the operator's web server.
pub async fn relay_to<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    first: &[u8],
    decoy: &str,
    timeout: Duration,
) -> std::io::Result<()> {
    let upstream = tokio::time::timeout(timeout, TcpStream::connect(decoy))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "decoy connect timed out")
        })??;
    relay_on(stream, first, upstream).await
}

/// Relays a visitor to a web server already connected: `first` (what the
/// visitor sent so far), then both ways until either side closes.
pub async fn relay_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    first: &[u8],
    mut upstream: TcpStream,
) -> std::io::Result<()> {
    upstream.write_all(first).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = umbra_daemon::time::utc(unix);
    let (h, m, s) = t.hms;
    format!(
        "{}, {:02} {} {:04} {h:02}:{m:02}:{s:02} GMT",
        DAYS[t.weekday as usize % 7],
        t.day,
        MONTHS[(t.month as usize + 11) % 12],
        t.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_proxies_two_sites() {
        let a = builtin(&[1; 32], 1_790_000_000);
        let b = builtin(&[2; 32], 1_790_000_000);
        assert_ne!(
            a.site.page("/").map(|p| &p.body),
            b.site.page("/").map(|p| &p.body)
        );
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[tokio::test]
    async fn keeps_alive_and_drops_bodies() {
        let site = builtin(&[3; 32], 1_790_000_000);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serve =
            tokio::spawn(
                async move { serve_builtin(server, b"", &site, false, Duration::ZERO).await },
            );
        client
            .write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 404 Not Found"), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
        assert!(text.contains("HTTP/1.1 200 OK") && text.contains("Connection: close"));
        serve.await.expect("join").expect("served");
    }
}
