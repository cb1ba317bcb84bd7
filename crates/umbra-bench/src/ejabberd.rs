//! ejabberd, the anchor of `umbra bench xmpp`: the Debian package's
//! `ejabberdctl` started in the foreground on a scratch directory of its
//! own (configuration, Mnesia spool, logs) under a node name of its own, so
//! it never touches a system ejabberd. Configured as the issue asks: c2s on
//! loopback without TLS, no traffic shapers, no message archive (mod_mam),
//! Mnesia, in-band registration open (the bench makes its accounts), stream
//! management for the senders' acknowledgements, and a listen backlog
//! like Umbra's (ejabberd's default of 5 stalls connections opened 128 at
//! a time).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::util::random_token;

/// A running private ejabberd.
pub struct Ejabberd {
    child: Child,
    ctl: String,
    dir: PathBuf,
    node: String,
    /// Its c2s listener.
    pub addr: std::net::SocketAddr,
    /// The Erlang VM's process id (`beam.smp`), for its memory.
    pub pid: u32,
}

fn config(port: u16) -> String {
    format!(
        "hosts:
  - {domain}
loglevel: warning
listen:
  -
    port: {port}
    ip: \"127.0.0.1\"
    module: ejabberd_c2s
    max_stanza_size: 262144
    backlog: 4096
    shaper: none
    access: c2s
    starttls: false
    starttls_required: false
acl:
  local:
    user_regexp: \"\"
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
auth_method: internal
default_db: mnesia
registration_timeout: infinity
modules:
  mod_register:
    ip_access: all
    access: register
  mod_stream_mgmt: {{}}
",
        domain = crate::xmpp::DOMAIN
    )
}

/// The process whose command line names `node` (the VM, not the script).
fn beam_pid(node: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmd);
        if text.contains("beam") && text.contains(node) {
            return Some(pid);
        }
    }
    None
}

/// The `ejabberd` user's ids and home, when this process may become it.
fn ejabberd_user() -> Option<(u32, u32, String)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?;
    if euid != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("ejabberd:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((
        f.get(2)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
        (*f.get(5)?).to_string(),
    ))
}

impl Ejabberd {
    /// Starts `ctl` (`ejabberdctl`) on a scratch directory under `parent`.
    pub async fn start(ctl: &str, parent: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = parent.join(format!("ejabberd-{}", random_token()));
        for sub in ["spool", "logs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("ejabberd.yml"), config(port))?;
        // The VM's limits: room for tens of thousands of sessions.
        let node = format!("umbrabench{}@localhost", &random_token()[..8]);
        std::fs::write(
            dir.join("ejabberdctl.cfg"),
            // `su` drops the environment, so the port limit goes on the
            // VM's command line.
            format!("ERL_OPTIONS=\"+Q 131072\"\nERL_PROCESSES=2000000\nERLANG_NODE={node}\n"),
        )?;
        if Path::new("/etc/ejabberd/inetrc").exists() {
            std::fs::copy("/etc/ejabberd/inetrc", dir.join("inetrc"))?;
        }
        // The VM runs as the `ejabberd` user: give it the directory.
        let _ = std::process::Command::new("chown")
            .args(["-R", "ejabberd"])
            .arg(&dir)
            .status();
        let args = |cmd: &str| -> Vec<String> {
            let d = dir.to_string_lossy();
            vec![
                "--config-dir".into(),
                d.to_string(),
                "--config".into(),
                format!("{d}/ejabberd.yml"),
                "--ctl-config".into(),
                format!("{d}/ejabberdctl.cfg"),
                "--spool".into(),
                format!("{d}/spool"),
                "--logs".into(),
                format!("{d}/logs"),
                "--node".into(),
                node.clone(),
                cmd.into(),
            ]
        };
        let mut command = Command::new(ctl);
        command.args(args("foreground"));
        // Started by root, the script would switch to the `ejabberd` user
        // with `su`, which brings the limit on open files back to 1,024,
        // and the VM sizes its poll set from that limit at start: switch
        // here instead, keeping the bench's raised limit.
        if let Some((uid, gid, home)) = ejabberd_user() {
            command.uid(uid).gid(gid).env("HOME", home);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {ctl} (apt-get install ejabberd)"))?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "ejabberd did not listen within 60 s (logs in {})",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = beam_pid(&node).context("ejabberd's VM process")?;
        Ok(Self {
            child,
            ctl: ctl.to_string(),
            dir,
            node,
            addr,
            pid,
        })
    }

    /// Stops it and removes its directory.
    pub async fn stop(mut self) {
        let d = self.dir.to_string_lossy().to_string();
        let _ = Command::new(&self.ctl)
            .args([
                "--config-dir",
                &d,
                "--ctl-config",
                &format!("{d}/ejabberdctl.cfg"),
                "--node",
                &self.node,
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let _ = self.child.kill().await;
        if let Some(pid) = beam_pid(&self.node) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
