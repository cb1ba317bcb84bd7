//! The business host as its users meet it: `umbra business serve` run as a
//! process, its API called with curl, and a webhook receiver (a plain HTTP
//! server on loopback, run by the test) that records every attempt and can
//! be told to fail.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `umbra business serve`.
pub struct HostProc {
    pub child: Child,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub stdout: String,
}

impl HostProc {
    /// Starts the host with its state in `data_dir` and `extra` flags,
    /// running `businesses` businesses, logging to `log`.
    pub fn start(data_dir: &Path, log: &Path, businesses: usize, extra: &[&str]) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let mut child = Command::new(super::bin())
            .args([
                "business",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "debug")
            .env_remove("UMBRA_PROFILE")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn umbra business serve");
        // Kept draining after start-up, so the host never blocks on (or
        // loses) its standard output.
        let rx = super::lines_of(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut head = String::new();
        let mut addrs = None;
        let mut summary = 0;
        while addrs.is_none() || summary < businesses {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            head.push_str(&line);
            head.push('\n');
            if let Some(rest) = line.strip_prefix("Umbra business host: API on http://") {
                let api = rest.split_whitespace().next().expect("api addr");
                let metrics = rest.rsplit(' ').next().expect("metrics addr");
                addrs = Some((
                    api.parse().expect("api addr"),
                    metrics.parse().expect("metrics addr"),
                ));
            } else if line.starts_with("  ") {
                summary += 1;
            }
        }
        let Some((api, metrics)) = addrs.filter(|_| summary >= businesses) else {
            let _ = child.kill();
            panic!(
                "the business host did not start:\n{head}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        };
        Self {
            child,
            api,
            metrics,
            stdout: head,
        }
    }

    /// The API's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// SIGTERM, and a clean exit within the bound.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        super::wait_timeout(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An API answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Calls the API with curl: `method url`, a bearer `token`, a JSON `body`
/// and `headers` ("Name: value").
pub fn curl(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[&str],
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "60", "-X", method, url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "curl {method} {url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    Answer {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub answered: u16,
    pub at: Instant,
}

impl Delivery {
    /// The event as JSON.
    pub fn event(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("an event is JSON")
    }

    /// A header.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A webhook receiver on loopback that records every attempt and fails the
/// next `fail` ones with a 500.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Delivery>>>,
    pub fail: Arc<AtomicUsize>,
}

impl Receiver {
    /// Starts one.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicUsize::new(0));
        let (g, f) = (got.clone(), fail.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (g, f) = (g.clone(), f.clone());
                std::thread::spawn(move || serve(stream, &g, &f));
            }
        });
        Self { addr, got, fail }
    }

    /// The URL to give the host.
    pub fn url(&self) -> String {
        format!("http://{}/umbra-webhook", self.addr)
    }

    /// What it took (2xx), in the order it took them.
    pub fn taken(&self) -> Vec<Delivery> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| d.answered == 200)
            .cloned()
            .collect()
    }

    /// Every attempt.
    pub fn all(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds of what it took, or panics after `secs`.
    pub fn wait(&self, secs: u64, what: &str, pred: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let taken = self.taken();
            if pred(&taken) {
                return taken;
            }
            if Instant::now() > deadline {
                let bodies: Vec<String> = self
                    .all()
                    .iter()
                    .map(|d| format!("{} {}", d.answered, String::from_utf8_lossy(&d.body)))
                    .collect();
                panic!(
                    "webhooks: {what} did not happen; got:\n{}",
                    bodies.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(mut stream: TcpStream, got: &Mutex<Vec<Delivery>>, fail: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut headers = HashMap::new();
        for line in head.lines().skip(1) {
            if let Some((n, v)) = line.split_once(':') {
                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut rest = buf.split_off(head_end + 4);
        while rest.len() < len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        let body = rest[..len].to_vec();
        buf = rest[len..].to_vec();
        let failing = fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let answered = if failing { 500 } else { 200 };
        got.lock().expect("lock").push(Delivery {
            headers,
            body,
            answered,
            at: Instant::now(),
        });
        let reply = if failing {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\ndown"
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
