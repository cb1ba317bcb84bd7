//! Fronting mode against a real TLS site (`openssl s_server`, a TLS stack
//! that is not the proxy's): a prober's curl and openssl sessions through
//! the proxy are the site's own, certificate and page, byte for byte; an
//! admitted client reaches both upstreams; a watcher sees a TLS handshake
//! in the site's shape and then only TLS records; a replayed or stale hello
//! gets the site.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_wire::front::{self, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, Records};
use umbra_wire::proxy::{ProxyLink, Target};

mod common;

use common::*;

const PAGE: &str = "<html><body>the fronted site's own page</body></html>\n";

/// `openssl s_server` serving `index.html` over TLS 1.3 for localhost.
struct Site {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_site(dir: &Path) -> Site {
    ca_and_leaf(dir, "test CA for the fronted site", "site");
    std::fs::write(dir.join("index.html"), PAGE).expect("page");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-quiet", "-WWW", "-tls1_3", "-accept"])
        .arg(addr.to_string())
        .args(["-cert", "site.pem", "-key", "site.key"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the site did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Site { child, addr }
}

async fn fronting_proxy(site: &Site, up: &Upstream, relay: &Upstream) -> Running {
    start(|c| {
        c.upstream = Some(up.addr.to_string());
        c.relay_upstream = Some(relay.addr.to_string());
        c.plain_listen.clear();
        c.front = Some(format!("localhost:{}", site.addr.port()));
        c.handshake_timeout_secs = 3;
    })
    .await
}

fn link(p: &Running) -> ProxyLink {
    ProxyLink {
        host: "127.0.0.1".into(),
        port: p.tls.port(),
        secret: p.secret,
        tls: true,
        front: Some("localhost".into()),
    }
}

/// curl for the page at `port` under the name localhost, checking the
/// certificate against the site's CA: (verify result, body).
fn curl(dir: &Path, port: u16) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{ssl_verify_result}"])
        .arg(format!("https://localhost:{port}/index.html"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, verify) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (verify.to_string(), body.to_string())
}

/// What openssl s_client shows of a handshake at `port`: the certificate
/// chain and the negotiated protocol version and cipher.
fn s_client(port: u16) -> (Vec<String>, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-showcerts"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let certs = text
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|c| c.split("-----END CERTIFICATE-----").next())
        .map(str::to_string)
        .collect();
    // The handshake's outcome ("New, TLSv1.3, Cipher is ..."); the session
    // lines that follow depend on whether a ticket came before s_client quit.
    let negotiated = text
        .lines()
        .filter(|l| l.contains("Cipher is"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    (certs, negotiated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_gets_the_fronted_site_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = start_site(dir.path());
    let (up, relay) = (upstream().await, upstream().await);
    let p = fronting_proxy(&site, &up, &relay).await;
    let (d, proxy_port, site_port) = (dir.path().to_path_buf(), p.tls.port(), site.addr.port());
    let (through, direct, shown_through, shown_direct) = tokio::task::spawn_blocking(move || {
        (
            curl(&d, proxy_port),
            curl(&d, site_port),
            s_client(proxy_port),
            s_client(site_port),
        )
    })
    .await
    .expect("join");
    assert_eq!(direct.1, PAGE, "the site serves its page");
    assert_eq!(
        through,
        ("0".to_string(), PAGE.to_string()),
        "through the proxy: the site's certificate verifies and its page comes back"
    );
    assert_eq!(shown_through.0.len(), 1);
    assert_eq!(shown_through, shown_direct, "the same certificate and TLS");
    // Nothing reached an upstream; every prober was counted as a visitor.
    assert!(up.seen.lock().expect("lock").is_empty());
    assert!(relay.seen.lock().expect("lock").is_empty());
    assert_eq!(
        metric(p.metrics, "umbra_proxy_admitted_messaging_total").await,
        0
    );
    assert!(metric(p.metrics, "umbra_proxy_turned_away_total").await >= 2);
}

/// A TCP relay that keeps the bytes of its connections, each way.
async fn capture(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let record = log.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = l.accept().await {
            let Ok(outbound) = TcpStream::connect(to).await else {
                continue;
            };
            let index = {
                let mut r = record.lock().expect("lock");
                r.push((Vec::new(), Vec::new()));
                r.len() - 1
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (up, mut from, mut into) in [(true, ri, wo), (false, ro, wi)].map(|(u, r, w)| {
                (
                    u,
                    Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(w) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                )
            }) {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        {
                            let mut r = record.lock().expect("lock");
                            let side = if up { &mut r[index].0 } else { &mut r[index].1 };
                            side.extend_from_slice(&buf[..n]);
                        }
                        if into.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown().await;
                });
            }
        }
    });
    (addr, log)
}

/// The content types and payload lengths of every whole record in `bytes`.
fn records(bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut r = Records::default();
    r.feed(bytes);
    let mut out = Vec::new();
    let mut payload = Vec::new();
    while let Ok(Some(kind)) = r.next_record(&mut payload) {
        out.push((kind, payload.len()));
        payload.clear();
    }
    out
}

/// The site's own flight in answer to a hello of the clients' shape.
async fn site_flight(site: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(site).await.expect("connect");
    let hello = umbra_net::fronted::client_hello("localhost").expect("hello");
    s.write_all(&hello).await.expect("hello");
    let mut flight = Vec::new();
    let mut buf = vec![0u8; 16384];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        flight.extend_from_slice(&buf[..n]);
    }
    flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_clients_get_through_in_the_sites_shape_and_replays_get_the_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = start_site(dir.path());
    let (up, relay) = (upstream().await, upstream().await);
    let p = fronting_proxy(&site, &up, &relay).await;
    let (seen_at, captured) = capture(p.tls).await;
    let mut via = link(&p);
    via.port = seen_at.port();
    let route = umbra_net::dial::Route::Proxy(via);

