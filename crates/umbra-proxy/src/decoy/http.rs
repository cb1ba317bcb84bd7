//! The built-in site's HTTP/1.x, without I/O: when a request head is
//! complete, and what to answer to it.
//!
//! It answers as a stock nginx serving static files does, because that is
//! the most common web server there is: the same headers in the same order,
//! its error pages, `ETag` and `Last-Modified` validators and `304`s, single
//! byte ranges (`206`, `416`), `405` for methods a static site does not
//! take, `301` for a directory without its slash and `403` for one with it,
//! `400` for what is not HTTP (at the first byte that cannot be, as nginx
//! does), `414` and `400` for oversize heads, `505` for HTTP/2 and later,
//! HTTP/0.9 simple requests, HTTP/1.0 closing unless asked to keep alive,
//! and HTTP/1.1 keeping alive unless asked to close, up to 1000 requests.

use super::site::{Page, Site};

/// Longest request line (nginx's `large_client_header_buffers` size).
const MAX_LINE: usize = 8192;
/// Longest request head in all.
const MAX_HEAD: usize = 4 * 8192;
/// Requests served on one connection before it is closed (nginx's default).
pub const MAX_REQUESTS: u32 = 1000;

/// How far a request head has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Not complete yet; nothing wrong so far.
    Incomplete,
    /// A complete head of this many bytes.
    Head(usize),
    /// An HTTP/0.9 request line of this many bytes (no headers follow).
    Simple(usize),
    /// Cannot be HTTP, or too big: answer with this status and close.
    Reject(u16),
}

fn method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'_' || b == b'-'
}

