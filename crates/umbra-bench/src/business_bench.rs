//! `umbra bench business`: how many messages a second one business sends
//! through the business host's API to distinct customers, and how long each
//! takes to reach the customer's device and to come back as a `sent`
//! webhook, on this machine.
//!
//! It starts `umbra server` and `umbra business serve` (both this binary,
//! each in its own process, measured by its scheduler run time), registers
//! one business and `customers` customers (each writes to the business
//! first, so every send is a reply in an existing conversation, the common
//! case: a first message to a new customer also claims a key package and
//! makes a group), and logs every customer's device in, as the server sees
//! it: each envelope pushed to it is timed, and acknowledged. The business's
//! system is this process: it sends `POST /v1/messages` (with an
//! idempotency key) at each offered rate for `seconds`, open loop, one
//! customer after another, over keep-alive HTTP/1.1, and runs the webhook
//! receiver. Every delay is from the moment the schedule said to send, so a
//! slow answer cannot hide the messages it held back.
//!
//! The anchor is WhatsApp's Cloud API, whose throughput tiers are 80
//! messages a second per business number by default and 1,000 at most.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::Semaphore;
use umbra_client::Client;

use crate::business_load::{self as load, Deliveries, Hooks, percentile_ms};
use crate::cpu::process_runtime_ns;
use crate::progress::Progress;
use crate::util::{RemoveOnDrop, spawn_logged, wait_for_line};

/// WhatsApp Cloud API's default throughput per business number.
pub const ANCHOR_DEFAULT: u32 = 80;
/// And its highest tier.
pub const ANCHOR_MAX: u32 = 1_000;

/// Flags of `umbra bench business`.
#[derive(Debug, Clone, clap::Args)]
pub struct BusinessBenchArgs {
    /// The `umbra` binary measured [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
    /// Distinct customers the business writes to.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Messages a second offered, one step each.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,1500,2000")]
    pub rates: Vec<u32>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Most API requests in flight at once.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// The bound a step must hold: p99 from API call to the customer's
    /// device, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub p99_ms: u64,
}

/// One offered rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Messages a second offered.
    pub offered: u32,
    /// Messages a second the API took (202).
    pub accepted_per_sec: f64,
    /// Messages that reached their customer's device.
    pub delivered: u64,
    /// Messages the API took that never reached the device (within 15 s).
    pub lost: u64,
    /// API answers other than 202, and calls that failed.
    pub errors: u64,
    /// API call to its answer, p50 and p99, ms.
    pub api_p50_ms: f64,
    /// See `api_p50_ms`.
    pub api_p99_ms: f64,
    /// API call to the customer's device, p50 and p99, ms.
    pub delivered_p50_ms: f64,
    /// See `delivered_p50_ms`.
    pub delivered_p99_ms: f64,
    /// API call to the `sent` webhook, p50 and p99, ms.
    pub webhook_p50_ms: f64,
    /// See `webhook_p50_ms`.
    pub webhook_p99_ms: f64,
    /// The business host's CPU, cores.
    pub host_cores: f64,
    /// The messaging server's CPU, cores.
    pub server_cores: f64,
}

/// What the bench found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusinessBenchReport {
    /// Customers written to.
    pub customers: usize,
    /// Seconds per step.
    pub seconds: u64,
    /// The bound held: p99 to the device, ms.
    pub p99_bound_ms: u64,
    /// Each offered rate.
    pub steps: Vec<Step>,
    /// The highest rate taken in full with every message delivered within
    /// the bound.
    pub sustained: Option<u32>,
}

impl BusinessBenchReport {
    fn holds(&self, s: &Step) -> bool {
        s.errors == 0
            && s.lost == 0
            && s.accepted_per_sec >= 0.97 * f64::from(s.offered)
            && s.delivered_p99_ms < self.p99_bound_ms as f64
    }
}

