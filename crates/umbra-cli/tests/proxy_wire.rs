//! What a censor's passive filter sees of a real chat through each kind of
//! proxy port (plain, TLS, fronting a real site), and what it gets by replaying what it saw: the real binaries,
//! a capture between client and proxy that keeps every connection's bytes
//! each way.
//!
//! The fingerprints the old protocol had, each checked for:
//! - a first packet with a version byte and the unix time in clear;
//! - a first flight random from its first byte (what China's filter blocks
//!   as "fully encrypted": Wu et al., USENIX Security 2023);
//! - the Noise framing: a two-byte length before every message, which a
//!   filter can walk from the start of the stream to its end.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::capture::{Seen, capture};
use common::proxy_proc::{ProxyProc, free_port};
use common::{ServerProc, history, ok};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether the unix time, give or take a day, appears anywhere as an 8-byte
/// integer, big or little endian (as the old preamble carried it). Shorter
/// integers would match random bytes by chance.
fn holds_a_timestamp(bytes: &[u8]) -> Option<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    bytes.windows(8).find_map(|w| {
        let be = u64::from_be_bytes(w.try_into().expect("8"));
        let le = u64::from_le_bytes(w.try_into().expect("8"));
        [be, le].into_iter().find(|t| now.abs_diff(*t) < 86_400)
    })
}

/// Whether `bytes` reads, from its first byte to its last, as a sequence of
/// big-endian u16-length-prefixed messages (the Noise framing in clear).
fn walks_as_noise_framing(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        if len < 16 {
            return false;
        }
        at += 2 + len;
    }
    at == bytes.len()
}

fn printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) || b == b'\r' || b == b'\n'
}

/// The exemptions of the "fully encrypted" filter (Wu et al., §4) that a
/// first flight meets: its first six bytes printable, more than half of it
/// printable, more than 20 printable bytes in a row.
fn exempt_from_the_fully_encrypted_filter(first: &[u8]) -> bool {
    let six = first.len() >= 6 && first[..6].iter().all(|&b| printable(b));
    let half = first.iter().filter(|&&b| printable(b)).count() * 2 > first.len();
    let run = first.split(|&b| !printable(b)).any(|run| run.len() > 20);
    six && half && run
}

fn head_len(bytes: &[u8]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .expect("an HTTP head")
}

/// Chats through a proxy on a port of the given kind, with the capture
/// between client and proxy; returns every connection it saw, the proxy
/// (still running) and its address.
fn chat_through(
    tls: bool,
    front: Option<&str>,
    dir: &std::path::Path,
    server: &ServerProc,
) -> (Vec<Seen>, ProxyProc, String) {
    let kind = match (tls, front) {
        (_, Some(_)) => "fronted",
        (true, None) => "tls",
        (false, None) => "plain",
    };
    let proxy_listen = format!("127.0.0.4:{}", free_port("127.0.0.4"));
    let extra: Vec<&str> = front.map(|f| vec!["--front", f]).unwrap_or_default();
    let proxy = ProxyProc::start_with(
        &dir.join(format!("proxy-{kind}")),
        &server.listen,
        &proxy_listen,
        tls,
        "127.0.0.4",
        &extra,
    );
    let (seen_at, captured) = capture("127.0.0.7", proxy_listen.clone());
    let port = proxy_listen.rsplit(':').next().expect("port");
    let link = proxy.link.replace(
        &format!("host=127.0.0.4&port={port}"),
        &format!("host=127.0.0.7&port={}", seen_at.port()),
    );
    assert_ne!(link, proxy.link);
    let p = |n: &str| dir.join(format!("{n}-{kind}"));
    let (a, b) = (format!("ann{kind}"), format!("ben{kind}"));
    for u in [&a, &b] {
        ok(
            &p(u),
            &[
                "--proxy",
                &link,
                "register",
                "--no-passphrase",
                "--invite",
                &server.invite,
                u,
            ],
        );
    }
    ok(&p(&a), &["send", &b, "a message through the proxy"]);
    ok(&p(&b), &["send", &a, "and one back"]);
    assert!(history(&p(&b), &a).contains(&(a.clone(), "a message through the proxy".into())));
    assert!(history(&p(&a), &b).contains(&(b.clone(), "and one back".into())));
    std::thread::sleep(Duration::from_millis(300));
    let seen = captured.lock().expect("lock").clone();
    assert!(seen.len() >= 4, "{} connections", seen.len());
    (seen, proxy, proxy_listen)
}

