//! The plain ports' first flight: an ordinary WebSocket upgrade that only a
//! holder of the link's secret can make, without I/O.
//!
//! On a plain port (80, 5222) there is no TLS to hide what a client sends
//! first, and a censor's filter reads it. A stream that is random from its
//! first byte is what China's filter blocks as "fully encrypted" (Wu et
//! al., USENIX Security 2023), and the old preamble (a version byte and the
//! time in clear) was matched without any probe at all. So a client opens
//! with what many apps send: an HTTP/1.1 WebSocket upgrade, with the header
//! set and order of a common WebSocket library (tungstenite):
//!
//! ```text
//! GET /PATH?PARAM=TOKEN HTTP/1.1
//! Host: HOST[:PORT]
//! Connection: Upgrade
//! Upgrade: websocket
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Key: base64(NONCE)
//! cookie: NAME=base64url(EARLY)
//! ```
//!
//! - NONCE is 16 random bytes, exactly what a WebSocket key is.
//! - PATH and PARAM are picked from common words by the link's secret, so
//!   they are the same for every client of one proxy and differ between
//!   proxies: nothing here is constant across Umbra.
//! - TOKEN is 24 bytes in base64url (32 characters, like any session
//!   token): the unix time XOR a pad (HMAC of the secret and the nonce), then
//!   a 16-byte tag, HMAC of the secret over the nonce, the time and the
//!   target. Without the secret it is indistinguishable from random; with
//!   it, the proxy recovers the time and checks the tag (trying both
//!   targets, so the target is hidden too).
//! - EARLY, when there is a cookie, is the client's first write (its first
//!   Noise message; any first write that fits), already masked
//!   ([`crate::mask`]): what the client would otherwise send after waiting
//!   for the 101. Carried in the request, it costs no round trip, and the
//!   client still sends nothing before the answer, as RFC 6455 requires.
//!   The cookie's name is picked from common ones by the secret, and its
//!   header is written in lower case after the others, as tungstenite writes
//!   a header an application adds.
//!
//! The proxy decides when the head is complete, as a web server would, and
//! answers an admitted client `101 Switching Protocols` with the
//! `Sec-WebSocket-Accept` that RFC 6455 derives from the key: at once when
//! the request carried nothing, or, when it carried the client's first
//! write, together with the upstream's first answer to it, as nginx sends
//! the 101 only once its backend has answered. Anything else,
//! including a replayed or stale request, goes to the website, which serves
//! it the page for that path (a 404). After the 101, [`crate::mask`] hides
//! what follows.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::mask::Prf;
use crate::proxy::{Target, Verified};

/// The longest request head a proxy reads before deciding it is not one.
pub const MAX_HEAD: usize = 4096;
/// The longest 101 answer a client reads.
pub const MAX_ANSWER: usize = 4096;
const LABEL_SHAPE: &[u8] = b"umbra-proxy-v2 shape";
const LABEL_PAD: &[u8] = b"umbra-proxy-v2 time pad";
const LABEL_TAG: &[u8] = b"umbra-proxy-v2 tag";
const TOKEN_BYTES: usize = 24;
/// The most bytes of a client's first write that ride in the request (its
/// first Noise message is well under this, padding included).
pub const EARLY_MAX: usize = 1536;
const TAG_BYTES: usize = 16;
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const PATHS: &[&str] = &[
    "/ws",
    "/socket",
    "/websocket",
    "/live",
    "/stream",
    "/realtime",
    "/api/ws",
    "/api/v1/stream",
    "/v2/socket",
    "/connect",
    "/events",
    "/updates",
    "/chat/ws",
    "/sync",
    "/push",
    "/notifications",
];
const PARAMS: &[&str] = &[
    "token",
    "t",
    "auth",
    "access_token",
    "session",
    "sid",
    "ticket",
    "key",
];

const COOKIES: &[&str] = &[
    "session",
    "sid",
    "_session",
    "auth",
    "remember_token",
    "state",
    "ctx",
    "_s",
];

