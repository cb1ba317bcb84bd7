//! Several `umbra server` nodes sharing one PostgreSQL database, with NATS
//! between them, all on loopback: what the scale-out tests run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ServerProc;

/// A `nats-server` on a loopback port.
pub struct NatsProc {
    child: Option<Child>,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether process `pid` is the one listening on loopback TCP `port` (a
/// free port picked by [`free_port`] can be taken by another test before
/// the process we start binds it; then it fails and something else answers).
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A")
                .then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.to_string_lossy() == *i))
    })
}

/// Spawns `command(port)` on a free port until the process it starts is the
/// one listening there; the child and its port.
fn spawn_listening(what: &str, mut command: impl FnMut(u16) -> Command) -> (Child, u16) {
    for _ in 0..8 {
        let port = free_port();
        let mut child = command(port)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e} (apt-get install {what})"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if listens(child.id(), port) {
                return (child, port);
            }
            if child.try_wait().ok().flatten().is_some() {
                break; // It could not bind: the port was taken. Try another.
            }
            assert!(Instant::now() < deadline, "{what} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} could not bind a free port in 8 attempts")
}

impl NatsProc {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let (child, port) = spawn_listening("nats-server", Self::command);
        Self {
            child: Some(child),
            port,
        }
    }

    fn command(port: u16) -> Command {
        let mut c = Command::new("nats-server");
        c.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn up(&mut self) {
        let child = Self::command(self.port)
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.up();
    }
}

impl Drop for NatsProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything said on the bus, as a subscriber on `>` hears it.
pub struct BusTap {
    pub heard: Arc<Mutex<Vec<u8>>>,
}

impl BusTap {
    /// Subscribes to every subject of the NATS server at `port`.
    pub fn start(port: u16) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"CONNECT {\"verbose\":false}\r\nSUB > 1\r\nPING\r\n")
            .expect("subscribe");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Ok(mut v) = h.lock() {
                            v.extend_from_slice(&buf[..n]);
                        }
                        // Answer the server's pings so it keeps us.
                        if buf[..n].windows(4).any(|w| w == b"PING") {
                            let _ = s.write_all(b"PONG\r\n");
                        }
                    }
                }
            }
        });
        Self { heard }
    }

    /// What it heard, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.heard.lock().expect("lock")).into_owned()
    }
}

/// `umbra server` nodes on one database and one NATS.
pub struct Cluster {
    pub nodes: Vec<ServerProc>,
    pub args: Vec<String>,
    pub dirs: Vec<PathBuf>,
    pub logs: Vec<PathBuf>,
}

impl Cluster {
    /// Starts `n` nodes in `dir` on the database at `url` and NATS at
    /// `nats`, sweeping every `sweep_secs`. They share the first node's
    /// keys, as an operator copies them, so one invite names them all.
    pub fn start(dir: &Path, n: usize, url: &str, nats: &str, sweep_secs: u64) -> Self {
        Self::start_with(dir, n, url, nats, sweep_secs, &[])
    }

    /// As [`start`](Self::start), each node also given `extra`.
    pub fn start_with(
        dir: &Path,
        n: usize,
        url: &str,
        nats: &str,
        sweep_secs: u64,
        extra: &[String],
    ) -> Self {
        let key = dir.join("cluster.key");
        let mut args: Vec<String> = vec![
            "--database".into(),
            url.into(),
            "--nats".into(),
            nats.into(),
            "--cluster-key-file".into(),
            key.to_string_lossy().into_owned(),
            "--sweep-secs".into(),
            sweep_secs.to_string(),
        ];
        args.extend_from_slice(extra);
        let mut c = Self {
            nodes: Vec::new(),
            args,
            dirs: Vec::new(),
            logs: Vec::new(),
        };
        for i in 0..n {
            let data = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&data).expect("data dir");
            if i > 0 {
                for f in ["server.key", "sign.key"] {
                    std::fs::copy(c.dirs[0].join(f), data.join(f)).expect("copy the keys");
                }
            }
            let log = dir.join(format!("node{i}.log"));
            let extra: Vec<&str> = c.args.iter().map(String::as_str).collect();
            c.nodes
                .push(ServerProc::start_with(&data, "127.0.0.1:0", &log, &extra));
            c.dirs.push(data);
            c.logs.push(log);
        }
        c
    }

    /// Node `i`'s invite.
    pub fn invite(&self, i: usize) -> &str {
        &self.nodes[i].invite
    }

    /// SIGKILLs node `i`, leaving it down until [`restart`](Self::restart).
    pub fn kill(&mut self, i: usize) {
        let _ = self.nodes[i].child.kill();
        let _ = self.nodes[i].child.wait();
    }

    /// Every node's address.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.listen.clone()).collect()
    }

    /// Starts node `i` again on its address (after a kill or a stop).
    pub fn restart(&mut self, i: usize) {
        let listen = self.nodes[i].listen.clone();
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let node = ServerProc::start_with(&self.dirs[i], &listen, &self.logs[i], &extra);
        let old = std::mem::replace(&mut self.nodes[i], node);
        drop(old);
    }
}