/// Where a request head ends, or why it never will. Empty lines before the
/// request line are skipped, as nginx does.
pub fn scan(buf: &[u8]) -> Scan {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    // The method: capital letters up to a space.
    let mut i = 0;
    while i < line.len() && method_char(line[i]) {
        i += 1;
    }
    if i == line.len() {
        return if line.len() > MAX_LINE {
            Scan::Reject(414)
        } else {
            Scan::Incomplete
        };
    }
    if i == 0 || line[i] != b' ' {
        return Scan::Reject(400);
    }
    // The target starts with `/` or is absolute (`http://...`).
    match line.get(i + 1) {
        None => return Scan::Incomplete,
        Some(b'/') => {}
        Some(c) if c.is_ascii_alphabetic() => {}
        Some(_) => return Scan::Reject(400),
    }
    let Some(eol) = line.iter().position(|&b| b == b'\n') else {
        return if line.len() > MAX_LINE {
            Scan::Reject(414)
        } else {
            Scan::Incomplete
        };
    };
    if eol > MAX_LINE {
        return Scan::Reject(414);
    }
    let request_line = trim_cr(&line[..eol]);
    let words: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    match words.len() {
        2 => return Scan::Simple(start + eol + 1),
        3 if words[2].starts_with(b"HTTP/") => {}
        _ => return Scan::Reject(400),
    }
    // Headers: up to an empty line.
    let mut at = eol + 1;
    loop {
        let rest = &line[at..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return if rest.len() > MAX_LINE || start + line.len() > MAX_HEAD {
                Scan::Reject(494)
            } else {
                Scan::Incomplete
            };
        };
        if n > MAX_LINE {
            return Scan::Reject(494);
        }
        at += n + 1;
        if start + at > MAX_HEAD {
            return Scan::Reject(494);
        }
        if trim_cr(&rest[..n]).is_empty() {
            return Scan::Head(start + at);
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What to send back, and what the connection does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response bytes.
    pub bytes: Vec<u8>,
    /// Whether to read another request afterwards.
    pub keep_alive: bool,
    /// Request body bytes to read and drop before the next request.
    pub discard: u64,
}

/// The site with the name it serves under.
#[derive(Debug, Clone)]
pub struct Builtin {
    /// The pages.
    pub site: Site,
    /// The `Server` header (and error page signature), e.g. `nginx/1.22.1`.
    pub server: String,
}

/// Where a request came in: for redirects and the connection's history.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Now, Unix seconds.
    pub now: u64,
    /// Whether the visitor came over TLS.
    pub tls: bool,
    /// Requests already answered on this connection.
    pub served: u32,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 | 494 | 497 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Not Allowed",
        414 => "Request-URI Too Large",
        416 => "Requested Range Not Satisfiable",
        502 => "Bad Gateway",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

impl Builtin {
    /// What an admitted plain-port client gets: the 101 this nginx sends
    /// when it passes a WebSocket upgrade on to a backend (its own headers
    /// first, then the backend's), with `accept` as the
    /// `Sec-WebSocket-Accept` value, at `now`.
    pub fn upgraded(&self, accept: &str, now: u64) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nServer: {}\r\nDate: {}\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
            self.server,
            super::http_date(now)
        )
        .into_bytes()
    }

    /// nginx's page for an error status. 494 and 497 are nginx's own
    /// codes for two kinds of 400, which say why on a second line.
    fn error_page(&self, status: u16) -> String {
        let why = match status {
            494 => Some("Request Header Or Cookie Too Large"),
            497 => Some("The plain HTTP request was sent to HTTPS port"),
            _ => None,
        };
        let (title, h1) = match why {
            Some(why) => (
                format!("400 {why}"),
                format!("<center><h1>400 Bad Request</h1></center>\r\n<center>{why}</center>"),
            ),
            None => {
                let title = format!("{status} {}", reason(status));
                let h1 = format!("<center><h1>{title}</h1></center>");
                (title, h1)
            }
        };
        format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n{h1}\r\n<hr><center>{}</center>\r\n</body>\r\n</html>\r\n",
            self.server
        )
    }

    fn status_line(&self, status: u16, now: u64) -> String {
        let code = if matches!(status, 494 | 497) {
            400
        } else {
            status
        };
        format!(
            "HTTP/1.1 {code} {}\r\nServer: {}\r\nDate: {}\r\n",
            reason(status),
            self.server,
            super::http_date(now)
        )
    }

    /// What this nginx answers an upgrade whose backend failed before
    /// answering: its 502 page, and the connection closed.
    pub fn bad_gateway(&self, now: u64) -> Vec<u8> {
        self.error(502, now, false, None, true).bytes
    }

    /// The answer to a head that [`scan`] refused.
    pub fn reject(&self, status: u16, now: u64) -> Answer {
        self.error(status, now, false, None, true)
    }

    fn error(
        &self,
        status: u16,
        now: u64,
        keep_alive: bool,
        extra: Option<String>,
        body: bool,
    ) -> Answer {
        let page = self.error_page(status);
        let mut out = self.status_line(status, now);
        out.push_str(&format!(
            "Content-Type: text/html\r\nContent-Length: {}\r\nConnection: {}\r\n",
            page.len(),
            if keep_alive { "keep-alive" } else { "close" }
        ));
        if let Some(extra) = extra {
            out.push_str(&extra);
        }
        out.push_str("\r\n");
        if body {
            out.push_str(&page);
        }
        Answer {
            bytes: out.into_bytes(),
            keep_alive,
            discard: 0,
        }
    }

    /// The answer to an HTTP/0.9 request line: the page itself, no headers.
    pub fn simple(&self, line: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(line.trim_ascii());
        let mut words = text.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let bytes = match (method, self.site.page(&path_of(target))) {
            ("GET", Some(page)) => page.body.clone(),
            ("GET", None) => self.error_page(404).into_bytes(),
            _ => self.error_page(400).into_bytes(),
        };
        Answer {
            bytes,
            keep_alive: false,
            discard: 0,
        }
    }

    /// The answer to a complete request head.
    pub fn answer(&self, head: &[u8], cx: Context) -> Answer {
        let text = String::from_utf8_lossy(head);
        let mut lines = text
            .trim_start_matches(['\r', '\n'])
            .split('\n')
            .map(|l| l.trim_end_matches('\r'));
        let request = lines.next().unwrap_or("");
        let mut words = request.split(' ');
        let (method, target, version) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let Some((major, minor)) = version
            .strip_prefix("HTTP/")
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        else {
            return self.reject(400, cx.now);
        };
        if major >= 2 {
            return self.reject(505, cx.now);
        }
        if major == 0 {
            return self.reject(400, cx.now);
        }
        let headers: Vec<(String, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
            .collect();
        let mut req = Request {
            method,
            path: path_of(target),
            headers,
            keep_alive: false,
        };
        let header = |name: &str| req.header(name);
        if minor >= 1 && header("host").is_none() {
            return self.reject(400, cx.now);
        }
        let connection = header("connection").unwrap_or("").to_ascii_lowercase();
        let mut keep_alive = if minor >= 1 {
            !connection.contains("close")
        } else {
            connection.contains("keep-alive")
        };
        if cx.served + 1 >= MAX_REQUESTS {
            keep_alive = false;
        }
        let mut discard = 0;
        match header("content-length").map(str::parse::<u64>) {
            Some(Ok(n)) => discard = n,
            Some(Err(_)) => return self.reject(400, cx.now),
            None => {}
        }
        if header("transfer-encoding").is_some() {
            // A body whose length we would have to parse: answer, then close.
            keep_alive = false;
        }
        if req.path.contains("/../") || req.path.ends_with("/..") {
            return self.reject(400, cx.now);
        }
        req.keep_alive = keep_alive;
        let mut answer = self.resource(&req, cx);
        answer.discard = discard;
        answer
    }

    fn resource(&self, req: &Request<'_>, cx: Context) -> Answer {
        let (now, method, path, keep_alive) =
            (cx.now, req.method, req.path.as_str(), req.keep_alive);
        let body = method != "HEAD";
        let header = |name: &str| req.header(name);
        if !matches!(method, "GET" | "HEAD" | "POST") {
            return self.error(405, now, keep_alive, None, body);
        }
        let page = self.site.page(path);
        let is_dir = |p: &str| {
            let prefix = format!("{}/", p.trim_end_matches('/'));
            self.site
                .pages()
                .iter()
                .any(|page| page.path.starts_with(&prefix))
        };
        let Some(page) = page else {
            if path.ends_with('/') && is_dir(path) {
                return self.error(403, now, keep_alive, None, body);
            }
            if is_dir(path) {
                let scheme = if cx.tls { "https" } else { "http" };
                let host = header("host").unwrap_or("localhost");
                let location = format!("Location: {scheme}://{host}{path}/\r\n");
                return self.error(301, now, keep_alive, Some(location), body);
            }
            return self.error(404, now, keep_alive, None, body);
        };
        if method == "POST" {
            return self.error(405, now, keep_alive, None, body);
        }
        let modified = super::http_date(page.modified);
        let etag = page.etag();
        if header("if-none-match").is_some_and(|v| v == etag || v == "*")
            || (header("if-none-match").is_none()
                && header("if-modified-since").is_some_and(|v| v == modified))
        {
            let mut out = self.status_line(304, now);
            out.push_str(&format!(
                "Last-Modified: {modified}\r\nConnection: {}\r\nETag: {etag}\r\n\r\n",
                conn(keep_alive)
            ));
            return Answer {
                bytes: out.into_bytes(),
                keep_alive,
                discard: 0,
            };
        }
        let len = page.body.len() as u64;
        let range = header("range")
            .filter(|_| header("if-range").is_none_or(|v| v == etag || v == modified))
            .and_then(|r| parse_range(r, len));
        match range {
            Some(Range::Unsatisfiable) => {
                let extra = format!("Content-Range: bytes */{len}\r\n");
                self.error(416, now, keep_alive, Some(extra), body)
            }
            Some(Range::Bytes(from, to)) => {
                let mut out = self.status_line(206, now);
                out.push_str(&format!(
                    "Content-Type: {}\r\nContent-Length: {}\r\nLast-Modified: {modified}\r\nConnection: {}\r\nETag: {etag}\r\nContent-Range: bytes {from}-{to}/{len}\r\n\r\n",
                    page.content_type,
                    to - from + 1,
                    conn(keep_alive)
                ));
                let mut bytes = out.into_bytes();
                if body {
                    bytes.extend_from_slice(slice(page, from, to));
                }
                Answer {
                    bytes,
                    keep_alive,
                    discard: 0,
                }
            }
            None => {
                let mut out = self.status_line(200, now);
                out.push_str(&format!(
                    "Content-Type: {}\r\nContent-Length: {len}\r\nLast-Modified: {modified}\r\nConnection: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n\r\n",
                    page.content_type,
                    conn(keep_alive)
                ));
                let mut bytes = out.into_bytes();
                if body {
                    bytes.extend_from_slice(&page.body);
                }
                Answer {
                    bytes,
                    keep_alive,
                    discard: 0,
                }
            }
        }
    }
}

