//! Small pieces every bench shares: the wall clock in seconds, random
//! tokens for credentials, a scratch directory removed when dropped, and a
//! child process whose output goes to a log the bench waits on.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use tokio::process::{Child, Command};

use rand::RngCore;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 16 random hex digits.
pub(crate) fn random_token() -> String {
    let mut t = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut t);
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes a directory when dropped.
pub(crate) struct RemoveOnDrop(pub(crate) std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `bin ARGS` with stdout and stderr into `log` (created), killed
/// when dropped; `rust_log` sets its RUST_LOG (else it inherits ours).
pub(crate) fn spawn_logged(
    bin: &str,
    args: &[String],
    log: &Path,
    rust_log: Option<&str>,
) -> anyhow::Result<Child> {
    let f = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("UMBRA_PROFILE")
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .kill_on_drop(true);
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    Ok(cmd.spawn()?)
}

/// The first line of `log` holding `needle`, waiting up to `within`.
pub(crate) async fn wait_for_line(
    log: &Path,
    needle: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        if Instant::now() > deadline {
            bail!("`{needle}` never appeared in {}:\n{text}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bench's own `umbra server` (SQLite in `data`, log in `log`, no
/// introduction budget to speak of), killed when dropped.
pub(crate) struct BenchServer {
    /// The process.
    pub child: Child,
    /// Its invite link.
    pub invite: String,
    /// Its metrics address.
    pub metrics: String,
}

/// Starts `bin server` for a bench and waits until it is ready.
pub(crate) async fn start_server(
    bin: &str,
    data: &Path,
    log: &Path,
) -> anyhow::Result<BenchServer> {
    start_server_with(bin, data, log, &[]).await
}

/// [`start_server`] with more flags.
pub(crate) async fn start_server_with(
    bin: &str,
    data: &Path,
    log: &Path,
    extra: &[&str],
) -> anyhow::Result<BenchServer> {
    let args: Vec<String> = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--introductions-per-hour",
        "1000000",
        "--data-dir",
    ]
    .into_iter()
    .map(String::from)
    .chain([data.to_string_lossy().into_owned()])
    .chain(extra.iter().map(|s| s.to_string()))
    .collect();
    // At info, the server's ready line names its invite and metrics.
    let child = spawn_logged(bin, &args, log, Some("info"))?;
    let ready = wait_for_line(log, "umbra server ready", Duration::from_secs(30)).await?;
    let field = |key: &str| -> anyhow::Result<String> {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {key} in {ready}"))
    };
    Ok(BenchServer {
        invite: field("invite=")?,
        metrics: field("metrics=")?,
        child,
    })
}