/// `umbra relay` alone on loopback (no forwarding unit), admitting loopback
/// peers, with the secret the nodes share with it.
pub struct RelayProc {
    child: Child,
    /// What the nodes are given: `--relay-secret-file`, `--relay-url`.
    pub server_args: Vec<String>,
}

impl RelayProc {
    /// Starts one in `dir`, logging to `dir/relay.log`.
    pub fn start(dir: &Path) -> Self {
        let secret = dir.join("turn.secret");
        std::fs::write(&secret, "cluster-test-relay-secret-0123456789").expect("secret");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let log = std::fs::File::create(dir.join("relay.log")).expect("log");
        let secret = secret.to_string_lossy().into_owned();
        let child = Command::new(super::bin())
            .args([
                "relay",
                "--auth-secret-file",
                &secret,
                "--udp-listen",
                &format!("127.0.0.1:{port}"),
                "--tcp-listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--allow-peer",
                "127.0.0.1/32",
                "--no-unit",
            ])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("umbra relay");
        std::thread::sleep(Duration::from_millis(500));
        Self {
            child,
            server_args: vec![
                "--relay-secret-file".into(),
                secret,
                "--relay-url".into(),
                format!("turn:127.0.0.1:{port}?transport=udp"),
            ],
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `umbra listen` running for a profile, its output collected.
pub struct Listener {
    child: Child,
    pub out: Arc<Mutex<String>>,
}

impl Listener {
    /// Starts `umbra --profile DIR listen`.
    pub fn start(profile: &Path) -> Self {
        Self::start_with(profile, &[])
    }

    /// Starts `umbra --profile DIR listen ARGS...`.
    pub fn start_with(profile: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(super::bin())
            .arg("--profile")
            .arg(profile)
            .arg("listen")
            .args(args)
            .env_remove("UMBRA_PROFILE")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("umbra listen");
        let stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut s) = o.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Self { child, out }
    }

    /// Waits until its output holds `text`; how long it took.
    pub fn wait_for(&self, text: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.out.lock().expect("lock").contains(text) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "`{text}` never arrived; listen said:\n{}",
                self.out.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in TCP mode in front of nodes, as the README sets it up: round
/// robin, a failed connection retried on another node, health checks every
/// 300 ms.
pub struct Haproxy {
    child: Child,
    pub port: u16,
}

impl Haproxy {
    /// Starts one in `dir` in front of the nodes listening on `backends`.
    pub fn start(dir: &Path, backends: &[String]) -> Self {
        let (child, port) = spawn_listening("haproxy", |port| Self::command(dir, backends, port));
        Self { child, port }
    }

    fn command(dir: &Path, backends: &[String], port: u16) -> Command {
        let mut cfg = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    \
             timeout server 1h\n    retries 3\n    option redispatch\n\
             listen umbra\n    bind 127.0.0.1:{port}\n    balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "    server node{i} {b} check inter 300 fall 1 rise 1\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
        let mut c = Command::new("haproxy");
        c.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        c
    }

    /// `invite` with HAProxy's port in place of the node's.
    pub fn invite(&self, invite: &str) -> String {
        let (head, tail) = invite.split_once("port=").expect("port");
        let rest = tail.split_once('&').map_or("", |(_, r)| r);
        format!("{head}port={}&{rest}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
