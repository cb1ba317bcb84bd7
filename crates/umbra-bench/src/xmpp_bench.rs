//! `umbra bench xmpp`: the workload of `umbra bench`, against an XMPP
//! server (ejabberd, started privately by default): `clients` receivers and
//! `clients` senders, logged in; each sender sends chat messages with
//! `body_bytes` bodies to the receivers in turn (as `umbra bench` sends its
//! envelopes), keeping at most `window` the server has not acknowledged
//! (stream management's `<a h=…/>`, the counterpart of Umbra's `Accepted`),
//! optionally paced to `rate` a second in all; receivers record the delay
//! from the time written in each body. Then `idle_sessions` logged-in idle
//! sessions: the server's memory growth per session, and logins a second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::ejabberd::Ejabberd;
use crate::memory::rss_kib;
use crate::progress::Progress;
use crate::report::{MemoryReport, Report, ThroughputReport};
use crate::throughput::{new_histogram, summarize, wait_delivered};
use crate::util::random_token;
use crate::xmpp::{self, ACK_REQUEST, Session};

/// Sessions set up at once.
const SETUP_CONCURRENCY: usize = 64;
/// Idle sessions opened at once (as `umbra bench`'s memory phase).
const IDLE_CONCURRENCY: usize = 128;
/// A sender asks for an acknowledgement after this many messages.
const ACK_EVERY: u64 = 16;
/// Every account's password.
const PASSWORD: &str = "umbra-bench";

/// Flags of `umbra bench xmpp`.
#[derive(Debug, Clone, clap::Args)]
pub struct XmppBenchArgs {
    /// An XMPP server already running (c2s without TLS, in-band
    /// registration open, domain `localhost`); without it a private
    /// ejabberd is started and stopped.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// With --server: its process id, for the memory phase.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The ejabberdctl to start ejabberd with.
    #[arg(long, default_value = "ejabberdctl")]
    pub ejabberdctl: String,
    /// Receiving clients; as many senders run alongside.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Messages to deliver.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Size of each message body in bytes (at least 16).
    #[arg(long, default_value_t = 256)]
    pub body_bytes: usize,
    /// Messages each sender keeps unacknowledged by the server.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Total messages per second across all senders (0: as fast as the
    /// window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The run stops after this many seconds even if not everything arrived.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
    /// Logged-in idle sessions for the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle_sessions: usize,
    /// Do not draw the progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the bench, starting ejabberd unless a server is named.
pub async fn run(args: &XmppBenchArgs) -> anyhow::Result<Report> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match args.server {
        Some(addr) => measure(addr, args.server_pid, args).await,
        None => {
            let server = Ejabberd::start(&args.ejabberdctl, &std::env::temp_dir()).await?;
            let r = measure(server.addr, Some(server.pid), args).await;
            server.stop().await;
            r
        }
    }
}

async fn measure(
    addr: SocketAddr,
    pid: Option<u32>,
    args: &XmppBenchArgs,
) -> anyhow::Result<Report> {
    let run = random_token();
    let throughput = throughput(addr, args, &run).await?;
    let memory = match (pid, args.idle_sessions) {
        (Some(pid), k) if k > 0 => Some(memory(addr, pid, k, args, &run).await?),
        _ => None,
    };
    Ok(Report { throughput, memory })
}

/// Opens `n` sessions named `{prefix}{i}`, registering each.
async fn sessions(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
    acks: bool,
    concurrency: usize,
    opened: Option<Arc<AtomicU64>>,
) -> anyhow::Result<Vec<Session>> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < concurrency {
            let user = format!("{prefix}{started}");
            set.spawn(async move { Session::open(addr, &user, PASSWORD, true, acks).await });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => {
                out.push(r??);
                if let Some(o) = &opened {
                    o.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => break,
        }
    }
    Ok(out)
}