/// Sends `replay` to `addr` and checks that the website answers it, as it
/// answers anyone asking for a page it does not have.
fn replay_gets_the_website(addr: &str, replay: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(replay).expect("replay");
    let mut reply = vec![0u8; 4096];
    let n = s.read(&mut reply).expect("an answer");
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(
        reply.starts_with("HTTP/1.1 404 Not Found\r\nServer: nginx"),
        "{reply}"
    );
    assert!(!reply.contains("101"), "{reply}");
}

#[test]
fn a_passive_observer_finds_no_old_fingerprint_and_a_replay_gets_the_website() {
    // The checks find the old fingerprints where they are.
    let mut old = vec![0x00, 0x62];
    old.extend_from_slice(&[0xAB; 98]);
    old.extend_from_slice(&[0x00, 0x20]);
    old.extend_from_slice(&[0xCD; 32]);
    assert!(walks_as_noise_framing(&old));
    let mut preamble = vec![0x01];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    preamble.extend_from_slice(&now.to_be_bytes());
    preamble.extend_from_slice(&[0x5A; 49]);
    assert!(holds_a_timestamp(&preamble).is_some());
    assert!(!exempt_from_the_fully_encrypted_filter(&preamble));

    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(
        &dir.path().join("server"),
        "127.0.0.5:0",
        &dir.path().join("log"),
    );

    // The plain port.
    let (plain, proxy, proxy_listen) = chat_through(false, None, dir.path(), &server);
    let mut masked_up = 0usize;
    let mut firsts = std::collections::HashSet::new();
    let mut cookies = std::collections::HashSet::new();
    for (i, c) in plain.iter().enumerate() {
        for (way, bytes) in [("up", &c.up), ("down", &c.down)] {
            assert_eq!(holds_a_timestamp(bytes), None, "connection {i} {way}");
        }
        // The first flight is an ordinary WebSocket upgrade, exempt from the
        // fully-encrypted filter on every count.
        let up_head = head_len(&c.up);
        let request = String::from_utf8(c.up[..up_head].to_vec()).expect("text");
        assert!(request.starts_with("GET /"), "{request}");
        assert!(request.ends_with(" HTTP/1.1\r\n\r\n") || request.contains(" HTTP/1.1\r\n"));
        assert!(request.contains("\r\nUpgrade: websocket\r\n"), "{request}");
        assert!(request.contains("\r\nSec-WebSocket-Key: "), "{request}");
        assert!(exempt_from_the_fully_encrypted_filter(&c.up[..up_head]));
        assert_ne!(c.up[0], 0x01, "the old version byte");
        // The first Noise message rides in a cookie, masked: base64url
        // that decodes to no length and no framing.
        let cookie = request
            .split("\r\n")
            .find_map(|l| l.strip_prefix("cookie: "))
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no cookie: {request}"));
        let early = URL_SAFE_NO_PAD.decode(cookie).expect("base64url");
        assert!(early.len() > 80, "connection {i}: {} bytes", early.len());
        assert!(!walks_as_noise_framing(&early), "connection {i} cookie");
        assert_ne!(
            usize::from(u16::from_be_bytes([early[0], early[1]])),
            early.len() - 2,
            "connection {i}: the cookie starts with its length"
        );
        cookies.insert([early[0], early[1]]);
        // The answer is nginx switching protocols.
        let down_head = head_len(&c.down);
        let answer = String::from_utf8(c.down[..down_head].to_vec()).expect("text");
        assert!(
            answer.starts_with("HTTP/1.1 101 Switching Protocols\r\nServer: nginx"),
            "{answer}"
        );
        // After them, the Noise stream cannot be framed: neither its
        // handshake (masked by the proxy) nor its transport messages (whose
        // prefixes Noise masks) show a length.
        let (up, down) = (&c.up[up_head..], &c.down[down_head..]);
        // (The first message rode in the cookie; what follows is the
        // session's frames.)
        assert!(
            up.len() > 20 && down.len() > 50,
            "connection {i}: {} up, {} down",
            up.len(),
            down.len()
        );
        assert!(!walks_as_noise_framing(up), "connection {i} up");
        assert!(!walks_as_noise_framing(down), "connection {i} down");
        firsts.insert([up[0], up[1]]);
        masked_up += up.len();
    }
    assert!(masked_up > 5000);
    // The old first message began with the same length on every connection.
    assert_eq!(firsts.len(), plain.len(), "{firsts:?}");
    assert_eq!(cookies.len(), plain.len(), "{cookies:?}");

    // A censor replays a captured first flight, then a whole captured
    // stream: to the same proxy, and to it restarted (its replay cache, in
    // memory, is new). Each gets the website's 404 for that path, never a
    // 101.
    let replays = [&plain[0].up[..head_len(&plain[0].up)], &plain[1].up[..]];
    for replay in replays {
        replay_gets_the_website(&proxy_listen, replay);
    }
    let _ = proxy.stop();
    // The restart comes in a later second than anything captured.
    std::thread::sleep(Duration::from_millis(1100));
    let restarted = ProxyProc::start(
        &dir.path().join("proxy-plain"),
        &server.listen,
        &proxy_listen,
        false,
        "127.0.0.4",
    );
    for replay in replays {
        replay_gets_the_website(&proxy_listen, replay);
    }
    drop(restarted);

    // The TLS port: TLS records from the first byte, and nothing of the
    // preamble or of Noise in clear.
    let (tls, proxy, _) = chat_through(true, None, dir.path(), &server);
    drop(proxy);
    for (i, c) in tls.iter().enumerate() {
        assert_eq!(
            &c.up[..3],
            &[0x16, 0x03, 0x01],
            "connection {i}: a ClientHello"
        );
        assert_eq!(&c.down[..2], &[0x16, 0x03], "connection {i}: a ServerHello");
        for (way, bytes) in [("up", &c.up), ("down", &c.down)] {
            assert_eq!(holds_a_timestamp(bytes), None, "connection {i} {way}");
            assert!(!contains(bytes, b"umbra"), "connection {i} {way}");
        }
    }

    // A fronting port, in front of a real TLS site: a ClientHello naming the
    // site, the site's kind of server flight, then nothing but TLS
    // application records, and no timestamp anywhere.
    let site = FrontedSite::start(dir.path());
    let front = format!("localhost:{}", site.port);
    let (fronted, proxy, _) = chat_through(true, Some(&front), dir.path(), &server);
    drop(proxy);
    for (i, c) in fronted.iter().enumerate() {
        let ups = records(&c.up);
        let downs = records(&c.down);
        assert_eq!(ups[0].0, 22, "connection {i}: a ClientHello");
        assert!(
            contains(&c.up[..ups[0].1 + 5], b"localhost"),
            "connection {i}: the site's name"
        );
        assert_eq!(downs[0].0, 22, "connection {i}: a ServerHello");
        for (way, bytes, rs) in [("up", &c.up, &ups), ("down", &c.down, &downs)] {
            assert_eq!(holds_a_timestamp(bytes), None, "connection {i} {way}");
            assert_eq!(
                rs.iter().map(|(_, l)| 5 + l).sum::<usize>(),
                bytes.len(),
                "connection {i} {way}: whole TLS records"
            );
            assert!(
                rs[1..].iter().all(|(k, _)| *k == 20 || *k == 23),
                "connection {i} {way}: {rs:?}"
            );
        }
    }
}

/// The content types and payload lengths of the TLS records in `bytes`.
fn records(bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
        out.push((bytes[at], len));
        at += 5 + len;
    }
    out
}

/// `openssl s_server` as the site a proxy fronts, with a certificate that
/// `openssl req` made for localhost.
struct FrontedSite {
    child: std::process::Child,
    port: u16,
}

impl FrontedSite {
    fn start(dir: &std::path::Path) -> Self {
        let made = std::process::Command::new("openssl")
            .current_dir(dir)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=localhost", "-days", "30"])
            .args(["-keyout", "site.key", "-out", "site.pem"])
            .output()
            .expect("openssl req");
        assert!(made.status.success(), "{made:?}");
        let port = free_port("127.0.0.1");
        let child = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(["s_server", "-quiet", "-WWW", "-tls1_3", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", "site.pem", "-key", "site.key"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the site did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for FrontedSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