/// The name of the cookie that carries a client's first write to the proxy
/// whose secret is `secret`.
pub fn cookie_name(secret: &[u8; 32]) -> &'static str {
    Shape::of(&Prf::new(secret)).cookie
}

/// A proxy's path, token parameter and cookie name, all from one PRF
/// output.
struct Shape {
    path: &'static str,
    param: &'static str,
    cookie: &'static str,
}

impl Shape {
    fn of(secret: &Prf) -> Self {
        let h = secret.eval(&[LABEL_SHAPE]);
        Self {
            path: PATHS[usize::from(h[0]) % PATHS.len()],
            param: PARAMS[usize::from(h[1]) % PARAMS.len()],
            cookie: COOKIES[usize::from(h[2]) % COOKIES.len()],
        }
    }
}

/// The request path and token parameter of the proxy whose secret is
/// `secret`.
pub fn shape(secret: &[u8; 32]) -> (&'static str, &'static str) {
    let shape = Shape::of(&Prf::new(secret));
    (shape.path, shape.param)
}

fn target_byte(target: Target) -> u8 {
    match target {
        Target::Messaging => 0,
        Target::Relay => 1,
    }
}

fn tag(secret: &Prf, nonce: &[u8; 16], time: u64, target: Target) -> [u8; 32] {
    secret.eval(&[
        LABEL_TAG,
        nonce,
        &time.to_be_bytes(),
        &[target_byte(target)],
    ])
}

fn time_pad(secret: &Prf, nonce: &[u8; 16]) -> [u8; 8] {
    let mut pad = [0u8; 8];
    pad.copy_from_slice(&secret.eval(&[LABEL_PAD, nonce])[..8]);
    pad
}

/// The value of the `Host` header for `host` and `port`, as a WebSocket
/// library writes it (the port only when not 80).
pub fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// The upgrade request a client sends first, carrying nothing else.
pub fn request(
    secret: &[u8; 32],
    host: &str,
    now_unix: u64,
    nonce: [u8; 16],
    target: Target,
) -> String {
    request_with(secret, host, now_unix, nonce, target, &[])
}

/// The upgrade request a client sends first, carrying `early` (its first
/// write, masked; at most [`EARLY_MAX`] bytes, and none if empty) in a cookie.
pub fn request_with(
    secret: &[u8; 32],
    host: &str,
    now_unix: u64,
    nonce: [u8; 16],
    target: Target,
    early: &[u8],
) -> String {
    let secret = &Prf::new(secret);
    let Shape {
        path,
        param,
        cookie,
    } = Shape::of(secret);
    let mut token = [0u8; TOKEN_BYTES];
    let pad = time_pad(secret, &nonce);
    for (i, b) in now_unix.to_be_bytes().iter().enumerate() {
        token[i] = b ^ pad[i];
    }
    token[8..].copy_from_slice(&tag(secret, &nonce, now_unix, target)[..TAG_BYTES]);
    let cookie = if early.is_empty() {
        String::new()
    } else {
        format!("cookie: {cookie}={}\r\n", URL_SAFE_NO_PAD.encode(early))
    };
    format!(
        "GET {path}?{param}={} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n{cookie}\r\n",
        URL_SAFE_NO_PAD.encode(token),
        STANDARD.encode(nonce)
    )
}

/// Where in an admitted request head its early bytes are: the cookie's
/// value, base64url, from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Early {
    /// First character of the value.
    pub start: usize,
    /// One past its last character.
    pub end: usize,
}

impl Early {
    /// The early bytes (still masked) out of `head`, the admitted request.
    pub fn decode(&self, head: &[u8]) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(head.get(self.start..self.end)?).ok()
    }
}

/// The `Sec-WebSocket-Accept` value for a key made of `nonce` (RFC 6455).
pub fn accept_value(nonce: &[u8; 16]) -> String {
    let key = STANDARD.encode(nonce);
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID);
    STANDARD.encode(h.finalize())
}