impl fmt::Display for BusinessBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "One business, {} customers, {} s per rate; delays from the scheduled send:",
            self.customers, self.seconds
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>9} {:>5} {:>6} {:>15} {:>19} {:>17} {:>6} {:>7}",
            "offered",
            "taken/s",
            "delivered",
            "lost",
            "errors",
            "API p50/p99",
            "delivered p50/p99",
            "webhook p50/p99",
            "host",
            "server"
        )?;
        for s in &self.steps {
            writeln!(
                f,
                "{:>8} {:>9.0} {:>9} {:>5} {:>6} {:>7.1}/{:<7.1} {:>9.1}/{:<9.1} {:>8.1}/{:<8.1} {:>6.2} {:>7.2}{}",
                s.offered,
                s.accepted_per_sec,
                s.delivered,
                s.lost,
                s.errors,
                s.api_p50_ms,
                s.api_p99_ms,
                s.delivered_p50_ms,
                s.delivered_p99_ms,
                s.webhook_p50_ms,
                s.webhook_p99_ms,
                s.host_cores,
                s.server_cores,
                if self.holds(s) {
                    ""
                } else {
                    "  (over the bound)"
                }
            )?;
        }
        match self.sustained {
            Some(r) => write!(
                f,
                "Sustained: {r} messages/s with p99 to the device under {} ms: {:.1}x WhatsApp Cloud API's default tier ({ANCHOR_DEFAULT}/s), {:.2}x its highest ({ANCHOR_MAX}/s)",
                self.p99_bound_ms,
                f64::from(r) / f64::from(ANCHOR_DEFAULT),
                f64::from(r) / f64::from(ANCHOR_MAX)
            ),
            None => write!(f, "No rate held the bound of {} ms.", self.p99_bound_ms),
        }
    }
}

fn customer_name(i: usize) -> String {
    format!("c{i:05}")
}

