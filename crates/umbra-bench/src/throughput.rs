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

/// Runs phase 1.
pub async fn run(invite: &Invite, args: &BenchArgs) -> anyhow::Result<ThroughputReport> {
    let n = args.clients.max(1);
    let total = args.messages;
    let size = args.envelope_bytes.max(16);

    let receivers = setup(invite, n, true)
        .await
        .context("setting up receivers")?;
    let senders = setup(invite, n, false)
        .await
        .context("setting up senders")?;
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
    for (s, _) in receivers {
        recv_tasks.spawn(receive(
            s,
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

    let progress = Progress::start("delivered", delivered.clone(), total, args.progress());
    let deadline = epoch + Duration::from_secs(args.max_secs);
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = delivered.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
        if done >= total {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    drop(progress);
    let _ = stop_tx.send(true);
    let mut hist = new_histogram()?;
    while let Some(h) = recv_tasks.join_next().await {
        if let Ok(Some(h)) = h {
            hist.add(&h).context("merging histograms")?;
        }
    }
    send_tasks.shutdown().await;

    let delivered = delivered.load(Ordering::Relaxed);
    let elapsed =
        Duration::from_nanos(last_delivery.load(Ordering::Relaxed)).max(Duration::from_millis(1));
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(ThroughputReport {
        delivered,
        send_errors: refused.load(Ordering::Relaxed),
        elapsed,
        per_second: delivered as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        timed_out,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, up to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating histogram")
}

/// Opens `n` sessions (registered and logged in when `login`).
async fn setup(
    invite: &Invite,
    n: usize,
    login: bool,
) -> anyhow::Result<Vec<(Session, Option<Account>)>> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < SETUP_CONCURRENCY {
            let invite = invite.clone();
            set.spawn(async move {
                let mut s = Session::connect(&invite).await?;
                let acct = if login {
                    let a = s.register().await?;
                    s.login(&a).await?;
                    Some(a)
                } else {
                    None
                };
                Ok::<_, anyhow::Error>((s, acct))
            });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => out.push(r??),
            None => break,
        }
    }
    Ok(out)
}

async fn receive(
    mut s: Session,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    last_delivery: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Option<Histogram<u64>> {
    let mut hist = new_histogram().ok()?;
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
                hist.saturating_record(now.saturating_sub(sent) / 1000);
            }
            delivered.fetch_add(1, Ordering::Relaxed);
            last_delivery.fetch_max(now, Ordering::Relaxed);
            acks.push(d.envelope_id);
            if acks.len() >= ACK_BATCH && flush_acks(&mut s, &mut acks).await.is_err() {
                break;
            }
        }
    }
    Some(hist)
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