/// What a plain port's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// The head is not complete and could still be an admitted client's.
    NeedMore,
    /// Not an admitted client's: a web visitor.
    NotAdmitted,
    /// A request with a valid token; `head_len` bytes long.
    Valid {
        /// What the token proved.
        verified: Verified,
        /// Length of the request head, blank line included.
        head_len: usize,
        /// The client's first write, when the request carries it.
        early: Option<Early>,
    },
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The early bytes' place in `head`: the value of a cookie named `name`,
/// when it is the request's only cookie. `Err` when the request has a
/// cookie header that is not one a client makes.
fn early_in(head: &str, name: &str) -> Result<Option<Early>, ()> {
    let mut found = None;
    let mut at = 0;
    for line in head.split_inclusive("\r\n") {
        let line_at = at;
        at += line.len();
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if !n.eq_ignore_ascii_case("cookie") {
            continue;
        }
        let value = v.trim_end_matches("\r\n").trim_start();
        let Some(b64) = value
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            return Err(());
        };
        let mut plain = [0u8; EARLY_MAX];
        let decodes = b64.len() <= EARLY_MAX / 3 * 4
            && URL_SAFE_NO_PAD
                .decode_slice(b64, &mut plain)
                .is_ok_and(|n| n > 0);
        if found.is_some() || !decodes {
            return Err(());
        }
        let end = line_at + n.len() + 1 + (v.len() - v.trim_start().len()) + value.len();
        found = Some(Early {
            start: end - b64.len(),
            end,
        });
    }
    Ok(found)
}

/// What a proxy expects on its plain ports, worked out once from its
/// secret.
#[derive(Clone)]
pub struct Expect {
    secret: Prf,
    /// The request line up to the token.
    start: String,
    /// The early bytes' cookie.
    cookie: &'static str,
}

impl Expect {
    /// The expectation of the proxy whose secret is `secret`.
    pub fn new(secret: &[u8; 32]) -> Self {
        let secret = Prf::new(secret);
        let Shape {
            path,
            param,
            cookie,
        } = Shape::of(&secret);
        Self {
            secret,
            start: format!("GET {path}?{param}="),
            cookie,
        }
    }

    /// The secret, keyed for its PRF (the plain ports' masks use it).
    pub fn prf(&self) -> &Prf {
        &self.secret
    }

    /// Examines a plain port's first bytes (constant time in the tag).
    pub fn peek(&self, first: &[u8]) -> Peek {
        peek_for(self, first)
    }
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expect")
    }
}

/// Examines a plain port's first bytes (constant time in the tag).
pub fn peek(secret: &[u8; 32], first: &[u8]) -> Peek {
    Expect::new(secret).peek(first)
}

fn peek_for(expect: &Expect, first: &[u8]) -> Peek {
    let (secret, start) = (&expect.secret, expect.start.as_str());
    let n = first.len().min(start.len());
    if first[..n] != start.as_bytes()[..n] {
        return Peek::NotAdmitted;
    }
    let Some(head_len) = find_blank_line(&first[..first.len().min(MAX_HEAD)]) else {
        return if first.len() >= MAX_HEAD {
            Peek::NotAdmitted
        } else {
            Peek::NeedMore
        };
    };
    let Ok(head) = std::str::from_utf8(&first[..head_len]) else {
        return Peek::NotAdmitted;
    };
    let Some(rest) = head.get(start.len()..) else {
        return Peek::NotAdmitted;
    };
    let Some((token, "HTTP/1.1")) = rest
        .split_once("\r\n")
        .and_then(|(line, _)| line.split_once(' '))
    else {
        return Peek::NotAdmitted;
    };
    let Some(nonce) = header(head, "Sec-WebSocket-Key")
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|k| <[u8; 16]>::try_from(k).ok())
    else {
        return Peek::NotAdmitted;
    };
    let Some(token) = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|t| <[u8; TOKEN_BYTES]>::try_from(t).ok())
    else {
        return Peek::NotAdmitted;
    };
    let pad = time_pad(secret, &nonce);
    let mut time = [0u8; 8];
    for i in 0..8 {
        time[i] = token[i] ^ pad[i];
    }
    let unix_time = u64::from_be_bytes(time);
    // Messaging first: most connections are, and a match ends the search
    // (which tells a prober nothing: it has no valid token).
    let found = [Target::Messaging, Target::Relay]
        .into_iter()
        .find(|&target| {
            let expected = tag(secret, &nonce, unix_time, target);
            bool::from(subtle::ConstantTimeEq::ct_eq(
                &expected[..TAG_BYTES],
                &token[8..],
            ))
        });
    let Some(target) = found else {
        return Peek::NotAdmitted;
    };
    let Ok(early) = early_in(head, expect.cookie) else {
        return Peek::NotAdmitted;
    };
    Peek::Valid {
        verified: Verified {
            unix_time,
            nonce,
            target,
        },
        head_len,
        early,
    }
}