/// A parsed request, as far as a static site cares.
struct Request<'a> {
    method: &'a str,
    /// The decoded path, without query.
    path: String,
    /// Header names lower-cased, values trimmed.
    headers: Vec<(String, &'a str)>,
    keep_alive: bool,
}

impl<'a> Request<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

fn conn(keep_alive: bool) -> &'static str {
    if keep_alive { "keep-alive" } else { "close" }
}

fn slice(page: &Page, from: u64, to: u64) -> &[u8] {
    let (from, to) = (
        usize::try_from(from).unwrap_or(usize::MAX),
        usize::try_from(to).unwrap_or(usize::MAX),
    );
    page.body.get(from..=to).unwrap_or(&[])
}

/// The path of a request target: no query, no fragment, `%XX` decoded, the
/// scheme and host of an absolute target dropped.
fn path_of(target: &str) -> String {
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let raw = target.split(['?', '#']).next().unwrap_or("/");
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Range {
    Bytes(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range of a body `len` long; several ranges or another unit
/// get the whole body.
fn parse_range(value: &str, len: u64) -> Option<Range> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (from, to) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 {
                return Some(Range::Unsatisfiable);
            }
            (len.saturating_sub(n), len.checked_sub(1)?)
        }
        (from, "") => (from.parse().ok()?, len.saturating_sub(1)),
        (from, to) => {
            let (from, to): (u64, u64) = (from.parse().ok()?, to.parse().ok()?);
            if to < from {
                return None;
            }
            (from, to.min(len.saturating_sub(1)))
        }
    };
    if from >= len {
        return Some(Range::Unsatisfiable);
    }
    Some(Range::Bytes(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Builtin {
        Builtin {
            site: Site::generate([7; 32], 1_790_000_000),
            server: "nginx/1.22.1".into(),
        }
    }

    fn cx() -> Context {
        Context {
            now: 784_111_777,
            tls: false,
            served: 0,
        }
    }

    fn ask(b: &Builtin, req: &str) -> (String, Answer) {
        let a = b.answer(req.as_bytes(), cx());
        (String::from_utf8_lossy(&a.bytes).into_owned(), a)
    }

    #[test]
    fn scans_like_nginx() {
        assert_eq!(scan(b"GE"), Scan::Incomplete);
        assert_eq!(scan(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n"), Scan::Incomplete);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Scan::Head(27));
        assert_eq!(scan(b"GET / HTTP/1.0\n\n"), Scan::Head(16));
        assert_eq!(scan(b"GET /\r\n"), Scan::Simple(7));
        // Refused at the first byte that cannot be HTTP.
        assert_eq!(scan(&[0x16, 0x03, 0x01]), Scan::Reject(400));
        assert_eq!(scan(b"get / HTTP/1.1"), Scan::Reject(400));
        assert_eq!(scan(b"GET  "), Scan::Reject(400));
        assert_eq!(scan(&vec![b'G'; MAX_LINE + 1]), Scan::Reject(414));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_LINE + 1));
        assert_eq!(scan(big.as_bytes()), Scan::Reject(494));
    }

    #[test]
    fn answers_like_nginx() {
        let b = builtin();
        let (ok, a) = ask(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(a.keep_alive);
        let lines: Vec<&str> = ok.split("\r\n").take(10).collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert_eq!(lines[1], "Server: nginx/1.22.1");
        assert_eq!(lines[2], "Date: Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(lines[3], "Content-Type: text/html");
        assert!(lines[4].starts_with("Content-Length: "));
        assert!(lines[5].starts_with("Last-Modified: "));
        assert_eq!(lines[6], "Connection: keep-alive");
        assert!(lines[7].starts_with("ETag: \""));
        assert_eq!(lines[8], "Accept-Ranges: bytes");

        let (head, _) = ask(&b, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n") && head.starts_with("HTTP/1.1 200"));
        let (old, a) = ask(&b, "GET / HTTP/1.0\r\n\r\n");
        assert!(!a.keep_alive && old.contains("Connection: close"));
        let (_, a) = ask(&b, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(a.keep_alive);
        let (nf, a) = ask(&b, "GET /wp-login.php HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n") && a.keep_alive);
        assert!(nf.ends_with(
            "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
        ));
        let (na, _) = ask(&b, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(na.starts_with("HTTP/1.1 405 Not Allowed\r\n") && !na.contains("Allow:"));
        let (post, a) = ask(
            &b,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405") && a.discard == 5);
        let (nohost, a) = ask(&b, "GET / HTTP/1.1\r\n\r\n");
        assert!(nohost.starts_with("HTTP/1.1 400 Bad Request") && !a.keep_alive);
        let (v2, _) = ask(&b, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
        assert!(v2.starts_with("HTTP/1.1 505"));
    }

    #[test]
    fn ranges_validators_and_directories() {
        let b = builtin();
        let home = b.site.page("/").expect("home").clone();
        let (part, _) = ask(&b, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n");
        assert!(
            part.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{part}"
        );
        assert!(part.contains(&format!("Content-Range: bytes 0-9/{}", home.body.len())));
        assert!(part.ends_with(std::str::from_utf8(&home.body[..10]).expect("utf8")));
        let (tail, _) = ask(&b, "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\n\r\n");
        assert!(tail.contains("Content-Length: 5\r\n"));
        let (bad, _) = ask(
            &b,
            "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=99999-\r\n\r\n",
        );
        assert!(bad.starts_with("HTTP/1.1 416") && bad.contains("Content-Range: bytes */"));
        let etag = home.etag();
        let (same, _) = ask(
            &b,
            &format!("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
        );
        assert!(same.starts_with("HTTP/1.1 304 Not Modified") && same.ends_with("\r\n\r\n"));
        let post = b
            .site
            .pages()
            .iter()
            .find(|p| p.path.matches('/').count() == 2)
            .expect("a post");
        let dir = post.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        let (moved, _) = ask(
            &b,
            &format!("GET {dir} HTTP/1.1\r\nHost: h.example\r\n\r\n"),
        );
        assert!(moved.starts_with("HTTP/1.1 301"), "{moved}");
        assert!(moved.contains(&format!("Location: http://h.example{dir}/\r\n")));
        let (forbidden, _) = ask(&b, &format!("GET {dir}/ HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(forbidden.starts_with("HTTP/1.1 403 Forbidden"));
        let simple = b.simple(b"GET /\r\n");
        assert_eq!(simple.bytes, home.body);
    }
}
