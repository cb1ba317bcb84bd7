//! `umbra bench devices`: what a message costs when each user has several
//! devices (every device is its own member: a message is sealed once per
//! device of the recipient and once per other device of the sender).
//!
//! `umbra server` runs as a child process. For each device count D, two
//! fresh users each link D − 1 more devices (through the real linking
//! exchange, fingerprint confirmed as a user would), then one sends
//! `--messages` 1:1 messages to the other. The receivers stay offline, so
//! every envelope of a message is in the server's database, where the bench
//! adds up their sizes. Reported per D: envelopes and sealed bytes per
//! message, and the send's time (encrypt, seal, hand to the server and have
//! it accepted) p50/p99.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use umbra_client::Client;
use umbra_client::devices::Joining;

use crate::business_load::percentile_ms;
use crate::util::{RemoveOnDrop, start_server};

/// Flags of `umbra bench devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesBenchArgs {
    /// Devices per user, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub devices: Vec<usize>,
    /// Messages sent per run.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
    /// The `umbra` binary to run the server with [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
}

/// One device count.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Devices of each of the two users.
    pub devices: usize,
    /// Envelopes per message (stored by the server).
    pub envelopes_per_message: f64,
    /// Sealed bytes per message, all envelopes.
    pub bytes_per_message: f64,
    /// Sending one message, ms.
    pub send_p50_ms: f64,
    /// Sending one message, ms.
    pub send_p99_ms: f64,
}

/// What `umbra bench devices` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DevicesReport {
    /// Each device count.
    pub runs: Vec<Run>,
}

/// Links a new device (profile `new`) to the account of `primary`.
async fn link(primary: &mut Client, new: &Path) -> anyhow::Result<()> {
    let offer = primary.link_offer()?;
    let joining = Joining::start(&offer.link, None, None)?;
    let fingerprint = joining.fingerprint();
    let timeout = Duration::from_secs(60);
    let (asked, joined) = tokio::join!(
        async {
            let ask = primary.link_wait(&offer, timeout).await?;
            if ask.fingerprint != fingerprint {
                bail!("the linked device shows another fingerprint");
            }
            primary.link_approve(&offer, &ask).await?;
            Ok(())
        },
        joining.finish(new, None, timeout)
    );
    asked?;
    joined?;
    Ok(())
}

/// Sealed bytes and envelopes the server holds.
fn stored(db: &Path) -> anyhow::Result<(i64, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening the server's database")?;
    Ok(conn.query_row(
        "SELECT count(*), coalesce(sum(length(sealed)), 0) FROM envelopes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Runs the bench.
pub async fn run(args: &DevicesBenchArgs) -> anyhow::Result<DevicesReport> {
    if args.devices.iter().any(|&d| d == 0 || d > 6) || args.messages == 0 {
        bail!("devices per user go from 1 to 6, and at least one message is sent");
    }
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let dir = std::env::temp_dir().join(format!("umbra-bench-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    crate::note!("starting umbra server");
    let data = dir.join("server");
    let mut server = start_server(&bin, &data, &dir.join("server.log")).await?;
    let invite = server.invite.clone();
    let db = data.join("umbra.db");

    let mut runs = Vec::new();
    for &d in &args.devices {
        crate::note!("{d} device(s) per user: linking");
        let (a, b) = (format!("sender{d}"), format!("receiver{d}"));
        let mut sender = Client::register(&dir.join(&a), &invite, &a, None, None).await?;
        let mut receiver = Client::register(&dir.join(&b), &invite, &b, None, None).await?;
        for i in 1..d {
            link(&mut sender, &dir.join(format!("{a}-{i}"))).await?;
            link(&mut receiver, &dir.join(format!("{b}-{i}"))).await?;
        }
        // The conversation (its Welcomes are not counted).
        sender.send(&b, "hello").await?;
        crate::note!("{d} device(s) per user: {} messages", args.messages);
        let (count_before, bytes_before) = stored(&db)?;
        let mut times = Vec::with_capacity(args.messages);
        for i in 0..args.messages {
            let t = Instant::now();
            sender
                .send(&b, &format!("message {i} of the device bench"))
                .await?;
            times.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        let (count_after, bytes_after) = stored(&db)?;
        let n = args.messages as f64;
        runs.push(Run {
            devices: d,
            envelopes_per_message: (count_after - count_before) as f64 / n,
            bytes_per_message: (bytes_after - bytes_before) as f64 / n,
            send_p50_ms: percentile_ms(&times, 50.0),
            send_p99_ms: percentile_ms(&times, 99.0),
        });
    }
    let _ = server.child.kill().await;
    Ok(DevicesReport { runs })
}

impl fmt::Display for DevicesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "devices per user | envelopes per message | bytes per message | send p50 | send p99"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "{:>16} | {:>21.1} | {:>17.0} | {:>5.1} ms | {:>5.1} ms",
                r.devices,
                r.envelopes_per_message,
                r.bytes_per_message,
                r.send_p50_ms,
                r.send_p99_ms
            )?;
        }
        Ok(())
    }
}
