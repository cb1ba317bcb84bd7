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

impl NatsProc {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let mut n = Self {
            child: None,
            port: free_port(),
        };
        n.up();
        n
    }

    fn up(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
        let key = dir.join("cluster.key");
        let args: Vec<String> = vec![
            "--database".into(),
            url.into(),
            "--nats".into(),
            nats.into(),
            "--cluster-key-file".into(),
            key.to_string_lossy().into_owned(),
            "--sweep-secs".into(),
            sweep_secs.to_string(),
        ];
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

    /// Starts node `i` again on its address (after a kill or a stop).
    pub fn restart(&mut self, i: usize) {
        let listen = self.nodes[i].listen.clone();
        let extra: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let node = ServerProc::start_with(&self.dirs[i], &listen, &self.logs[i], &extra);
        let old = std::mem::replace(&mut self.nodes[i], node);
        drop(old);
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
        let mut child = Command::new(super::bin())
            .arg("--profile")
            .arg(profile)
            .arg("listen")
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