async fn throughput(
    addr: SocketAddr,
    args: &XmppBenchArgs,
    run: &str,
) -> anyhow::Result<ThroughputReport> {
    let n = args.clients.max(1);
    let total = args.messages;
    let receivers = sessions(addr, &format!("r{run}x"), n, false, SETUP_CONCURRENCY, None)
        .await
        .context("setting up receivers")?;
    let senders = sessions(addr, &format!("s{run}x"), n, true, SETUP_CONCURRENCY, None)
        .await
        .context("setting up senders")?;
    let targets: Arc<Vec<String>> = Arc::new(receivers.iter().map(|s| s.jid.clone()).collect());

    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut recv_tasks = JoinSet::new();
    for s in receivers {
        recv_tasks.spawn(receive(
            s,
            epoch,
            delivered.clone(),
            last.clone(),
            stop_rx.clone(),
        ));
    }
    let mut send_tasks = JoinSet::new();
    let per = total / n as u64;
    let extra = total % n as u64;
    for (i, s) in senders.into_iter().enumerate() {
        let job = Job {
            index: i,
            count: per + u64::from((i as u64) < extra),
            window: args.window.max(1) as u64,
            body_bytes: args.body_bytes.max(16),
            targets: targets.clone(),
            epoch,
            interval: (args.rate > 0).then(|| Duration::from_secs_f64(n as f64 / args.rate as f64)),
        };
        send_tasks.spawn(send(s, job, stop_rx.clone()));
    }
    let timed_out = wait_delivered(
        &delivered,
        &AtomicU64::new(0),
        total,
        epoch + Duration::from_secs(args.max_secs),
        !args.quiet,
    )
    .await;
    let _ = stop_tx.send(true);
    let mut hist = new_histogram()?;
    while let Some(h) = recv_tasks.join_next().await {
        if let Ok(Some(h)) = h {
            hist.add(&h).context("merging histograms")?;
        }
    }
    send_tasks.shutdown().await;
    Ok(summarize(
        &hist,
        delivered.load(Ordering::Relaxed),
        last.load(Ordering::Relaxed),
        timed_out,
    ))
}

async fn receive(
    mut s: Session,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Option<Histogram<u64>> {
    let mut hist = new_histogram().ok()?;
    let mut bodies = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = s.reader.bodies(&mut bodies) => {
                if r.is_err() || bodies.is_empty() {
                    break;
                }
            }
        }
        let now = epoch.elapsed().as_nanos() as u64;
        for b in bodies.drain(..) {
            let sent = b
                .get(..16)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if let Some(sent) = sent {
                hist.saturating_record(now.saturating_sub(sent) / 1000);
            }
            delivered.fetch_add(1, Ordering::Relaxed);
        }
        last.fetch_max(now, Ordering::Relaxed);
    }
    Some(hist)
}

struct Job {
    index: usize,
    count: u64,
    window: u64,
    body_bytes: usize,
    targets: Arc<Vec<String>>,
    epoch: Instant,
    interval: Option<Duration>,
}

async fn send(s: Session, job: Job, mut stop: watch::Receiver<bool>) {
    let Session {
        mut reader,
        mut writer,
        ..
    } = s;
    let acked = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(Notify::new());
    let acks = {
        let (acked, moved) = (acked.clone(), moved.clone());
        async move {
            while let Ok(h) = reader.acked().await {
                acked.fetch_max(h, Ordering::Relaxed);
                moved.notify_one();
            }
        }
    };
    let sends = async move {
        let n = job.targets.len();
        let start = Instant::now();
        let mut out = Vec::with_capacity(64 * 1024);
        let filler = vec![b'x'; job.body_bytes - 16];
        let mut body = Vec::with_capacity(job.body_bytes);
        for k in 0..job.count {
            if let Some(every) = job.interval {
                let due = start + every.mul_f64(k as f64 + job.index as f64 / n as f64);
                if due > Instant::now() {
                    out.extend_from_slice(ACK_REQUEST);
                    if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                        return;
                    }
                    out.clear();
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            while k - acked.load(Ordering::Relaxed) >= job.window {
                out.extend_from_slice(ACK_REQUEST);
                if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                out.clear();
                let _ = tokio::time::timeout(Duration::from_secs(1), moved.notified()).await;
            }
            let ts = job.epoch.elapsed().as_nanos() as u64;
            body.clear();
            body.extend_from_slice(format!("{ts:016x}").as_bytes());
            body.extend_from_slice(&filler);
            let to = &job.targets[(job.index + k as usize) % n];
            xmpp::message(to, &body, &mut out);
            if (k + 1) % ACK_EVERY == 0 {
                out.extend_from_slice(ACK_REQUEST);
            }
            if out.len() >= 48 * 1024 {
                if writer.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        }
        out.extend_from_slice(ACK_REQUEST);
        let _ = writer.write_all(&out).await;
        let _ = writer.flush().await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = stop.changed() => {}
        () = acks => {}
        () = sends => {}
    }
}

async fn memory(
    addr: SocketAddr,
    pid: u32,
    k: usize,
    args: &XmppBenchArgs,
    run: &str,
) -> anyhow::Result<MemoryReport> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid)?;
    let opened = Arc::new(AtomicU64::new(0));
    let bar = Progress::start("idle sessions", opened.clone(), k as u64, !args.quiet);
    let start = Instant::now();
    let idle = sessions(
        addr,
        &format!("i{run}x"),
        k,
        false,
        IDLE_CONCURRENCY,
        Some(opened),
    )
    .await
    .context("opening idle sessions")?;
    let took = start.elapsed();
    drop(bar);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let connections = idle.len();
    drop(idle);
    Ok(MemoryReport {
        connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: after.saturating_sub(before) * 1024 / connections.max(1) as u64,
        logins_per_second: connections as f64 / took.as_secs_f64().max(1e-3),
    })
}