/// Registers the business and the customers; each customer writes first.
async fn people(dir: &Path, invite: &str, customers: usize) -> anyhow::Result<PathBuf> {
    let shop = dir.join("shop");
    let mut business = Client::register(&shop, invite, "shop", None, None).await?;
    business.register_business("Shop", &[]).await?;
    let own = business.make_hosting(None)?;
    business.set_hosting(own).await?;
    drop(business);
    let done = Arc::new(AtomicU64::new(0));
    let _p = Progress::start("customers", done.clone(), customers as u64, true);
    let local = tokio::task::LocalSet::new();
    let slots = Arc::new(Semaphore::new(16));
    local
        .run_until(async {
            let mut tasks = Vec::new();
            for i in 0..customers {
                let (slots, done, invite) = (slots.clone(), done.clone(), invite.to_string());
                let profile = dir.join(customer_name(i));
                tasks.push(tokio::task::spawn_local(async move {
                    let _slot = slots.acquire_owned().await?;
                    let mut c =
                        Client::register(&profile, &invite, &customer_name(i), None, None).await?;
                    c.send("shop", "hello").await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(())
        })
        .await?;
    Ok(shop)
}

/// Every conversation the host lists: id → customer index.
async fn conversations(api: &str, token: &str, want: usize) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut ids = vec![String::new(); want];
        let mut found = 0;
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{api}/v1/conversations?limit=200");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let out = Command::new("curl")
                .args(["-s", "-H", &format!("Authorization: Bearer {token}"), &url])
                .output()
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for c in v["conversations"].as_array().into_iter().flatten() {
                let peer = c["peer"].as_str().unwrap_or_default();
                if let Some(i) = peer.strip_prefix('c').and_then(|n| n.parse::<usize>().ok())
                    && i < want
                {
                    ids[i] = c["id"].as_str().unwrap_or_default().to_string();
                    found += 1;
                }
            }
            match v["next_after"].as_str() {
                Some(a) => after = Some(a.to_string()),
                None => break,
            }
        }
        if found >= want {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            bail!("the host took in only {found} of {want} conversations");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the whole bench.
pub async fn run(args: &BusinessBenchArgs) -> anyhow::Result<BusinessBenchReport> {
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = std::env::temp_dir().join(format!("umbra-bench-business-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());

    crate::note!("starting umbra server");
    let server_log = dir.join("server.log");
    let mut server = spawn_logged(
        &bin,
        &[
            "server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.join("server").to_string_lossy().into_owned(),
            "--introductions-per-hour".into(),
            "1000000".into(),
            "--mailbox-cap".into(),
            "1000000".into(),
        ],
        &server_log,
        Some("warn"),
    )?;
    let invite = wait_for_line(&server_log, "umbra://join", Duration::from_secs(30))
        .await?
        .trim()
        .to_string();

    crate::note!(
        "registering the business and {} customers (each writes first)",
        args.customers
    );
    let shop = people(&dir, &invite, args.customers).await?;

    let host_dir = dir.join("host");
    let token_out = Command::new(&bin)
        .args(["business", "token", "create", "--json", "--business"])
        .arg(&shop)
        .arg("--data-dir")
        .arg(&host_dir)
        .output()
        .await?;
    let token: serde_json::Value =
        serde_json::from_slice(&token_out.stdout).context("the token command's answer")?;
    let token = token["token"].as_str().context("no token")?.to_string();

    let hooks = Arc::new(Mutex::new(Hooks::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/", receiver.local_addr()?);
    let hook_task = tokio::spawn(load::webhook_receiver(receiver, hooks.clone()));

    crate::note!("starting umbra business serve");
    let host_log = dir.join("host.log");
    let mut host = spawn_logged(
        &bin,
        &[
            "business".into(),
            "serve".into(),
            "--business".into(),
            shop.to_string_lossy().into_owned(),
            "--data-dir".into(),
            host_dir.to_string_lossy().into_owned(),
            "--webhook-url".into(),
            hook_url,
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--messages-per-second".into(),
            "1000000".into(),
        ],
        &host_log,
        Some("warn"),
    )?;
    let line = wait_for_line(&host_log, "API on http://", Duration::from_secs(60)).await?;
    let api = line
        .split("API on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("the host's address")?
        .to_string();
    let base = api.trim_end_matches('/').to_string();
    let server_pid = server.id().context("server pid")?;
    let host_pid = host.id().context("host pid")?;

    crate::note!("waiting for the host to take in every conversation");
    let ids = conversations(&base, &token, args.customers).await?;
    // Let the host send what it owes for the customers' first messages
    // (delivered receipts) before the customers' devices are timed.
    tokio::time::sleep(Duration::from_secs(2)).await;

    crate::note!("logging the customers' devices in");
    let deliveries = Arc::new(Mutex::new(Deliveries::new(args.customers)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.customers.max(1));
    let mut receivers = Vec::new();
    for i in 0..args.customers {
        let mut c = Client::open(&dir.join(customer_name(i)), None)?;
        let mut conn = umbra_client::conn::ServerConn::open(c.invite(), &c.route()).await?;
        c.login(&mut conn).await?;
        receivers.push(tokio::spawn(load::receive(
            i,
            conn,
            deliveries.clone(),
            ready_tx.clone(),
        )));
    }
    for _ in 0..args.customers {
        ready_rx
            .recv()
            .await
            .context("a customer's device went away")?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = load::http(args.window);
    let url = format!("{base}/v1/messages");
    let mut report = BusinessBenchReport {
        customers: args.customers,
        seconds: args.seconds,
        p99_bound_ms: args.p99_ms,
        steps: Vec::new(),
        sustained: None,
    };
    let mut seq = 0u64;
    for &rate in &args.rates {
        crate::note!("offering {rate} messages/s for {} s", args.seconds);
        {
            let mut d = deliveries.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            d.delays_us.clear();
            d.strays = 0;
        }
        {
            let mut h = hooks.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            *h = Hooks::default();
        }
        let total = u64::from(rate) * args.seconds;
        let api_us = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
        let errors = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let window = Arc::new(Semaphore::new(args.window));
        let (host0, server0) = (process_runtime_ns(host_pid), process_runtime_ns(server_pid));
        let start = Instant::now();
        let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let progress = Progress::start("sent", taken.clone(), total, true);
        let mut calls = Vec::with_capacity(total as usize);
        for n in 0..total {
            let at = start + every.mul_f64(n as f64);
            tokio::time::sleep_until(at.into()).await;
            let c = (seq as usize) % args.customers;
            seq += 1;
            let permit = window.clone().acquire_owned().await?;
            let body = format!(r#"{{"conversation":"{}","text":"bench {seq}"}}"#, ids[c]);
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            let (deliveries, hooks, api_us, errors, taken) = (
                deliveries.clone(),
                hooks.clone(),
                api_us.clone(),
                errors.clone(),
                taken.clone(),
            );
            calls.push(tokio::spawn(async move {
                let _permit = permit;
                // Recorded as waiting before the call, so an arrival that
                // beats the answer still finds it.
                if let Ok(mut d) = deliveries.lock() {
                    d.sent(c, at);
                }
                match load::post_message(&http, &url, &token, body, format!("bench-{seq}")).await {
                    Ok((202, Some(id))) => {
                        let now = Instant::now();
                        if let Ok(mut a) = api_us.lock() {
                            a.push(now.saturating_duration_since(at).as_micros() as u64);
                        }
                        if let Ok(mut h) = hooks.lock() {
                            h.sent(id, at);
                        }
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        if let Ok(mut d) = deliveries.lock() {
                            d.cancel(c, at);
                        }
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for c in calls {
            let _ = c.await;
        }
        let sending = start.elapsed().as_secs_f64();
        drop(progress);
        // What is on its way arrives (or is counted lost).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let outstanding = deliveries.lock().map(|d| d.outstanding()).unwrap_or(0);
            if outstanding == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = start.elapsed().as_secs_f64();
        let (host_ns, server_ns) = (
            process_runtime_ns(host_pid).saturating_sub(host0),
            process_runtime_ns(server_pid).saturating_sub(server0),
        );
        let (delays, lost) = {
            let mut d = deliveries.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            let lost = d.outstanding() as u64;
            let delays = std::mem::take(&mut d.delays_us);
            // Forget what never came, so the next step starts clean.
            *d = Deliveries::new(args.customers);
            (delays, lost)
        };
        let hook_delays = hooks
            .lock()
            .map(|h| h.delays_us.clone())
            .unwrap_or_default();
        let api = api_us.lock().map(|a| a.clone()).unwrap_or_default();
        let step = Step {
            offered: rate,
            accepted_per_sec: taken.load(Ordering::Relaxed) as f64 / sending,
            delivered: delays.len() as u64,
            lost,
            errors: errors.load(Ordering::Relaxed),
            api_p50_ms: percentile_ms(&api, 50.0),
            api_p99_ms: percentile_ms(&api, 99.0),
            delivered_p50_ms: percentile_ms(&delays, 50.0),
            delivered_p99_ms: percentile_ms(&delays, 99.0),
            webhook_p50_ms: percentile_ms(&hook_delays, 50.0),
            webhook_p99_ms: percentile_ms(&hook_delays, 99.0),
            host_cores: host_ns as f64 / 1e9 / busy,
            server_cores: server_ns as f64 / 1e9 / busy,
        };
        crate::note!(
            "  {:.0} taken/s, p99 to the device {:.1} ms, webhook p99 {:.1} ms",
            step.accepted_per_sec,
            step.delivered_p99_ms,
            step.webhook_p99_ms
        );
        let holds = report.holds(&step);
        report.steps.push(step);
        if holds {
            report.sustained = Some(rate);
        }
    }
    for r in receivers {
        r.abort();
    }
    hook_task.abort();
    let _ = host.kill().await;
    let _ = server.kill().await;
    Ok(report)
}