/// Why a proxy's answer to the upgrade was not an admission.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    /// The answer is not a 101 with the right accept value: the proxy served
    /// its website instead.
    #[error(
        "the proxy turned this connection away: its link has changed (ask for a new one) or this device's clock is more than two minutes off"
    )]
    TurnedAway,
    /// The answer's head is longer than any 101 would be.
    #[error("the proxy's answer is not one an Umbra proxy sends")]
    TooLong,
    /// The proxy answered 502: it could not reach its server.
    #[error(
        "the proxy could not reach its server (it answered 502 Bad Gateway): try again later, or tell whoever runs the proxy"
    )]
    ServerUnreachable,
    /// The proxy closed the connection before any answer.
    #[error(
        "the proxy closed the connection without answering: it may be at its connection limit, or its server is down"
    )]
    Closed,
}

/// Reads the proxy's answer to a request made with `nonce`: `Ok(None)` while
/// the head is incomplete, `Ok(Some(len))` for an admission whose head is
/// `len` bytes long (what follows is the masked stream).
pub fn answer(nonce: &[u8; 16], bytes: &[u8]) -> Result<Option<usize>, AnswerError> {
    let Some(len) = find_blank_line(bytes) else {
        return if bytes.len() >= MAX_ANSWER {
            Err(AnswerError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&bytes[..len]).map_err(|_| AnswerError::TurnedAway)?;
    if head.starts_with("HTTP/1.1 502 ") {
        return Err(AnswerError::ServerUnreachable);
    }
    let switching = head.starts_with("HTTP/1.1 101 ");
    let accepted = header(head, "Sec-WebSocket-Accept") == Some(accept_value(nonce).as_str());
    if switching && accepted {
        Ok(Some(len))
    } else {
        Err(AnswerError::TurnedAway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [u8; 32] = [3; 32];

    #[test]
    fn a_request_verifies_only_with_the_secret_and_whole() {
        let r = request(
            &S,
            "proxy.example.org",
            1_800_000_000,
            [5; 16],
            Target::Relay,
        );
        let bytes = r.as_bytes();
        let want = Peek::Valid {
            verified: Verified {
                unix_time: 1_800_000_000,
                nonce: [5; 16],
                target: Target::Relay,
            },
            head_len: bytes.len(),
            early: None,
        };
        assert_eq!(peek(&S, bytes), want);
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"early");
        assert_eq!(peek(&S, &more), want);
        for cut in 0..bytes.len() {
            assert_eq!(peek(&S, &bytes[..cut]), Peek::NeedMore, "cut {cut}");
        }
        assert_eq!(peek(&[4; 32], bytes), Peek::NotAdmitted);
        assert_eq!(peek(&S, b"GET / HTTP/1.1\r\n\r\n"), Peek::NotAdmitted);
        assert_eq!(peek(&S, b"POST"), Peek::NotAdmitted);
        // Any changed character of the token or key is refused.
        let (path, param) = shape(&S);
        let at = format!("GET {path}?{param}=").len();
        for i in at..at + 32 {
            let mut bad = bytes.to_vec();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(peek(&S, &bad), Peek::NotAdmitted, "byte {i}");
        }
        let key = r.find("Sec-WebSocket-Key: ").expect("key") + 19;
        let mut bad = bytes.to_vec();
        bad[key] = if bad[key] == b'A' { b'B' } else { b'A' };
        assert_eq!(peek(&S, &bad), Peek::NotAdmitted);
    }

    #[test]
    fn early_bytes_ride_in_the_cookie_and_nowhere_else() {
        let early = [0xA5u8; 301];
        let r = request_with(&S, "h", 1_800_000_000, [6; 16], Target::Messaging, &early);
        let cookie = format!("\r\ncookie: {}=", cookie_name(&S));
        assert!(r.contains(&cookie), "{r}");
        let Peek::Valid {
            early: Some(at),
            head_len,
            ..
        } = peek(&S, r.as_bytes())
        else {
            panic!("not admitted: {r}");
        };
        assert_eq!(head_len, r.len());
        assert_eq!(at.decode(r.as_bytes()), Some(early.to_vec()));
        // The longest that fits is carried; a cookie that is not the
        // client's, or not base64url, is not an admitted client's.
        let most = request_with(&S, "h", 1, [6; 16], Target::Messaging, &[7; EARLY_MAX]);
        assert!(matches!(
            peek(&S, most.as_bytes()),
            Peek::Valid { early: Some(_), .. }
        ));
        let name = cookie_name(&S);
        for bad in [
            format!("{name}=a"),
            format!("{name}=ab+c"),
            format!("{name}="),
            "other=abcd".to_string(),
            format!("{name}=abcd; other=x"),
        ] {
            let forged = r.replace(
                &r[r.find(&cookie).map(|i| i + 10).expect("cookie")..r.len() - 4],
                &bad,
            );
            assert!(forged.contains(&bad), "{forged}");
            assert_eq!(peek(&S, forged.as_bytes()), Peek::NotAdmitted, "{bad}");
        }
        let twice = r.replace("\r\n\r\n", &format!("{cookie}abcd\r\n\r\n"));
        assert_eq!(peek(&S, twice.as_bytes()), Peek::NotAdmitted);
    }

    #[test]
    fn nothing_in_the_request_repeats_across_proxies_but_its_form() {
        let a = request(&[1; 32], "h", 1_800_000_000, [1; 16], Target::Messaging);
        let b = request(&[1; 32], "h", 1_800_000_000, [2; 16], Target::Messaging);
        let token = |r: &str| r.split(['=', ' ']).nth(2).expect("token").to_string();
        assert_ne!(token(&a), token(&b), "the time is masked per nonce");
        assert_eq!(token(&a).len(), 32);
        let shapes: std::collections::HashSet<_> = (0..40u8).map(|i| shape(&[i; 32])).collect();
        assert!(shapes.len() > 20, "{shapes:?}");
    }

    #[test]
    fn host_headers() {
        assert_eq!(host_header("example.org", 80), "example.org");
        assert_eq!(host_header("example.org", 5222), "example.org:5222");
        assert_eq!(host_header("::1", 80), "[::1]");
        assert_eq!(host_header("[::1]", 8080), "[::1]:8080");
    }

    #[test]
    fn answers() {
        let n = [8; 16];
        // RFC 6455's own example key and accept value.
        let rfc: [u8; 16] = *b"the sample nonce";
        assert_eq!(accept_value(&rfc), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\nrest",
            accept_value(&n)
        );
        assert_eq!(answer(&n, ok.as_bytes()), Ok(Some(ok.len() - 4)));
        assert_eq!(answer(&n, &ok.as_bytes()[..20]), Ok(None));
        assert_eq!(
            answer(&[9; 16], ok.as_bytes()),
            Err(AnswerError::TurnedAway)
        );
        let page = b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\n";
        assert_eq!(answer(&n, page), Err(AnswerError::TurnedAway));
        assert_eq!(answer(&n, &[b'x'; MAX_ANSWER]), Err(AnswerError::TooLong));
        let gateway = b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n\r\n";
        assert_eq!(answer(&n, gateway), Err(AnswerError::ServerUnreachable));
    }
}
