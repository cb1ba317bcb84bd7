//! `umbra proxy` as a child process, for the tests that go through one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy and the link it printed.
pub struct ProxyProc {
    child: Child,
    pub link: String,
    output: Arc<Mutex<String>>,
}

impl ProxyProc {
    pub fn start(data: &Path, upstream: &str, listen: &str, tls: bool, public_host: &str) -> Self {
        Self::start_with(data, upstream, listen, tls, public_host, &[])
    }

    pub fn start_with(
        data: &Path,
        upstream: &str,
        listen: &str,
        tls: bool,
        public_host: &str,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(super::bin());
        cmd.args([
            "proxy",
            "--upstream",
            upstream,
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--public-host", public_host])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if tls {
            cmd.args(["--tls-listen", listen, "--no-plain"]);
        } else {
            cmd.args(["--plain-listen", listen, "--no-tls"]);
        }
        let mut child = cmd.spawn().expect("spawn umbra proxy");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut o = sink.lock().expect("lock");
                o.push_str(&line);
                o.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.starts_with("umbra://proxy?") {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                let mut o = sink.lock().expect("lock");
                o.push_str(&line);
                o.push('\n');
            }
        });
        let link = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the proxy printed its link");
        Self {
            child,
            link,
            output,
        }
    }

    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        super::wait_timeout(&mut self.child, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(200));
        self.output.lock().expect("lock").clone()
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind(format!("{ip}:0"))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
