//! `umbra bench proxy`: the Umbra proxy side by side with HAProxy, in one run.
//!
//! The bench runs its own upstream (a sink on loopback) and starts both
//! proxies as child processes in front of it: `umbra proxy` on a plain port,
//! and HAProxy configured as WhatsApp's proxy is (TCP mode,
//! `tune.bufsize 4096`). Two more `umbra proxy` serve a TLS port: one with
//! its own (generated) certificate, one in fronting mode (`--front`),
//! reached as an admitted client reaches it: a marked hello, the proxy's
//! flight, then TLS records. For each path — direct to the sink, through
//! HAProxy, through Umbra's plain port, its TLS port and its fronting port —
//! it measures:
//!
//! - bulk throughput: one stream, 64 KiB writes for a fixed time, bytes
//!   counted by the sink;
//! - new connections per second: connect, a hello there and back through
//!   the proxy (shaped as the Noise handshake is: a length-prefixed first
//!   message each way, which Umbra masks; on Umbra's plain port the hello
//!   rides in the WebSocket upgrade that admits the client, and comes back
//!   with the proxy's 101), close; a fixed count
//!   with a fixed number of workers, cut into slices that alternate between
//!   the paths (so that the machine's drift, such as the kernel's TIME_WAIT
//!   table filling up, weighs on each path alike). Alongside, the proxy's own CPU time per
//!   connection (its threads' exact run time, `/proc/PID/task/*/schedstat`):
//!   on a machine the bench shares with the proxies, the rate also depends on
//!   how the scheduler splits the cores, the CPU time does not;
//! - memory per idle connection: the proxy process's RSS growth while a fixed
//!   number of connections stay open and silent.
//!
//! Throughput and connection rate are measured in several rounds in which the
//! paths take turns, in an order that rotates from round to round; the
//! report gives each path's median, and each round's Umbra / HAProxy
//! connection-rate ratio, so the spread is in plain sight. Each path has a
//! sink of its own.
//!
//! Every connection starts with a three-byte hello each way (length 1, then
//! the mode); the sink tells modes apart by the client's: `T` discard, `E`
//! wait for the end, `I` hold idle. After the hellos Umbra's masks are off,
//! as they are after a real client's Noise handshake, so bulk and idle
//! connections cost what real ones do.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use umbra_net::dial::{BoxStream, Route, dial};
use umbra_wire::proxy::{ProxyLink, Target};

use crate::cpu::process_runtime_ns;
use crate::memory::rss_kib;
use crate::util::RemoveOnDrop;

/// Flags of `umbra bench proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyBenchArgs {
    /// HAProxy binary to compare with (Debian package `haproxy`).
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    pub haproxy: String,
    /// The `umbra` binary whose proxy is measured [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
    /// Seconds of bulk transfer per path.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Connections opened per path for the rate test.
    #[arg(long, default_value_t = 10_000)]
    pub connections: u64,
    /// Concurrent workers for the rate test.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Idle connections held for the memory test.
    #[arg(long, default_value_t = 5_000)]
    pub idle: usize,
    /// Rounds: the paths take turns each round and the median is reported,
    /// so a passing disturbance on the machine does not decide the ratio.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// How HAProxy is set up: `whatsapp` (WhatsApp's proxy configuration:
    /// 4 KiB buffers, no splicing) or `bulk` (tuned for throughput:
    /// `option splice-auto`, 64 KiB buffers, 256 KiB pipes), the best a
    /// splicing proxy does on the machine.
    #[arg(long, value_enum, default_value_t = HaproxyTuning::Whatsapp)]
    pub haproxy_tuning: HaproxyTuning,
}

/// HAProxy's configuration in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HaproxyTuning {
    /// As WhatsApp's proxy configures it.
    Whatsapp,
    /// Tuned for bulk throughput (kernel splicing, large buffers).
    Bulk,
}

