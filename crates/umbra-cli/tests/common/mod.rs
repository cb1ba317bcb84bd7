//! Helpers for process-level tests: the real `umbra` binary, real sockets
//! on loopback, real SQLite files in temporary directories.

#![allow(dead_code)]

pub mod business_host;
pub mod capture;
pub mod cluster;
pub mod netns;
pub mod proxy_proc;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_umbra"))
}

/// A running `umbra server` process.
pub struct ServerProc {
    pub child: Child,
    pub invite: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub listen: String,
}

impl ServerProc {
    /// Starts `umbra server` on `listen` (e.g. `127.0.0.1:0`), logging to `log`.
    pub fn start(data_dir: &Path, listen: &str, log: &Path) -> Self {
        Self::start_with(data_dir, listen, log, &[])
    }

    /// Like [`ServerProc::start`], with extra flags.
    pub fn start_with(data_dir: &Path, listen: &str, log: &Path, extra: &[&str]) -> Self {
        Self::start_command("server", data_dir, listen, log, extra)
    }

    /// Starts `umbra SUBCOMMAND` (`server` or `serve`).
    pub fn start_command(
        sub: &str,
        data_dir: &Path,
        listen: &str,
        log: &Path,
        extra: &[&str],
    ) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        // Metrics on the listen address's host (a test that tells the
        // server's address from the client's finds only the server's).
        let metrics = format!("{}:0", listen.rsplit_once(':').map_or("127.0.0.1", |h| h.0));
        let mut child = Command::new(bin())
            .args([sub, "--listen", listen, "--metrics-listen", &metrics])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "debug")
            .env_remove("UMBRA_PROFILE")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn umbra server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut invite = None;
        let mut captured = String::new();
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            captured.push_str(&line);
            captured.push('\n');
            if let Some(i) = line.trim().strip_prefix("umbra://") {
                invite = Some(format!("umbra://{i}"));
                break;
            }
        }
        // Keep draining stdout into the log so the server never blocks on it.
        let log_copy = log.to_path_buf();
        let head = captured.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(log_copy)
                .expect("log");
            let _ = f.write_all(head.as_bytes());
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(f, "{line}");
            }
        });
        let invite = invite.unwrap_or_else(|| panic!("server printed no invite:\n{captured}"));
        let port = invite
            .split("port=")
            .nth(1)
            .and_then(|p| p.split('&').next())
            .expect("port")
            .to_string();
        let host = listen.rsplit_once(':').expect("host").0.to_string();
        Self {
            child,
            invite,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            listen: format!("{host}:{port}"),
        }
    }

    /// `umbra serve` with everything on loopback ports of its own: the
    /// messaging server, the relay and the group call forwarding unit, data
    /// in `dir/node`, log in `dir/node.log`.
    pub fn node(dir: &Path) -> Self {
        Self::start_command(
            "serve",
            &dir.join("node"),
            "127.0.0.1:0",
            &dir.join("node.log"),
            &[
                "--relay-listen",
                "127.0.0.1:0",
                "--relay-tls-listen",
                "127.0.0.1:0",
                "--relay-metrics-listen",
                "127.0.0.1:0",
            ],
        )
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }

    /// The address of its metrics endpoint, from its "ready" log line.
    pub fn metrics_addr(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .filter(|l| l.contains("umbra server ready"))
            .filter_map(|l| l.split("metrics=").nth(1))
            .find_map(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no metrics address in {}", self.log.display()))
            .to_string()
    }

    /// One counter or gauge of its `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics_addr()).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child with a bound, killing it past the bound.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines `from` gives, as they come, read on a thread of their own
/// (which keeps draining it, so the writer never blocks).
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// `umbra --profile DIR` with the environment's profile, passphrase and log
/// settings taken away (the caller adds the arguments and the streams).
pub fn command(profile: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--profile")
        .arg(profile)
        .env_remove("UMBRA_PROFILE")
        .env_remove("UMBRA_PASSPHRASE")
        .env_remove("UMBRA_NEW_PASSPHRASE")
        .env_remove("UMBRA_PASSPHRASE_FD")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `umbra --profile DIR ARGS...` and returns its output.
pub fn umbra(profile: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("UMBRA_PROFILE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn umbra");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Runs the operator's `umbra server ARGS... --data-dir DATA` (no profile)
/// and returns its output.
pub fn operator(data: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("server")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUST_LOG")
        .output()
        .expect("run umbra server")
}

/// `umbra --json call ARGS...`: whether it succeeded, the events it
/// printed, and its stderr.
pub fn call(profile: &Path, args: &[&str]) -> (bool, Vec<serde_json::Value>, String) {
    let mut full = vec!["--json", "call"];
    full.extend_from_slice(args);
    let out = umbra(profile, &full);
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.success(),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `umbra register --no-passphrase` of `username` in `profile`, which must
/// succeed; returns what it printed. (Tests of the passphrase itself run
/// `register` with one.)
pub fn register(profile: &Path, invite: &str, username: &str) -> String {
    ok(
        profile,
        &["register", "--no-passphrase", "--invite", invite, username],
    )
}

/// Like [`umbra`], asserting success and returning stdout.
pub fn ok(profile: &Path, args: &[&str]) -> String {
    let out = umbra(profile, args);
    assert!(
        out.status.success(),
        "umbra {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The entry of `umbra --json conversations` named `name`.
pub fn conversation(profile: &Path, name: &str) -> serde_json::Value {
    let out = ok(profile, &["--json", "conversations"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(out.trim()).expect("json");
    all.into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no conversation {name}: {out}"))
}

/// Like [`umbra`], asserting failure and returning stderr.
pub fn fails(profile: &Path, args: &[&str]) -> String {
    let out = umbra(profile, args);
    assert!(
        !out.status.success(),
        "umbra {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Like [`fails`], asserting the exit code too.
pub fn fails_with(profile: &Path, args: &[&str], code: i32) -> String {
    let out = umbra(profile, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "umbra {args:?}: exit code\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// Checks that an error the binary printed says each thing once: no line
/// twice, and no part of a line (the pieces between ": ") twice.
pub fn said_once(err: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(!lines[..i].contains(l), "a line said twice: {err}");
        let parts: Vec<&str> = l.split(": ").map(str::trim).collect();
        for (j, p) in parts.iter().enumerate() {
            assert!(
                p.len() < 8 || !parts[..j].contains(p),
                "`{p}` said twice: {err}"
            );
        }
    }
}

/// History of one conversation as (sender, body) pairs, text messages only.
pub fn history(profile: &Path, conversation: &str) -> Vec<(String, String)> {
    history_with(profile, conversation, &[])
}

/// Like [`history`], without asking the server anything.
pub fn history_offline(profile: &Path, conversation: &str) -> Vec<(String, String)> {
    history_with(profile, conversation, &["--offline"])
}

fn history_with(profile: &Path, conversation: &str, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["--json", "history", conversation, "--limit", "10000"];
    args.extend_from_slice(extra);
    let out = ok(profile, &args);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("history is not JSON ({e}):\n{out}"));
    v.as_array()
        .expect("array")
        .iter()
        .filter(|e| e["kind"] == "text")
        .map(|e| {
            (
                e["sender"].as_str().unwrap_or_default().to_string(),
                e["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Sends signal `sig` (`STOP`, `CONT`, ...) to process `pid`.
pub fn signal(sig: &str, pid: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .is_ok_and(|s| s.success())
}

/// `umbra devices link` on `primary` and `umbra link` on `new`, the link
/// and the fingerprint carried across; returns the new device's id.
pub fn link_device(primary: &Path, new: &Path) -> String {
    let mut offer = command(primary)
        .args(["devices", "link", "--timeout", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devices link");
    let offer_err = lines_of(offer.stderr.take().expect("stderr"));
    let link = loop {
        let line = offer_err
            .recv_timeout(Duration::from_secs(30))
            .expect("the link is shown");
        if let Some(l) = line.trim().strip_prefix("umbra link '") {
            break l.trim_end_matches('\'').to_string();
        }
    };
    assert!(link.starts_with("umbra://link?"), "{link}");
    let mut joining = command(new)
        .args(["link", &link, "--no-passphrase", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("link");
    let join_err = lines_of(joining.stderr.take().expect("stderr"));
    let fingerprint = loop {
        let line = join_err
            .recv_timeout(Duration::from_secs(30))
            .expect("the fingerprint is shown");
        if let Some(f) = line.strip_prefix("This device's fingerprint: ") {
            break f.trim().to_string();
        }
    };
    // The user reads it on the new device and types it on the old one.
    let mut stdin = offer.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, format!("{fingerprint}\n").as_bytes()).expect("type it");
    drop(stdin);
    let joined = wait_timeout(&mut joining, Duration::from_secs(90));
    assert!(joined.success(), "umbra link failed");
    let offered = offer.wait_with_output().expect("devices link");
    assert!(
        offered.status.success(),
        "devices link failed: {}",
        String::from_utf8_lossy(&offered.stderr)
    );
    let said = String::from_utf8_lossy(&offered.stdout);
    assert!(said.contains(&format!("linked {fingerprint}")), "{said}");
    fingerprint
}
