//! Phase 2: server memory per idle logged-in connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use umbra_wire::invite::Invite;

use crate::progress::Progress;
use crate::report::MemoryReport;
use crate::session::Session;

const CONCURRENCY: usize = 128;

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib.parse().context("parsing VmRSS");
        }
    }
    bail!("no VmRSS line for process {pid}")
}

/// Opens `k` logged-in sessions and measures the server's RSS growth.
pub async fn run(
    invite: &Invite,
    pid: u32,
    k: usize,
    progress: bool,
) -> anyhow::Result<MemoryReport> {
    // Let the server settle after phase 1.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid)?;
    let opened = Arc::new(AtomicU64::new(0));
    let bar = Progress::start("idle sessions", opened.clone(), k as u64, progress);
    let start = std::time::Instant::now();
    let mut sessions = Vec::with_capacity(k);
    let mut set = JoinSet::new();
    let mut started = 0;
    while sessions.len() < k {
        while started < k && set.len() < CONCURRENCY {
            let invite = invite.clone();
            set.spawn(async move {
                let mut s = Session::connect(&invite).await?;
                let a = s.register().await?;
                s.login(&a).await?;
                Ok::<_, anyhow::Error>(s)
            });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => {
                sessions.push(r??);
                opened.fetch_add(1, Ordering::Relaxed);
            }
            None => break,
        }
    }
    let took = start.elapsed();
    drop(bar);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let connections = sessions.len();
    drop(sessions);
    let growth = after.saturating_sub(before) * 1024;
    Ok(MemoryReport {
        connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: growth / connections.max(1) as u64,
        logins_per_second: connections as f64 / took.as_secs_f64().max(1e-3),
    })
}