/// One path's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// Which path.
    pub name: String,
    /// Bulk throughput, Gbit/s.
    pub gbit_per_s: f64,
    /// New connections per second.
    pub connections_per_s: f64,
    /// The proxy's CPU time per new connection, microseconds (None for the
    /// direct path).
    pub cpu_us_per_connection: Option<f64>,
    /// RSS per idle connection, bytes (None for the direct path).
    pub idle_bytes_per_connection: Option<f64>,
    /// The bench's own CPU time per new connection, microseconds: the
    /// client's work (for Umbra, its proof and the 101's check) and the
    /// sink's, which is the same on every path.
    pub bench_cpu_us_per_connection: f64,
}

/// The comparison (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// Direct, HAProxy, Umbra.
    pub paths: Vec<PathReport>,
    /// Idle connections held.
    pub idle_connections: usize,
    /// Umbra / HAProxy connection rate, round by round.
    pub rate_ratio_per_round: Vec<f64>,
}

impl std::fmt::Display for ProxyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<12} {:>8} {:>14} {:>20} {:>22} {:>20}",
            "path",
            "Gbit/s",
            "connections/s",
            "CPU µs/connection",
            "idle bytes/connection",
            "bench CPU µs/conn."
        )?;
        let or_dash = |v: Option<f64>, digits: usize| {
            v.map(|b| format!("{b:.digits$}"))
                .unwrap_or_else(|| "-".into())
        };
        for p in &self.paths {
            writeln!(
                f,
                "{:<12} {:>8.2} {:>14.0} {:>20} {:>22} {:>20.1}",
                p.name,
                p.gbit_per_s,
                p.connections_per_s,
                or_dash(p.cpu_us_per_connection, 1),
                or_dash(p.idle_bytes_per_connection, 0),
                p.bench_cpu_us_per_connection
            )?;
        }
        if let (Some(h), Some(u)) = (
            self.paths.iter().find(|p| p.name == "haproxy"),
            self.paths.iter().find(|p| p.name == "umbra"),
        ) {
            write!(
                f,
                "umbra / haproxy: throughput {:.2}x, connection rate {:.2}x",
                u.gbit_per_s / h.gbit_per_s,
                u.connections_per_s / h.connections_per_s
            )?;
            if let (Some(hc), Some(uc)) = (h.cpu_us_per_connection, u.cpu_us_per_connection) {
                write!(f, ", CPU per connection {:.2}x", uc / hc)?;
            }
            if let (Some(hm), Some(um)) = (h.idle_bytes_per_connection, u.idle_bytes_per_connection)
            {
                write!(f, ", idle memory {:.2}x", um / hm)?;
            }
            let rounds: Vec<String> = self
                .rate_ratio_per_round
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect();
            write!(
                f,
                "\nconnection rate, umbra / haproxy, round by round: {}",
                rounds.join(" ")
            )?;
            if let (Some(fr), Some(t)) = (
                self.paths.iter().find(|p| p.name == "umbra-front"),
                self.paths.iter().find(|p| p.name == "umbra-tls"),
            ) {
                write!(
                    f,
                    "\numbra-front / umbra-tls (fronting's admitted path against the TLS port's): throughput {:.2}x, connection rate {:.2}x",
                    fr.gbit_per_s / t.gbit_per_s,
                    fr.connections_per_s / t.connections_per_s
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
enum Path {
    Direct(SocketAddr),
    Haproxy(SocketAddr, u32),
    Umbra(SocketAddr, u32, [u8; 32]),
    /// Umbra's TLS port with its own certificate (the preamble inside TLS).
    Tls(SocketAddr, u32, [u8; 32]),
    /// Umbra's TLS port in fronting mode (`--front`), as an admitted
    /// client reaches it.
    Fronted(SocketAddr, u32, [u8; 32]),
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Path::Direct(_) => "direct",
            Path::Haproxy(..) => "haproxy",
            Path::Umbra(..) => "umbra",
            Path::Tls(..) => "umbra-tls",
            Path::Fronted(..) => "umbra-front",
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Path::Direct(_) => None,
            Path::Haproxy(_, pid)
            | Path::Umbra(_, pid, _)
            | Path::Tls(_, pid, _)
            | Path::Fronted(_, pid, _) => Some(*pid),
        }
    }

    /// Connects, is admitted (Umbra), and exchanges the hellos.
    async fn connect(&self, mode: u8) -> std::io::Result<BoxStream> {
        let (addr, secret, tls, front) = match self {
            Path::Direct(a) | Path::Haproxy(a, _) => (*a, None, false, None),
            Path::Umbra(a, _, s) => (*a, Some(*s), false, None),
            Path::Tls(a, _, s) => (*a, Some(*s), true, None),
            Path::Fronted(a, _, s) => (*a, Some(*s), true, Some(FRONT_NAME.to_string())),
        };
        let timeout = Duration::from_secs(10);
        let route = match secret {
            None => Route::Direct(addr.to_string()),
            // A client's own way in: the upgrade (carrying the hello), the
            // 101, the masks.
            Some(secret) => Route::Proxy(ProxyLink {
                host: addr.ip().to_string(),
                port: addr.port(),
                secret,
                tls,
                front,
            }),
        };
        let mut s = dial(&route, Target::Messaging, timeout)
            .await
            .map_err(std::io::Error::other)?;
        s.write_all(&[0, 1, mode]).await?;
        let mut hello = [0u8; 3];
        s.read_exact(&mut hello).await?;
        Ok(s)
    }
}

struct Sink {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    idle: Arc<AtomicU64>,
}

async fn sink() -> anyhow::Result<Sink> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let bytes = Arc::new(AtomicU64::new(0));
    let idle = Arc::new(AtomicU64::new(0));
    let (b, i) = (bytes.clone(), idle.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (b, i) = (b.clone(), i.clone());
            tokio::spawn(async move {
                let mut hello = [0u8; 3];
                if s.read_exact(&mut hello).await.is_err() {
                    return;
                }
                if s.write_all(&[0, 1, b'S']).await.is_err() {
                    return;
                }
                match hello[2] {
                    b'T' => {
                        let mut buf = vec![0u8; 256 * 1024];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            b.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    b'E' => {
                        let mut one = [0u8; 1];
                        let _ = s.read(&mut one).await;
                    }
                    _ => {
                        i.fetch_add(1, Ordering::Relaxed);
                        let mut one = [0u8; 1];
                        let _ = s.read(&mut one).await;
                        i.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(Sink { addr, bytes, idle })
}

async fn throughput(path: &Path, sink: &Sink, seconds: u64) -> anyhow::Result<f64> {
    let mut s = path.connect(b'T').await.context("bulk connection")?;
    let buf = vec![0x5au8; 64 * 1024];
    let start_bytes = sink.bytes.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    // Wait for the sink to have everything that was sent.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sink.bytes.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let moved = last.saturating_sub(start_bytes);
    Ok(moved as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

/// One batch of the rate test: `count` connections through `path`.
struct Batch {
    seconds: f64,
    /// The proxy's run time over the batch, ns (None for the direct path).
    cpu_ns: Option<u64>,
    /// The bench's own run time over the batch (clients and sink), ns.
    bench_ns: u64,
}

async fn connection_batch(path: &Path, count: u64, workers: usize) -> anyhow::Result<Batch> {
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = path.pid().map(process_runtime_ns);
    let bench_before = process_runtime_ns(std::process::id());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (path, next) = (path.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                // The hellos there and back are the round trip.
                path.connect(b'E').await?;
            }
            Ok::<_, std::io::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("worker")?
            .context("a connection through the path failed")?;
    }
    Ok(Batch {
        seconds: start.elapsed().as_secs_f64(),
        cpu_ns: path
            .pid()
            .zip(cpu_before)
            .map(|(pid, before)| process_runtime_ns(pid).saturating_sub(before)),
        bench_ns: process_runtime_ns(std::process::id()).saturating_sub(bench_before),
    })
}

/// Slices the rate test is cut into, per round.
const SLICES: u64 = 5;

/// One path's rate test in one round.
struct Rate {
    /// New connections per second.
    per_s: f64,
    /// The proxy's CPU µs per connection (None for the direct path).
    proxy_us: Option<f64>,
    /// The bench's own CPU µs per connection (clients and sink).
    bench_us: f64,
}

/// The rate test of one round: `total` connections per path, in slices that
/// alternate between the paths, so that whatever drifts on the machine (the
/// kernel's table of TIME_WAIT sockets fills as the run goes on) weighs on
/// every path alike.
async fn connection_rates(
    paths: &[Path],
    total: u64,
    workers: usize,
    round: usize,
) -> anyhow::Result<Vec<Rate>> {
    let per_slice = (total / SLICES).max(1);
    let mut seconds = vec![0.0; paths.len()];
    let mut cpu_ns: Vec<Option<u64>> = vec![None; paths.len()];
    let mut bench_ns = vec![0u64; paths.len()];
    for slice in 0..SLICES as usize {
        for k in 0..paths.len() {
            let i = (k + slice + round) % paths.len();
            let b = connection_batch(&paths[i], per_slice, workers).await?;
            seconds[i] += b.seconds;
            bench_ns[i] += b.bench_ns;
            if let Some(ns) = b.cpu_ns {
                cpu_ns[i] = Some(cpu_ns[i].unwrap_or(0) + ns);
            }
        }
    }
    let done = (per_slice * SLICES) as f64;
    let us = |ns: u64| ns as f64 / 1e3 / done;
    Ok((0..paths.len())
        .map(|i| Rate {
            per_s: done / seconds[i],
            proxy_us: cpu_ns[i].map(us),
            bench_us: us(bench_ns[i]),
        })
        .collect())
}

async fn idle_memory(path: &Path, sink: &Sink, k: usize) -> anyhow::Result<Option<f64>> {
    let Some(pid) = path.pid() else {
        return Ok(None);
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let base = sink.idle.load(Ordering::Relaxed);
    let mut held = Vec::with_capacity(k);
    for _ in 0..k {
        held.push(path.connect(b'I').await.context("idle connection")?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.idle.load(Ordering::Relaxed) < base + k as u64 {
        if Instant::now() > deadline {
            bail!("idle connections did not all reach the sink");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Some(
        after.saturating_sub(before) as f64 * 1024.0 / k as f64,
    ))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The name a fronted path's clients give; the fronted site itself is
/// never reached (no visitor comes), so it need not exist.
const FRONT_NAME: &str = "localhost";

/// Which port an Umbra proxy under test serves.
#[derive(Clone, Copy)]
enum Port {
    Plain,
    Tls,
    Fronted,
}

async fn start_umbra(
    bin: &str,
    sink: SocketAddr,
    dir: &std::path::Path,
    port_kind: Port,
) -> anyhow::Result<(Child, SocketAddr, [u8; 32])> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let front = format!("{FRONT_NAME}:1");
    let ports = match port_kind {
        Port::Plain => ["--plain-listen", &listen, "--no-tls", "", ""],
        Port::Tls => ["--tls-listen", &listen, "--no-plain", "", ""],
        Port::Fronted => ["--tls-listen", &listen, "--no-plain", "--front", &front],
    };
    let mut child = Command::new(bin)
        .args(["proxy", "--upstream", &sink.to_string()])
        .args(ports.iter().filter(|a| !a.is_empty()))
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-connections",
            "20000",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} proxy"))?;
    let stdout = child.stdout.take().context("proxy stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let link = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("umbra://proxy?") {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the Umbra proxy printed no link")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let link = ProxyLink::parse(&link)?;
    Ok((child, listen.parse()?, link.secret))
}

async fn start_haproxy(
    bin: &str,
    tuning: HaproxyTuning,
    sink: SocketAddr,
    dir: &std::path::Path,
) -> anyhow::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let cfg = dir.join("haproxy.cfg");
    // Pipes take descriptors of their own: splicing HAProxy gets fewer
    // connections within the same descriptor limit.
    let (global, defaults) = match tuning {
        HaproxyTuning::Whatsapp => ("maxconn 9000\n  tune.bufsize 4096", ""),
        HaproxyTuning::Bulk => (
            "maxconn 7000\n  tune.bufsize 65536\n  tune.pipesize 262144",
            "\n  option splice-auto",
        ),
    };
    std::fs::write(
        &cfg,
        format!(
            "global\n  {global}\n\ndefaults\n  mode tcp{defaults}\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\nbackend be\n  server sink {sink}\n"
        ),
    )?;
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} (install the Debian package haproxy)"))?;
    Ok((child, format!("127.0.0.1:{port}").parse()?))
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs the comparison.
pub async fn run(args: &ProxyBenchArgs) -> anyhow::Result<ProxyReport> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = std::env::temp_dir().join(format!("umbra-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _scratch = RemoveOnDrop(dir.clone());
    // A sink per path: each path's connections go to their own address, so
    // the TIME_WAIT sockets one path leaves behind never slow the choice of
    // ports for another.
    let sinks = [
        sink().await?,
        sink().await?,
        sink().await?,
        sink().await?,
        sink().await?,
    ];
    let umbra_bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let (umbra_child, umbra_addr, secret) =
        start_umbra(&umbra_bin, sinks[2].addr, &dir.join("umbra"), Port::Plain).await?;
    let (tls_child, tls_addr, tls_secret) =
        start_umbra(&umbra_bin, sinks[3].addr, &dir.join("umbra-tls"), Port::Tls).await?;
    let (front_child, front_addr, front_secret) = start_umbra(
        &umbra_bin,
        sinks[4].addr,
        &dir.join("umbra-front"),
        Port::Fronted,
    )
    .await?;
    let (haproxy_child, haproxy_addr) =
        start_haproxy(&args.haproxy, args.haproxy_tuning, sinks[1].addr, &dir).await?;
    wait_listening(haproxy_addr).await?;
    let paths = [
        Path::Direct(sinks[0].addr),
        Path::Haproxy(haproxy_addr, haproxy_child.id().context("haproxy pid")?),
        Path::Umbra(umbra_addr, umbra_child.id().context("proxy pid")?, secret),
        Path::Tls(tls_addr, tls_child.id().context("proxy pid")?, tls_secret),
        Path::Fronted(
            front_addr,
            front_child.id().context("proxy pid")?,
            front_secret,
        ),
    ];
    let rounds = args.rounds.max(1);
    let mut gbit = vec![Vec::new(); paths.len()];
    let mut rate = vec![Vec::new(); paths.len()];
    let mut cpu = vec![Vec::new(); paths.len()];
    let mut bench_cpu = vec![Vec::new(); paths.len()];
    for round in 1..=rounds {
        // The order rotates, so that no path always runs first or last.
        for k in 0..paths.len() {
            let i = (k + round - 1) % paths.len();
            let g = throughput(&paths[i], &sinks[i], args.seconds).await?;
            crate::note!(
                "round {round}/{rounds}: {} bulk {g:.2} Gbit/s",
                paths[i].name()
            );
            gbit[i].push(g);
        }
        let rates = connection_rates(&paths, args.connections, args.workers, round).await?;
        for (i, r) in rates.into_iter().enumerate() {
            let proxy = r
                .proxy_us
                .map(|c| format!(", proxy CPU {c:.1} µs/connection"))
                .unwrap_or_default();
            crate::note!(
                "round {round}/{rounds}: {} new connections {:.0}/s{proxy}, bench CPU {:.1} µs/connection",
                paths[i].name(),
                r.per_s,
                r.bench_us
            );
            rate[i].push(r.per_s);
            cpu[i].extend(r.proxy_us);
            bench_cpu[i].push(r.bench_us);
        }
    }
    // Paths are [direct, haproxy, umbra, umbra-tls, umbra-front]; taken
    // before the medians sort.
    let rate_ratio_per_round = rate[2].iter().zip(&rate[1]).map(|(u, h)| u / h).collect();
    let mut reports = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let mem = idle_memory(path, &sinks[i], args.idle).await?;
        if let Some(m) = mem {
            crate::note!("{}: idle {m:.0} bytes per connection", path.name());
        }
        reports.push(PathReport {
            name: path.name().to_string(),
            gbit_per_s: median(&mut gbit[i]),
            connections_per_s: median(&mut rate[i]),
            cpu_us_per_connection: (!cpu[i].is_empty()).then(|| median(&mut cpu[i])),
            idle_bytes_per_connection: mem,
            bench_cpu_us_per_connection: median(&mut bench_cpu[i]),
        });
    }
    drop(umbra_child);
    drop(tls_child);
    drop(front_child);
    drop(haproxy_child);
    Ok(ProxyReport {
        paths: reports,
        idle_connections: args.idle,
        rate_ratio_per_round,
    })
}
