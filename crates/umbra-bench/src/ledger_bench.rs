//! `umbra bench groups`: how long a group change takes when several members
//! make one at the same moment (the epoch ledger orders them: one wins each
//! epoch, the others apply it and try again).
//!
//! `umbra server` runs as a child process. `--members` users form one group;
//! each member has a partner outside it. For each contention level C, over
//! `--rounds` rounds, C members at once (each on a thread of its own, with
//! its own runtime and profile, as separate devices are) add their partner,
//! or remove it the round after, so the group's size stays between M and
//! M + C. Reported per level: the change's delay from start to done
//! (`group add` / `group remove` as the command runs them: fetch what
//! waits, claim, and after each lost claim apply the winner and claim again)
//! and how many claims lost per change, from the server's metrics.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use umbra_client::Client;

use crate::business_load::percentile_ms;
use crate::util::{RemoveOnDrop, start_server};

/// Flags of `umbra bench groups`.
#[derive(Debug, Clone, Args)]
pub struct LedgerBenchArgs {
    /// Members of the group (each may change it).
    #[arg(long, default_value_t = 8)]
    pub members: usize,
    /// How many members change the group at once, one level after another.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub contention: Vec<usize>,
    /// Rounds per level.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// The `umbra` binary to run the server with [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
}

/// One contention level.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Members changing the group at once.
    pub at_once: usize,
    /// Changes made.
    pub changes: usize,
    /// Delay of a change, ms.
    pub p50_ms: f64,
    /// Delay of a change, ms.
    pub p99_ms: f64,
    /// Claims that lost, per change.
    pub lost_per_change: f64,
}

/// What `umbra bench groups` reports.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    /// Members of the group.
    pub members: usize,
    /// Each level.
    pub levels: Vec<Level>,
}

fn name(i: usize) -> String {
    format!("m{i:03}")
}

fn partner(i: usize) -> String {
    format!("p{i:03}")
}

/// Runs the bench.
pub async fn run(args: &LedgerBenchArgs) -> anyhow::Result<LedgerReport> {
    let most = args.contention.iter().copied().max().unwrap_or(1);
    if args.members < 2 || most > args.members || args.contention.contains(&0) {
        bail!("contention levels must be between 1 and --members (at least 2)");
    }
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let dir = std::env::temp_dir().join(format!("umbra-bench-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    crate::note!("starting umbra server");
    let mut server = start_server(&bin, &dir.join("server"), &dir.join("server.log")).await?;
    let (invite, metrics) = (server.invite.clone(), server.metrics.clone());

    crate::note!("registering {} members and their partners", args.members);
    for i in 0..args.members {
        Client::register(&dir.join(name(i)), &invite, &name(i), None, None).await?;
        Client::register(&dir.join(partner(i)), &invite, &partner(i), None, None).await?;
    }
    let others: Vec<String> = (1..args.members).map(name).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    Client::open(&dir.join(name(0)), None)?
        .group_create("g", &others)
        .await?;
    for i in 1..args.members {
        Client::open(&dir.join(name(i)), None)?.sync().await?;
    }

    let mut levels = Vec::new();
    for &c in &args.contention {
        crate::note!("{c} members at once, {} rounds", args.rounds);
        let lost_before = metric(&metrics, "umbra_epochs_lost_total")?;
        let start = Arc::new(Barrier::new(c));
        let threads: Vec<_> = (0..c)
            .map(|i| {
                let (profile, start, rounds) = (dir.join(name(i)), start.clone(), args.rounds);
                std::thread::spawn(move || member(&profile, i, rounds, &start))
            })
            .collect();
        let mut delays = Vec::new();
        for t in threads {
            delays.extend(
                t.join()
                    .map_err(|_| anyhow::anyhow!("a member's thread panicked"))??,
            );
        }
        let lost = metric(&metrics, "umbra_epochs_lost_total")? - lost_before;
        levels.push(Level {
            at_once: c,
            changes: delays.len(),
            p50_ms: percentile_ms(&delays, 50.0),
            p99_ms: percentile_ms(&delays, 99.0),
            lost_per_change: lost / delays.len().max(1) as f64,
        });
    }
    let _ = server.child.kill().await;
    Ok(LedgerReport {
        members: args.members,
        levels,
    })
}

/// One member's rounds: add its partner, remove it the next round; the
/// delay of each change, µs. Its partner ends outside the group.
fn member(profile: &Path, i: usize, rounds: usize, start: &Barrier) -> anyhow::Result<Vec<u64>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client = Client::open(profile, None)?;
    let who = partner(i);
    let mut delays = Vec::new();
    let mut inside = false;
    for _ in 0..rounds.max(1).next_multiple_of(2) {
        start.wait();
        let t = Instant::now();
        if inside {
            rt.block_on(client.group_remove("g", &who))?;
        } else {
            rt.block_on(client.group_add("g", &[who.as_str()]))?;
        }
        delays.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        inside = !inside;
    }
    Ok(delays)
}

/// A counter from the server's Prometheus endpoint.
fn metric(addr: &str, name: &str) -> anyhow::Result<f64> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .with_context(|| format!("no {name} in the server's metrics"))
}

impl fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "A group of {} members; changes (add or remove) made at once:",
            self.members
        )?;
        writeln!(
            f,
            "{:>8} {:>8} {:>10} {:>10} {:>16}",
            "at once", "changes", "p50 ms", "p99 ms", "lost per change"
        )?;
        for l in &self.levels {
            writeln!(
                f,
                "{:>8} {:>8} {:>10.1} {:>10.1} {:>16.2}",
                l.at_once, l.changes, l.p50_ms, l.p99_ms, l.lost_per_change
            )?;
        }
        Ok(())
    }
}
