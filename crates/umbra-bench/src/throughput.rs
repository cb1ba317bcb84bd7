//! Phase 1: delivered messages per second and end-to-end latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::RngCore;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use umbra_wire::invite::Invite;
use umbra_wire::proto::{self, ServerFrame, client_frame::Body as Req, server_frame::Body as Resp};

use crate::args::BenchArgs;
use crate::progress::Progress;
use crate::report::ThroughputReport;
use crate::session::{Account, Session};

/// Sessions set up at once.
const SETUP_CONCURRENCY: usize = 64;
/// Acks are sent in batches of this many ids (or after a short pause).
const ACK_BATCH: usize = 64;

struct Target {
    mailbox_id: Vec<u8>,
    token: Vec<u8>,
}

/// The node client `i` of a kind uses: receivers take the nodes in turn,
/// senders the node after their receiver's.
fn node_of(i: usize, sender: bool, nodes: usize) -> usize {
    (i + usize::from(sender)) % nodes
}

/// Runs phase 1 against `nodes` (one, or several of one service).
pub async fn run(nodes: &[Invite], args: &BenchArgs) -> anyhow::Result<ThroughputReport> {
    let n = args.clients.max(1);
    let total = args.messages;
    let size = args.envelope_bytes.max(17);

    let receivers = setup(nodes, n, true)
        .await
        .context("setting up receivers")?;
    let senders = setup(nodes, n, false).await.context("setting up senders")?;
    let targets: Arc<Vec<Target>> = Arc::new(
        receivers
            .iter()
            .map(|(_, a)| {
                let a = a.as_ref();
                Target {
                    mailbox_id: a.map(|a| a.mailbox_id.clone()).unwrap_or_default(),
                    token: a.map(|a| a.token.clone()).unwrap_or_default(),
                }
            })
            .collect(),
    );

    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut recv_tasks = JoinSet::new();
    for (i, (s, _)) in receivers.into_iter().enumerate() {
        recv_tasks.spawn(receive(
            s,
            node_of(i, false, nodes.len()) as u8,
            epoch,
            delivered.clone(),
            last_delivery.clone(),
            stop_rx.clone(),
        ));
    }
    let mut send_tasks = JoinSet::new();
    let per_sender = total / n as u64;
    let extra = total % n as u64;
    for (i, (s, _)) in senders.into_iter().enumerate() {
        let count = per_sender + u64::from((i as u64) < extra);
        let mut body = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut body);
        // Byte 8: the sender's node, so a receiver tells crossings apart.
        body[8] = node_of(i, true, nodes.len()) as u8;
        let job = SendJob {
            index: i,
            count,
            window: args.window.max(1),
            body,
            targets: targets.clone(),
            epoch,
            refused: refused.clone(),
            interval: (args.rate > 0).then(|| Duration::from_secs_f64(n as f64 / args.rate as f64)),
        };
        send_tasks.spawn(send(s, job, stop_rx.clone()));
    }

    let timed_out = wait_delivered(
        &delivered,
        &refused,
        total,
        epoch + Duration::from_secs(args.max_secs),
        args.progress(),
    )
    .await;
    let _ = stop_tx.send(true);
    let mut hist = new_histogram()?;
    let mut crossed = new_histogram()?;
    while let Some(h) = recv_tasks.join_next().await {
        if let Ok(Some((all, across))) = h {
            hist.add(&all).context("merging histograms")?;
            crossed.add(&across).context("merging histograms")?;
        }
    }
    send_tasks.shutdown().await;

    let mut report = summarize(
        &hist,
        delivered.load(Ordering::Relaxed),
        last_delivery.load(Ordering::Relaxed),
        timed_out,
    );
    report.send_errors = refused.load(Ordering::Relaxed);
    report.across_nodes = (nodes.len() > 1).then(|| crate::report::AcrossNodes {
        nodes: nodes.len(),
        delivered: crossed.len(),
        p50_ms: crossed.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: crossed.value_at_quantile(0.99) as f64 / 1000.0,
    });
    Ok(report)
}

/// Waits, showing progress, until `delivered` and `refused` make `total`
/// or `deadline` passes; whether it passed.
pub(crate) async fn wait_delivered(
    delivered: &Arc<AtomicU64>,
    refused: &AtomicU64,
    total: u64,
    deadline: Instant,
    progress: bool,
) -> bool {
    let _bar = Progress::start("delivered", delivered.clone(), total, progress);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if delivered.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) >= total {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
    }
}

/// A run's figures from its delay histogram (microseconds), how many
/// arrived, and when the last did (nanoseconds after the first send).
pub(crate) fn summarize(
    hist: &Histogram<u64>,
    delivered: u64,
    last_ns: u64,
    timed_out: bool,
) -> ThroughputReport {
    let elapsed = Duration::from_nanos(last_ns).max(Duration::from_millis(1));
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    ThroughputReport {
        delivered,
        send_errors: 0,
        elapsed,
        per_second: delivered as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        timed_out,
        across_nodes: None,
    }
}

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, up to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating histogram")
}

