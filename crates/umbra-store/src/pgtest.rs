//! A PostgreSQL server for tests, on loopback.
//!
//! When `UMBRA_TEST_POSTGRES` names a running server (`postgres://user@host:
//! port`, as `scripts/test.sh` starts one), tests use it; otherwise each
//! [`Cluster::start`] makes a throwaway cluster with `initdb` in a temporary
//! directory (as the `postgres` user when run as root, since PostgreSQL
//! refuses root), starts it on a free loopback port and stops it when
//! dropped. Either way, each [`Cluster::database`] is a new, empty database
//! of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server tests can make databases in.
pub struct Cluster {
    base: String,
    own: Option<Own>,
}

/// A cluster this process made, stopped on drop.
struct Own {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

fn bin_dir() -> std::io::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)",
        )
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs one of PostgreSQL's programs, as `postgres` when we are root.
fn run(bin: &Path, as_postgres: bool, program: &str, args: &[&str]) -> std::io::Result<()> {
    let path = bin.join(program);
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd.args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// The server named by `UMBRA_TEST_POSTGRES`, or a new one of our own.
    pub fn start() -> std::io::Result<Self> {
        if let Ok(base) = std::env::var("UMBRA_TEST_POSTGRES")
            && !base.is_empty()
        {
            return Ok(Self {
                base: base.trim_end_matches('/').to_string(),
                own: None,
            });
        }
        Self::start_own()
    }

    /// A new cluster of our own, whatever the environment names (for tests
    /// that restart or stop it).
    pub fn start_own() -> std::io::Result<Self> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("umbra-pg-").tempdir()?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !status.success() {
                return Err(std::io::Error::other("cannot give the cluster to postgres"));
            }
        }
        let data = dir.path().join("data");
        let data_s = data.to_string_lossy().into_owned();
        run(
            &bin,
            as_postgres,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "umbra",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        // A free port can be taken by another test before the server binds
        // it; then the start fails and another port is tried.
        let mut attempt = 0;
        let port = loop {
            attempt += 1;
            let port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=on -c max_connections=200",
                dir.path().display()
            );
            let started = run(
                &bin,
                as_postgres,
                "pg_ctl",
                &[
                    "-D",
                    &data_s,
                    "-o",
                    &options,
                    "-l",
                    &dir.path().join("log").to_string_lossy(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            match started {
                Ok(()) => break port,
                Err(_) if attempt < 4 => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            base: format!("postgres://umbra@127.0.0.1:{port}"),
            own: Some(Own {
                dir,
                bin,
                as_postgres,
            }),
        })
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name_hint: &str) -> Result<String, postgres::Error> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name: String = format!(
            "t_{}_{}_{}_{nanos}",
            name_hint
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(24)
                .collect::<String>()
                .to_ascii_lowercase(),
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let mut admin =
            postgres::Client::connect(&format!("{}/postgres", self.base), postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(format!("{}/{name}", self.base))
    }

    /// The server's base URL (no database).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Restarts the server the way a crash would (`pg_ctl restart -m
    /// immediate`); only for a cluster of our own.
    pub fn restart_immediate(&self) -> std::io::Result<()> {
        let own = self
            .own
            .as_ref()
            .ok_or_else(|| std::io::Error::other("not our cluster"))?;
        let data = own.dir.path().join("data");
        run(
            &own.bin,
            own.as_postgres,
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                // Its output to the log: a server holding our pipe open
                // would keep us waiting for pg_ctl's last word.
                "-l",
                &own.dir.path().join("log").to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let data = own.dir.path().join("data");
            let _ = run(
                &own.bin,
                own.as_postgres,
                "pg_ctl",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}

/// Waits until `url` answers, for up to `within`.
pub fn wait_ready(url: &str, within: Duration) -> Result<(), postgres::Error> {
    let deadline = Instant::now() + within;
    loop {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
