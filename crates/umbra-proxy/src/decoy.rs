//! What anyone who is not an admitted Umbra client sees: a website.
//!
//! Either the operator's own web server (every byte, including those already
//! read while deciding, is relayed to it), or a small built-in site that
//! answers like an ordinary HTTP/1.1 server: a home page, 404 for other
//! paths, 405 for other methods, 400 for anything that is not HTTP.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const HOME: &str = "<!doctype html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>Welcome</title>
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;color:#333}</style></head>
<body>
<h1>Welcome</h1>
<p>This is a personal server. There is nothing to see here yet.</p>
</body>
</html>
";

const NOT_FOUND: &str = "<!doctype html>
<html><head><title>404 Not Found</title></head>
<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>
";

/// Largest request head the built-in site reads.
const MAX_HEAD: usize = 8192;

/// Serves the built-in site on `stream`, `first` being bytes already read.
pub async fn serve_builtin<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    first: &[u8],
    timeout: Duration,
    now_unix: u64,
) -> std::io::Result<()> {
    let mut head = first.to_vec();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            if !looks_like_http(&head) {
                break;
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    // A visitor who says nothing gets an answer when the timeout passes.
    let _ = tokio::time::timeout(timeout, read_head).await;
    let response = respond(&head, now_unix);
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Relays the visitor to the operator's web server.
pub async fn relay_to<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    first: &[u8],
    decoy: &str,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut upstream = tokio::time::timeout(timeout, TcpStream::connect(decoy))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "decoy connect timed out")
        })??;
    upstream.write_all(first).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}

fn looks_like_http(head: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| {
        let n = m.len().min(head.len());
        head[..n] == m[..n]
    })
}

/// The response to a request head.
pub fn respond(head: &[u8], now_unix: u64) -> Vec<u8> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    let valid = matches!(version, Some(v) if v.starts_with("HTTP/1."))
        && looks_like_http(head)
        && head.windows(4).any(|w| w == b"\r\n\r\n");
    let (status, body, allow) = if !valid {
        (
            "400 Bad Request",
            "<html><body><h1>Bad Request</h1></body></html>\n",
            false,
        )
    } else {
        match (method, path) {
            (Some("GET" | "HEAD"), Some("/" | "/index.html")) => ("200 OK", HOME, false),
            (Some("GET" | "HEAD"), Some(_)) => ("404 Not Found", NOT_FOUND, false),
            _ => (
                "405 Method Not Allowed",
                "<html><body><h1>Method Not Allowed</h1></body></html>\n",
                true,
            ),
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nDate: {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        http_date(now_unix),
        body.len()
    );
    if allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if method != Some("HEAD") {
        out.push_str(body);
    }
    out.into_bytes()
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
    fn answers_like_a_web_server() {
        let ok = String::from_utf8(respond(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 784_111_777))
            .expect("utf8");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Date: Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(ok.contains("<h1>Welcome</h1>"));
        let nf = String::from_utf8(respond(b"GET /admin HTTP/1.1\r\n\r\n", 0)).expect("utf8");
        assert!(nf.starts_with("HTTP/1.1 404"));
        let head = String::from_utf8(respond(b"HEAD / HTTP/1.1\r\n\r\n", 0)).expect("utf8");
        assert!(head.starts_with("HTTP/1.1 200") && !head.contains("Welcome"));
        let bad = String::from_utf8(respond(&[0x16, 0x03, 0x01, 0, 5], 0)).expect("utf8");
        assert!(bad.starts_with("HTTP/1.1 400"));
        let post = String::from_utf8(respond(b"POST / HTTP/1.1\r\n\r\n", 0)).expect("utf8");
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
    }
}