    // The site's shape, to hold the proxy's flight against (the proxy
    // learns it when it starts; give it the time to).
    let own = records(&site_flight(site.addr).await);
    assert_eq!(own[0].0, HANDSHAKE);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = umbra_net::dial::dial(&route, Target::Messaging, Duration::from_secs(5))
            .await
            .expect("admitted");
        s.write_all(b"to-messaging").await.expect("write");
        let mut back = [0u8; 12];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"to-messaging");
        drop(s);
        let last = captured
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("captured");
        let theirs = records(&last.1);
        // Record by record, the same kinds and sizes (an ECDSA signature's
        // length varies by a few bytes from one handshake to the next).
        let same = theirs.len() >= own.len()
            && theirs
                .iter()
                .zip(&own)
                .all(|(a, b)| a.0 == b.0 && a.1.abs_diff(b.1) <= 8);
        if same {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy's flight {theirs:?} never took the site's shape {own:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut s = umbra_net::dial::dial(&route, Target::Relay, Duration::from_secs(5))
        .await
        .expect("admitted to the relay");
    s.write_all(b"to-relay").await.expect("write");
    let mut back = [0u8; 8];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"to-relay");
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        up.seen
            .lock()
            .expect("lock")
            .iter()
            .all(|c| c == b"to-messaging")
    );
    assert_eq!(relay.seen.lock().expect("lock").concat(), b"to-relay");

    // What a watcher saw: a ClientHello naming the site, then only TLS
    // records both ways, and none of the bytes the upstreams got.
    let seen = captured.lock().expect("lock").clone();
    for (i, (up_bytes, down_bytes)) in seen.iter().enumerate() {
        let ups = records(up_bytes);
        assert_eq!(ups[0].0, HANDSHAKE, "connection {i}");
        assert!(
            up_bytes.windows(9).any(|w| w == b"localhost"),
            "SNI names the site"
        );
        let whole = |r: &[(u8, usize)]| r.iter().map(|(_, l)| 5 + l).sum::<usize>();
        assert_eq!(
            whole(&ups),
            up_bytes.len(),
            "connection {i}: only whole records up"
        );
        let downs = records(down_bytes);
        assert_eq!(
            whole(&downs),
            down_bytes.len(),
            "connection {i}: only whole records down"
        );
        assert!(
            ups[1..]
                .iter()
                .chain(&downs[1..])
                .all(|(k, _)| *k == APPLICATION_DATA || *k == CHANGE_CIPHER_SPEC),
            "connection {i}: after the hellos, nothing but encrypted-looking records"
        );
        for needle in [&b"to-messaging"[..], b"to-relay"] {
            assert!(!up_bytes.windows(needle.len()).any(|w| w == needle));
            assert!(!down_bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    // A censor replays a captured hello, then a hello with its time shifted
    // an hour back: the site answers both, as it answers anyone.
    let hello_len = 5 + usize::from(u16::from_be_bytes([seen[0].0[3], seen[0].0[4]]));
    let captured_hello = seen[0].0[..hello_len].to_vec();
    let mut stale = umbra_net::fronted::client_hello("localhost").expect("hello");
    front::mark_hello(&p.secret, &mut stale, now() - 3600, Target::Messaging).expect("mark");
    for (what, hello) in [("replayed", captured_hello), ("stale", stale)] {
        let mut s = TcpStream::connect(p.tls).await.expect("connect");
        s.write_all(&hello).await.expect("write");
        let mut answer = vec![0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
            .await
            .expect("the site answers")
            .expect("read");
        let answer = &answer[..n];
        assert_eq!(answer[0], HANDSHAKE, "{what}: a ServerHello");
        let mut random = [0u8; 32];
        random.copy_from_slice(&hello[11..43]);
        assert_eq!(
            front::read_flight(&p.secret, &random, answer),
            Err(front::FrontError::TurnedAway),
            "{what}: the site's own ServerHello, not the proxy's"
        );
    }
    assert_eq!(metric(p.metrics, "umbra_proxy_replayed_total").await, 1);
    assert_eq!(metric(p.metrics, "umbra_proxy_stale_total").await, 1);
}