/// Opens `n` sessions (registered and logged in when `login`: receivers;
/// else senders), each on its node, in order.
async fn setup(
    nodes: &[Invite],
    n: usize,
    login: bool,
) -> anyhow::Result<Vec<(Session, Option<Account>)>> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < SETUP_CONCURRENCY {
            let invite = nodes[node_of(started, !login, nodes.len())].clone();
            let index = started;
            set.spawn(async move {
                let mut s = Session::connect(&invite).await?;
                let acct = if login {
                    let a = s.register().await?;
                    s.login(&a).await?;
                    Some(a)
                } else {
                    None
                };
                Ok::<_, anyhow::Error>((index, s, acct))
            });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => out.push(r??),
            None => break,
        }
    }
    // In client order, so client i is on node_of(i).
    out.sort_by_key(|(i, _, _)| *i);
    Ok(out.into_iter().map(|(_, s, a)| (s, a)).collect())
}

/// Receives until stopped: the delay of everything, and of what came from
/// a sender on another node than `node`.
async fn receive(
    mut s: Session,
    node: u8,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    last_delivery: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Option<(Histogram<u64>, Histogram<u64>)> {
    let mut hist = new_histogram().ok()?;
    let mut crossed = new_histogram().ok()?;
    let mut acks: Vec<u64> = Vec::with_capacity(ACK_BATCH);
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = s.reader.recv::<ServerFrame>() => f,
            () = tokio::time::sleep(Duration::from_millis(5)), if !acks.is_empty() => {
                if flush_acks(&mut s, &mut acks).await.is_err() { break; }
                continue;
            }
        };
        let Ok(Some(frame)) = frame else { break };
        if let Some(Resp::Deliver(d)) = frame.body {
            let now = epoch.elapsed().as_nanos() as u64;
            if let Some(ts) = d.sealed.get(..8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(ts);
                let sent = u64::from_be_bytes(b);
                let delay = now.saturating_sub(sent) / 1000;
                hist.saturating_record(delay);
                if d.sealed.get(8).is_some_and(|from| *from != node) {
                    crossed.saturating_record(delay);
                }
            }
            delivered.fetch_add(1, Ordering::Relaxed);
            last_delivery.fetch_max(now, Ordering::Relaxed);
            acks.push(d.envelope_id);
            if acks.len() >= ACK_BATCH && flush_acks(&mut s, &mut acks).await.is_err() {
                break;
            }
        }
    }
    Some((hist, crossed))
}

async fn flush_acks(s: &mut Session, acks: &mut Vec<u64>) -> anyhow::Result<()> {
    s.queue(Req::Ack(proto::Ack {
        envelope_ids: std::mem::take(acks),
    }))?;
    s.writer.flush().await?;
    Ok(())
}

struct SendJob {
    index: usize,
    count: u64,
    window: usize,
    body: Vec<u8>,
    targets: Arc<Vec<Target>>,
    epoch: Instant,
    refused: Arc<AtomicU64>,
    /// Pause between this sender's sends (open loop), if rate-limited.
    interval: Option<Duration>,
}

async fn send(s: Session, job: SendJob, mut stop: watch::Receiver<bool>) {
    let Session {
        mut reader,
        mut writer,
        ..
    } = s;
    let mut ids = Session::id_source();
    let window = Arc::new(Semaphore::new(job.window));
    let replies = {
        let window = window.clone();
        let refused = job.refused.clone();
        let count = job.count;
        async move {
            let mut got = 0;
            while got < count {
                let Ok(Some(f)) = reader.recv::<ServerFrame>().await else {
                    return;
                };
                if f.request_id == 0 {
                    continue;
                }
                got += 1;
                window.add_permits(1);
                if !matches!(f.body, Some(Resp::Accepted(_))) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let sends = async move {
        let n = job.targets.len();
        let start = Instant::now();
        for k in 0..job.count {
            if let Some(every) = job.interval {
                // Senders are staggered so the total rate is smooth.
                let due = start + every.mul_f64(k as f64 + job.index as f64 / n as f64);
                if due > Instant::now() {
                    if writer.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let permit = match window.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    if writer.flush().await.is_err() {
                        return;
                    }
                    match window.acquire().await {
                        Ok(p) => p,
                        Err(_) => return,
                    }
                }
            };
            permit.forget();
            let t = &job.targets[(job.index + k as usize) % n];
            let mut sealed = job.body.clone();
            let ts = job.epoch.elapsed().as_nanos() as u64;
            sealed[..8].copy_from_slice(&ts.to_be_bytes());
            let frame = proto::ClientFrame {
                request_id: ids(),
                body: Some(Req::Send(proto::SendEnvelope {
                    mailbox_id: t.mailbox_id.clone(),
                    delivery_token: t.token.clone(),
                    sealed,
                    online_only: false,
                })),
            };
            if writer.queue(&frame).is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
        // Keep the connection open until the replies are in.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = stop.changed() => {}
        () = replies => {}
        () = sends => {}
    }
}
