//! `umbra bench relay`: the Umbra call relay side by side with coturn, in one run.
//!
//! The bench starts both TURN servers as child processes on loopback, with the same
//! TURN REST shared secret and the same number of relay threads, plus a raw UDP
//! forwarder of its own (a trivial `recv_from` → `send_to` loop on plain threads in this
//! process) as the baseline. All three start first; then, for `--rounds` rounds, the
//! paths take turns (so a burst of unrelated load hits one round of each, and the report
//! gives medians), each round on fresh allocations:
//!
//! - **equal load**: the bench's own load tool at a fixed offered rate, the same for all
//!   three, giving round-trip latency p50/p99 and CPU per packet;
//! - **saturation**: the same tool in closed loop (a fixed window of packets in flight
//!   per pair), giving the most packets/s the path sustains and packets/s per CPU second.
//!
//! Then, once per server:
//!
//! - **`turnutils_uclient -y -c`** (coturn's own client; TURN servers only): received
//!   messages, wall time, uclient's average round trip (whole milliseconds only) and the
//!   server's CPU per message. `-c` (no RTCP allocations) keeps the run to the RTP
//!   allocations the CPU figures are about (both servers grant the RESERVATION-TOKEN
//!   pairs uclient's default mode asks for; the relay's interop tests run it that way);
//!   the bench's own allocations are deleted before uclient runs, so no stale 5-tuple can
//!   meet uclient's sockets.
//!
//! The load tool: `pairs` pairs of UDP sockets; over TURN each socket holds its own
//! allocation (made with [`umbra_turn::client`]) and a channel bound to its partner's
//! relayed address, as `turnutils_uclient -y` does: client → relay address → partner's
//! relay address → partner. One side of each pair (the pinger) sends ChannelData stamped
//! with a sequence number and the send time; the other side echoes every packet back
//! unchanged, so the pinger measures the round trip (two relayed packets). Through the
//! forwarder the same bytes take one hop each way: it maps each client address to its
//! partner.
//!
//! CPU is `utime + stime` from `/proc/PID/stat` of the server process (all its threads;
//! for the forwarder, of its threads under `/proc/self/task`), read before and after each
//! measured window and divided by the packets counted on the receiving sockets in that
//! window. Everything is bounded: fixed windows, a packet cap per phase, timeouts on every
//! set-up step and on the uclient run.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::process::Stdio;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::RngCore;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use umbra_turn::client::{Client, ClientConfig, ClientEvent};
use umbra_turn::credentials::rest;
use umbra_turn::{Class, Message, MessageBuilder, Method, TransactionId, Transport};

/// Warm-up before each measured window (not counted).
const WARMUP: Duration = Duration::from_millis(500);
/// Time given to packets in flight after a phase.
const DRAIN: Duration = Duration::from_millis(300);
/// Relay port ranges: above Linux's default ephemeral range (32768–60999), so the load
/// tool's own sockets never collide with them.
const COTURN_PORTS: (u16, u16) = (61000, 62999);
const UMBRA_PORTS: (u16, u16) = (63000, 64999);
/// Bytes of each packet the bench uses itself: sequence number and send time.
const STAMP: usize = 16;
/// ChannelData header.
const CD_HEADER: usize = 4;

/// Flags of `umbra bench relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayBenchArgs {
    /// coturn's server (Debian package `coturn`).
    #[arg(long, default_value = "turnserver")]
    pub turnserver: String,
    /// coturn's test client (Debian package `coturn`).
    #[arg(long, default_value = "turnutils_uclient")]
    pub uclient: String,
    /// The `umbra` binary whose relay is measured [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
    /// Relay threads of each server (coturn `--relay-threads`, umbra `--workers`) and of
    /// the baseline forwarder.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Threads of the bench's load tool.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Pairs of allocations the load tool relays between.
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Application bytes per packet (ChannelData payload; uclient `-l`).
    #[arg(long, default_value_t = 170)]
    pub payload: usize,
    /// Offered load of the equal-load phase, relayed packets per second (pings plus
    /// echoes), the same for every path.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Packets in flight per pair in the saturation phase.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds measured per phase (after a warm-up of half a second).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds: each round measures every path once (equal load, then saturation), paths
    /// taking turns, so a burst of unrelated load on the machine hits one round of every
    /// path rather than all of one; the report gives the median over rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Most pings sent in one phase.
    #[arg(long, default_value_t = 20_000_000)]
    pub max_packets: u64,
    /// Measure only these paths (`baseline`, `coturn`, `umbra`; repeatable) [default: all].
    #[arg(long)]
    pub only: Vec<String>,
    /// turnutils_uclient clients (`-m`).
    #[arg(long, default_value_t = 20)]
    pub uclient_clients: u32,
    /// Messages per turnutils_uclient client (`-n`); 0 skips the uclient runs.
    #[arg(long, default_value_t = 2000)]
    pub uclient_messages: u32,
}

/// The turnutils_uclient run against one server.
#[derive(Debug, Clone, Serialize)]
pub struct UclientReport {
    /// Messages sent, as uclient counts them.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Lost, as uclient reports.
    pub lost: u64,
    /// Wall time of the whole uclient run (including its allocations), seconds.
    pub seconds: f64,
    /// Received messages per wall second.
    pub per_second: f64,
    /// Server CPU seconds over the run.
    pub server_cpu_s: f64,
    /// Server CPU per received message, microseconds.
    pub cpu_us_per_message: f64,
    /// uclient's average round trip, milliseconds.
    pub avg_rtt_ms: f64,
}

/// One measured window of the load tool.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Offered relayed packets per second (two per ping sent), measured.
    pub offered_per_s: f64,
    /// Relayed packets received per second.
    pub relayed_per_s: f64,
    /// Packets lost over the whole phase, percent.
    pub loss_pct: f64,
    /// Sends the load tool's sockets refused over the whole phase (counted as lost).
    pub send_errors: u64,
    /// Server (or forwarder) CPU seconds per wall second.
    pub server_cores: f64,
    /// Load tool CPU seconds per wall second.
    pub client_cores: f64,
    /// CPU used by everything else on the machine (other processes, interrupts), cores:
    /// non-idle time in `/proc/stat` minus the server and the load tool.
    pub other_cores: f64,
    /// Server CPU per relayed packet, microseconds (`utime + stime`).
    pub cpu_us_per_packet: f64,
    /// The same from the scheduler's exact run time (`/proc/PID/task/*/schedstat`), a
    /// cross-check of the tick-sampled `utime + stime`.
    pub cpu_us_per_packet_runtime: f64,
    /// Relayed packets per server CPU second.
    pub per_core: f64,
    /// Round trip (two relayed packets), median, microseconds.
    pub p50_us: f64,
    /// Round trip, 99th percentile, microseconds.
    pub p99_us: f64,
    /// Round trip, largest, microseconds.
    pub max_us: f64,
    /// Which side used (nearly) all its threads' CPU: `server`, `client`, `both` or
    /// `neither`.
    pub saturated: String,
}

/// One path's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// `baseline`, `coturn` or `umbra`.
    pub name: String,
    /// turnutils_uclient run (servers only, when enabled).
    pub uclient: Option<UclientReport>,
    /// Fixed offered rate: the median over rounds, field by field.
    pub equal_load: LoadReport,
    /// Closed loop: the median over rounds, field by field.
    pub saturation: LoadReport,
    /// Every round of the fixed-rate phase.
    pub equal_load_rounds: Vec<LoadReport>,
    /// Every round of the closed-loop phase.
    pub saturation_rounds: Vec<LoadReport>,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct RelayBenchReport {
    /// Relay threads of each server and the forwarder.
    pub threads: usize,
    /// Load tool threads.
    pub client_threads: usize,
    /// Allocation pairs.
    pub pairs: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Packets in flight per pair in the saturation phase.
    pub window: usize,
    /// Seconds per measured window.
    pub seconds: u64,
    /// Rounds per path.
    pub rounds: usize,
    /// Offered load of the equal-load phase, relayed packets/s.
    pub rate: u64,
    /// The exact coturn command line (secret elided).
    pub coturn_command: String,
    /// The exact umbra command line.
    pub umbra_command: String,
    /// The uclient command line (credentials elided).
    pub uclient_command: String,
    /// Baseline, coturn, umbra.
    pub targets: Vec<TargetReport>,
}

impl RelayBenchReport {
    fn target(&self, name: &str) -> Option<&TargetReport> {
        self.targets.iter().find(|t| t.name == name)
    }
}

impl fmt::Display for RelayBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} relay thread(s), {} load thread(s), {} pairs, {}-byte payload, {} s per phase, \
             median of {} round(s)",
            self.threads, self.client_threads, self.pairs, self.payload, self.seconds, self.rounds
        )?;
        if self.targets.iter().any(|t| t.uclient.is_some()) {
            writeln!(f, "\nturnutils_uclient: {}", self.uclient_command)?;
            writeln!(
                f,
                "{:<9} {:>9} {:>7} {:>8} {:>10} {:>10} {:>9}",
                "server", "received", "lost", "seconds", "msgs/s", "CPU us/msg", "avg RTT*"
            )?;
            for t in &self.targets {
                if let Some(u) = &t.uclient {
                    writeln!(
                        f,
                        "{:<9} {:>9} {:>7} {:>8.2} {:>10.0} {:>10.2} {:>6.3} ms",
                        t.name,
                        u.received,
                        u.lost,
                        u.seconds,
                        u.per_second,
                        u.cpu_us_per_message,
                        u.avg_rtt_ms
                    )?;
                }
            }
            writeln!(
                f,
                "* uclient times round trips in whole milliseconds: 0.000 means under 1 ms"
            )?;
        }
        for (title, pick) in [
            ("equal load (fixed offered rate)", 0usize),
            ("saturation (closed loop, fixed window in flight)", 1usize),
        ] {
            writeln!(f, "\n{title}")?;
            writeln!(
                f,
                "{:<9} {:>10} {:>10} {:>6} {:>7} {:>7} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8}",
                "path",
                "offered/s",
                "relayed/s",
                "loss%",
                "srv cpu",
                "cli cpu",
                "other",
                "us/packet",
                "pkt/s/core",
                "p50 us",
                "p99 us",
                "limit"
            )?;
            for t in &self.targets {
                let r = if pick == 0 {
                    &t.equal_load
                } else {
                    &t.saturation
                };
                writeln!(
                    f,
                    "{:<9} {:>10.0} {:>10.0} {:>6.2} {:>7.2} {:>7.2} {:>7.2} {:>9.2} {:>10.0} {:>8.1} {:>8.1} {:>8}",
                    t.name,
                    r.offered_per_s,
                    r.relayed_per_s,
                    r.loss_pct,
                    r.server_cores,
                    r.client_cores,
                    r.other_cores,
                    r.cpu_us_per_packet,
                    r.per_core,
                    r.p50_us,
                    r.p99_us,
                    r.saturated
                )?;
            }
        }
        if self.rounds > 1 {
            writeln!(
                f,
                "\nround by round: CPU us/packet (runtime cross-check) and p99 us"
            )?;
            for t in &self.targets {
                for (phase, rounds) in [
                    ("equal", &t.equal_load_rounds),
                    ("saturation", &t.saturation_rounds),
                ] {
                    let cells: Vec<String> = rounds
                        .iter()
                        .map(|r| {
                            format!(
                                "{:.2} ({:.2}) / {:.0}",
                                r.cpu_us_per_packet, r.cpu_us_per_packet_runtime, r.p99_us
                            )
                        })
                        .collect();
                    writeln!(f, "{:<9} {:<11} {}", t.name, phase, cells.join("   "))?;
                }
            }
        }
        writeln!(f)?;
        if let (Some(c), Some(u)) = (self.target("coturn"), self.target("umbra")) {
            let per_core = u.saturation.per_core / c.saturation.per_core;
            let cpu = c.equal_load.cpu_us_per_packet / u.equal_load.cpu_us_per_packet;
            writeln!(
                f,
                "umbra / coturn: packets/s per core {per_core:.2}x (saturation), CPU per packet {:.2}x less (equal load), p99 {:.0} vs {:.0} us (equal load)",
                cpu, u.equal_load.p99_us, c.equal_load.p99_us
            )?;
            if let (Some(uu), Some(cu)) = (&u.uclient, &c.uclient) {
                writeln!(
                    f,
                    "umbra / coturn under turnutils_uclient: CPU per message {:.2}x less",
                    cu.cpu_us_per_message / uu.cpu_us_per_message
                )?;
            }
            let met = per_core >= 2.0 && u.equal_load.p99_us <= c.equal_load.p99_us;
            writeln!(
                f,
                "goal (>= 2x packets/s per core at equal or lower p99): {}",
                if met { "met" } else { "NOT met" }
            )?;
        }
        if let Some(b) = self.target("baseline") {
            for t in self.targets.iter().filter(|t| t.name != "baseline") {
                writeln!(
                    f,
                    "{} / raw forwarder: packets/s {:.2}, packets/s per core {:.2}",
                    t.name,
                    t.saturation.relayed_per_s / b.saturation.relayed_per_s,
                    t.saturation.per_core / b.saturation.per_core
                )?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting

use crate::cpu::{process_runtime_ns, schedstat_ns};
use crate::util::{RemoveOnDrop, random_token, unix_now};

/// Clock ticks per second of `/proc/*/stat` times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime (ticks) from a `stat` file.
fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&s)
}

/// utime + stime from the text of a `stat` file (the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`).
fn parse_stat_ticks(s: &str) -> anyhow::Result<u64> {
    let (_, rest) = s.rsplit_once(')').context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is index 0: utime is field 14, stime field 15.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Whose CPU time to read.
#[derive(Clone)]
enum Cpu {
    /// A whole process (all its threads).
    Process(u32),
    /// Threads of this process.
    Threads(Arc<Mutex<Vec<u32>>>),
}

/// Non-idle ticks of the whole machine (`/proc/stat`, first line: all but idle and
/// iowait).
fn system_busy_ticks() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = s.lines().next() else {
        return 0;
    };
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

impl Cpu {
    /// Exact run time of every thread, nanoseconds.
    fn runtime_ns(&self) -> u64 {
        match self {
            Cpu::Process(pid) => process_runtime_ns(*pid),
            Cpu::Threads(tids) => {
                let tids = tids.lock().map(|t| t.clone()).unwrap_or_default();
                tids.iter()
                    .map(|t| schedstat_ns(&format!("/proc/self/task/{t}/schedstat")))
                    .sum()
            }
        }
    }

    fn ticks(&self) -> anyhow::Result<u64> {
        match self {
            Cpu::Process(pid) => stat_ticks(&format!("/proc/{pid}/stat")),
            Cpu::Threads(tids) => {
                let tids = tids.lock().map(|t| t.clone()).unwrap_or_default();
                tids.iter()
                    .map(|t| stat_ticks(&format!("/proc/self/task/{t}/stat")))
                    .sum()
            }
        }
    }
}

/// The calling thread's id (from the `/proc/thread-self` link).
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The raw forwarder (baseline)

/// A trivial recv → send UDP forwarder: each client address maps to its partner.
struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<u32>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(threads: usize) -> anyhow::Result<(Forwarder, ForwardMap)> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = sock.local_addr()?;
        let map: ForwardMap = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tids = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let s = sock.try_clone()?;
            let (stop, tids, map) = (stop.clone(), tids.clone(), map.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-forwarder-{i}"))
                    .spawn(move || forward(s, stop, tids, map))?,
            );
        }
        Ok((
            Forwarder {
                addr,
                stop,
                tids,
                handles,
            },
            map,
        ))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

type ForwardMap = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

fn forward(
    s: std::net::UdpSocket,
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<u32>>>,
    map: ForwardMap,
) {
    if let (Some(t), Ok(mut v)) = (current_tid(), tids.lock()) {
        v.push(t);
    }
    let mut buf = vec![0u8; 2048];
    // A private copy of the map, refreshed when an unknown source shows up (set-up only).
    let mut local: HashMap<SocketAddr, SocketAddr> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = s.recv_from(&mut buf) else {
            continue;
        };
        let dst = match local.get(&src) {
            Some(d) => *d,
            None => {
                if let Ok(m) = map.lock() {
                    local = m.clone();
                }
                match local.get(&src) {
                    Some(d) => *d,
                    None => continue,
                }
            }
        };
        let _ = s.send_to(&buf[..n], dst);
    }
}

// ---------------------------------------------------------------------------------------
// Load tool

/// One pair's sockets: the pinger and the echoer, each connected to the server, each with
/// the 4-byte ChannelData header it sends with.
struct Pair {
    ping: std::net::UdpSocket,
    echo: std::net::UdpSocket,
    ping_header: [u8; CD_HEADER],
}

impl Pair {
    fn try_clone(&self) -> anyhow::Result<Pair> {
        Ok(Pair {
            ping: self.ping.try_clone()?,
            echo: self.echo.try_clone()?,
            ping_header: self.ping_header,
        })
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// Pings per second per pair.
    Rate(f64),
    /// Pings in flight per pair.
    Window(usize),
}

#[derive(Default)]
struct Counters {
    pings_sent: AtomicU64,
    ping_recv: AtomicU64,
    echo_recv: AtomicU64,
    send_fail: AtomicU64,
    stop: AtomicBool,
    measuring: AtomicBool,
}

impl Counters {
    fn received(&self) -> u64 {
        self.ping_recv.load(Ordering::Relaxed) + self.echo_recv.load(Ordering::Relaxed)
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Nanoseconds, up to a minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("creating histogram")
}

/// What every task of a load thread shares.
struct Ctx {
    c: Arc<Counters>,
    epoch: Instant,
    len: usize,
    max_pings: u64,
    hist: RefCell<Histogram<u64>>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn may_send(&self) -> bool {
        !self.c.stop.load(Ordering::Relaxed)
            && self.c.pings_sent.load(Ordering::Relaxed) < self.max_pings
    }
}

/// A pinger's sequence state (FIFO assumption: receiving `s` settles everything below).
struct Pinger {
    sock: UdpSocket,
    header: [u8; CD_HEADER],
    next_seq: Cell<u64>,
    settled: Cell<u64>,
    received: Cell<u64>,
    buf: RefCell<Vec<u8>>,
}

impl Pinger {
    fn send(&self, ctx: &Ctx) {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let mut buf = self.buf.borrow_mut();
        buf[..CD_HEADER].copy_from_slice(&self.header);
        buf[CD_HEADER..CD_HEADER + 8].copy_from_slice(&seq.to_be_bytes());
        buf[CD_HEADER + 8..CD_HEADER + STAMP].copy_from_slice(&ctx.now_ns().to_be_bytes());
        match self.sock.try_send(&buf[..ctx.len]) {
            Ok(_) => {
                ctx.c.pings_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                ctx.c.send_fail.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn top_up(&self, ctx: &Ctx, window: usize) {
        while self.next_seq.get() - self.settled.get() < window as u64 && ctx.may_send() {
            self.send(ctx);
        }
    }
}

async fn pinger_recv(p: Rc<Pinger>, ctx: Rc<Ctx>, mode: Mode) {
    let mut buf = vec![0u8; 2048];
    loop {
        if p.sock.readable().await.is_err() {
            return;
        }
        loop {
            match p.sock.try_recv(&mut buf) {
                Ok(n) if n == ctx.len => {
                    let mut b8 = [0u8; 8];
                    b8.copy_from_slice(&buf[CD_HEADER..CD_HEADER + 8]);
                    let seq = u64::from_be_bytes(b8);
                    b8.copy_from_slice(&buf[CD_HEADER + 8..CD_HEADER + STAMP]);
                    let sent = u64::from_be_bytes(b8);
                    let rtt = ctx.now_ns().saturating_sub(sent).max(1);
                    ctx.c.ping_recv.fetch_add(1, Ordering::Relaxed);
                    if ctx.c.measuring.load(Ordering::Relaxed) {
                        let _ = ctx.hist.borrow_mut().record(rtt);
                    }
                    p.received.set(p.received.get() + 1);
                    if seq >= p.settled.get() {
                        p.settled.set(seq + 1);
                    }
                    if let Mode::Window(w) = mode {
                        p.top_up(&ctx, w);
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface on connected sockets; the next read goes on.
                Err(_) => break,
            }
        }
    }
}

async fn pinger_send(p: Rc<Pinger>, ctx: Rc<Ctx>, mode: Mode, offset: Duration) {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    match mode {
        Mode::Rate(pps) => {
            let start = Instant::now();
            let mut sent = 0u64;
            loop {
                tick.tick().await;
                if !ctx.may_send() {
                    return;
                }
                let due = (start.elapsed().as_secs_f64() * pps) as u64;
                // Catch up at most 64 per tick if the tool fell behind.
                let burst = due.saturating_sub(sent).min(64);
                for _ in 0..burst {
                    p.send(&ctx);
                }
                sent += burst;
            }
        }
        Mode::Window(w) => {
            p.top_up(&ctx, w);
            // Recover from tail loss: if nothing came back for a while, count what is in
            // flight as lost and fill the window again.
            let mut last = p.received.get();
            let mut idle = 0;
            loop {
                tick.tick().await;
                if !ctx.may_send() {
                    return;
                }
                if p.received.get() == last {
                    idle += 1;
                    if idle >= 50 {
                        p.settled.set(p.next_seq.get());
                        p.top_up(&ctx, w);
                        idle = 0;
                    }
                } else {
                    idle = 0;
                    last = p.received.get();
                }
            }
        }
    }
}

async fn echo(sock: UdpSocket, ctx: Rc<Ctx>) {
    let mut buf = vec![0u8; 2048];
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        loop {
            match sock.try_recv(&mut buf) {
                Ok(n) => {
                    ctx.c.echo_recv.fetch_add(1, Ordering::Relaxed);
                    if sock.try_send(&buf[..n]).is_err() {
                        ctx.c.send_fail.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

struct LoadSetup {
    pairs: Vec<Pair>,
    mode: Mode,
    len: usize,
    epoch: Instant,
    max_pings: u64,
    counters: Arc<Counters>,
    tids: Arc<Mutex<Vec<u32>>>,
    spread: usize,
}

fn load_thread(s: LoadSetup) -> anyhow::Result<Histogram<u64>> {
    if let (Some(t), Ok(mut v)) = (current_tid(), s.tids.lock()) {
        v.push(t);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ctx = Rc::new(Ctx {
        c: s.counters.clone(),
        epoch: s.epoch,
        len: s.len,
        max_pings: s.max_pings,
        hist: RefCell::new(new_histogram()?),
    });
    let c = s.counters.clone();
    let ctx2 = ctx.clone();
    local.block_on(&rt, async move {
        let n = s.pairs.len().max(1);
        for (i, pair) in s.pairs.into_iter().enumerate() {
            let ping = UdpSocket::from_std(pair.ping)?;
            let echo_sock = UdpSocket::from_std(pair.echo)?;
            let mut buf = vec![0x5au8; s.len];
            buf[..CD_HEADER].copy_from_slice(&pair.ping_header);
            let p = Rc::new(Pinger {
                sock: ping,
                header: pair.ping_header,
                next_seq: Cell::new(0),
                settled: Cell::new(0),
                received: Cell::new(0),
                buf: RefCell::new(buf),
            });
            // Spread the pingers' ticks over the millisecond.
            let offset = Duration::from_micros(((i * s.spread + i) * 1000 / (n * s.spread)) as u64);
            tokio::task::spawn_local(echo(echo_sock, ctx2.clone()));
            tokio::task::spawn_local(pinger_recv(p.clone(), ctx2.clone(), s.mode));
            tokio::task::spawn_local(pinger_send(p, ctx2.clone(), s.mode, offset));
        }
        while !c.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let what is in flight arrive (and be echoed).
        tokio::time::sleep(DRAIN).await;
        Ok::<_, anyhow::Error>(())
    })?;
    let h = ctx.hist.borrow().clone();
    Ok(h)
}

/// Runs one phase over `pairs` and measures the window.
async fn run_phase(
    pairs: &[Pair],
    mode: Mode,
    args: &RelayBenchArgs,
    server: &Cpu,
    clk: f64,
    server_threads: usize,
) -> anyhow::Result<LoadReport> {
    let counters = Arc::new(Counters::default());
    let tids = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let nthreads = args.client_threads.max(1).min(pairs.len().max(1));
    let mut per_thread: Vec<Vec<Pair>> = (0..nthreads).map(|_| Vec::new()).collect();
    for (i, p) in pairs.iter().enumerate() {
        per_thread[i % nthreads].push(p.try_clone()?);
    }
    let mut handles = Vec::new();
    for (i, ps) in per_thread.into_iter().enumerate() {
        let setup = LoadSetup {
            pairs: ps,
            mode,
            len: CD_HEADER + args.payload,
            epoch,
            max_pings: args.max_packets,
            counters: counters.clone(),
            tids: tids.clone(),
            spread: nthreads,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-load-{i}"))
                .spawn(move || load_thread(setup))?,
        );
    }
    let client = Cpu::Threads(tids);
    tokio::time::sleep(WARMUP).await;
    let (r0, p0, s0, c0, x0, y0, t0) = (
        counters.received(),
        counters.pings_sent.load(Ordering::Relaxed),
        server.ticks()?,
        client.ticks()?,
        server.runtime_ns(),
        system_busy_ticks(),
        Instant::now(),
    );
    counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let (r1, p1, s1, c1, x1, y1, t1) = (
        counters.received(),
        counters.pings_sent.load(Ordering::Relaxed),
        server.ticks()?,
        client.ticks()?,
        server.runtime_ns(),
        system_busy_ticks(),
        Instant::now(),
    );
    counters.stop.store(true, Ordering::Relaxed);
    let mut hist = new_histogram()?;
    let joined = tokio::task::spawn_blocking(move || {
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    })
    .await?;
    for j in joined {
        match j {
            Ok(Ok(h)) => hist.add(h).context("merging histograms")?,
            Ok(Err(e)) => return Err(e.context("a load thread failed")),
            Err(_) => bail!("a load thread panicked"),
        }
    }
    let wall = (t1 - t0).as_secs_f64();
    let relayed = r1.saturating_sub(r0) as f64;
    let server_cpu = s1.saturating_sub(s0) as f64 / clk;
    let client_cpu = c1.saturating_sub(c0) as f64 / clk;
    let sent_total = counters.pings_sent.load(Ordering::Relaxed) as f64;
    let recv_total = counters.received() as f64;
    let expected = 2.0 * sent_total;
    let loss_pct = if expected > 0.0 {
        ((expected - recv_total) / expected * 100.0).max(0.0)
    } else {
        0.0
    };
    let server_runtime = x1.saturating_sub(x0) as f64 / 1e9;
    let system_cpu = y1.saturating_sub(y0) as f64 / clk;
    let server_cores = server_cpu / wall;
    let client_cores = client_cpu / wall;
    let other_cores = ((system_cpu - server_cpu - client_cpu) / wall).max(0.0);
    let saturated = limit(server_cores, server_threads, client_cores, nthreads);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        offered_per_s: 2.0 * p1.saturating_sub(p0) as f64 / wall,
        relayed_per_s: relayed / wall,
        loss_pct,
        send_errors: counters.send_fail.load(Ordering::Relaxed),
        server_cores,
        client_cores,
        other_cores,
        cpu_us_per_packet: if relayed > 0.0 {
            server_cpu / relayed * 1e6
        } else {
            0.0
        },
        cpu_us_per_packet_runtime: if relayed > 0.0 {
            server_runtime / relayed * 1e6
        } else {
            0.0
        },
        per_core: if server_cpu > 0.0 {
            relayed / server_cpu
        } else {
            0.0
        },
        p50_us: us(0.5),
        p99_us: us(0.99),
        max_us: hist.max() as f64 / 1000.0,
        saturated: saturated.into(),
    })
}

/// Which side used (nearly) all its threads' CPU.
fn limit(
    server_cores: f64,
    server_threads: usize,
    client_cores: f64,
    client_threads: usize,
) -> &'static str {
    let server_busy = server_cores >= 0.9 * server_threads as f64;
    let client_busy = client_cores >= 0.9 * client_threads as f64;
    match (server_busy, client_busy) {
        (true, true) => "both",
        (true, false) => "server",
        (false, true) => "client",
        (false, false) => "neither",
    }
}

/// The field-by-field median of several rounds.
fn median(rounds: &[LoadReport], server_threads: usize, client_threads: usize) -> LoadReport {
    let m = |f: fn(&LoadReport) -> f64| -> f64 {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let server_cores = m(|r| r.server_cores);
    let client_cores = m(|r| r.client_cores);
    LoadReport {
        offered_per_s: m(|r| r.offered_per_s),
        relayed_per_s: m(|r| r.relayed_per_s),
        loss_pct: m(|r| r.loss_pct),
        send_errors: rounds.iter().map(|r| r.send_errors).sum(),
        server_cores,
        client_cores,
        other_cores: m(|r| r.other_cores),
        cpu_us_per_packet: m(|r| r.cpu_us_per_packet),
        cpu_us_per_packet_runtime: m(|r| r.cpu_us_per_packet_runtime),
        per_core: m(|r| r.per_core),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        max_us: m(|r| r.max_us),
        saturated: limit(server_cores, server_threads, client_cores, client_threads).into(),
    }
}

// ---------------------------------------------------------------------------------------
// TURN set-up of the load tool's allocations

/// Drives `client` over `sock` until `done` accepts an event; fails on a refused request.
async fn drive(
    sock: &UdpSocket,
    client: &mut Client,
    mut done: impl FnMut(&ClientEvent) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = client.poll_transmit() {
            sock.send(&t).await?;
        }
        while let Some(ev) = client.poll_event() {
            if let ClientEvent::RequestFailed { method, code } = &ev {
                bail!("TURN request {method:?} failed with {code:?}");
            }
            if done(&ev) {
                return Ok(());
            }
        }
        let now = Instant::now();
        if now > deadline {
            bail!("TURN set-up timed out");
        }
        let wake = client
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(deadline);
        tokio::select! {
            r = sock.recv(&mut buf) => {
                let n = r?;
                let _ = client.handle_packet(Instant::now(), &buf[..n]);
            }
            _ = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now()),
        }
    }
}

/// Makes `pairs` pairs of allocations on `server`, each side with a channel to the other.
/// Also returns each socket's TURN client, for [`release`].
async fn turn_pairs(
    server: SocketAddr,
    secret: &str,
    pairs: usize,
) -> anyhow::Result<(Vec<Pair>, Vec<Client>)> {
    let mut out = Vec::with_capacity(pairs);
    let mut clients = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(server).await?;
            let (user, pass) =
                rest::credentials(secret.as_bytes(), unix_now() + 3600, &random_token());
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            let mut client = Client::new(ClientConfig::new(Transport::Udp, user, pass), seed);
            client.allocate(Instant::now())?;
            drive(&sock, &mut client, |e| {
                matches!(e, ClientEvent::Allocated { .. })
            })
            .await
            .context("allocating")?;
            let relay = client.relay_address().context("no relayed address")?;
            ends.push((sock, client, relay));
        }
        let (mut a, mut b) = match (ends.pop(), ends.pop()) {
            (Some(b), Some(a)) => (a, b),
            _ => bail!("allocation pair"),
        };
        let ca = a.1.bind_channel(Instant::now(), b.2)?;
        drive(&a.0, &mut a.1, |e| {
            matches!(e, ClientEvent::ChannelBound { .. })
        })
        .await
        .context("binding a channel")?;
        // The echoer returns packets unchanged: the relay delivers to it on its own
        // channel, which is also the one it sends on.
        b.1.bind_channel(Instant::now(), a.2)?;
        drive(&b.0, &mut b.1, |e| {
            matches!(e, ClientEvent::ChannelBound { .. })
        })
        .await
        .context("binding a channel")?;
        out.push(Pair {
            ping: a.0.into_std()?,
            echo: b.0.into_std()?,
            ping_header: header(ca),
        });
        clients.push(a.1);
        clients.push(b.1);
    }
    Ok((out, clients))
}

/// Deletes the allocations (Refresh with lifetime 0), so later clients on the same
/// machine never meet a stale 5-tuple.
async fn release(pairs: Vec<Pair>, clients: Vec<Client>) -> anyhow::Result<()> {
    let socks = pairs.into_iter().flat_map(|p| [p.ping, p.echo]);
    for (sock, mut client) in socks.zip(clients) {
        let sock = UdpSocket::from_std(sock)?;
        client.release(Instant::now())?;
        drive(&sock, &mut client, |e| {
            matches!(e, ClientEvent::AllocationEnded)
        })
        .await
        .context("releasing an allocation")?;
    }
    Ok(())
}

/// A ChannelData header for `channel`; [`with_len`] fills in the length.
fn header(channel: u16) -> [u8; CD_HEADER] {
    let c = channel.to_be_bytes();
    [c[0], c[1], 0, 0]
}

fn with_len(pairs: &mut [Pair], payload: usize) -> anyhow::Result<()> {
    let len = u16::try_from(payload)
        .context("payload too large")?
        .to_be_bytes();
    for p in pairs {
        p.ping_header[2] = len[0];
        p.ping_header[3] = len[1];
    }
    Ok(())
}

/// Pairs of plain sockets through the forwarder.
fn forwarder_pairs(fwd: SocketAddr, map: &ForwardMap, pairs: usize) -> anyhow::Result<Vec<Pair>> {
    let mut out = Vec::with_capacity(pairs);
    let mut m = map
        .lock()
        .map_err(|_| anyhow::anyhow!("forwarder map poisoned"))?;
    for _ in 0..pairs {
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
        a.connect(fwd)?;
        b.connect(fwd)?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        m.insert(a.local_addr()?, b.local_addr()?);
        m.insert(b.local_addr()?, a.local_addr()?);
        out.push(Pair {
            ping: a,
            echo: b,
            ping_header: header(0x4000),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Servers

/// Sends STUN Binding requests until the server answers.
async fn wait_stun(server: SocketAddr) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        let mut tid = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut tid);
        let req =
            MessageBuilder::new(Class::Request, Method::BINDING, TransactionId(tid)).build()?;
        let _ = sock.send(&req).await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
            && Message::decode(&buf[..n]).is_ok_and(|m| m.class() == Class::SuccessResponse)
        {
            return Ok(());
        }
    }
    bail!("no STUN answer from {server}")
}

/// A free port on 127.0.0.1 for both UDP and TCP (coturn listens on both).
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn coturn_args(port: u16, threads: usize, secret: &str, dir: &std::path::Path) -> Vec<String> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    vec![
        "-n".into(),
        "--use-auth-secret".into(),
        format!("--static-auth-secret={secret}"),
        "--realm".into(),
        "umbra".into(),
        "--listening-ip".into(),
        "127.0.0.1".into(),
        "--relay-ip".into(),
        "127.0.0.1".into(),
        "--listening-port".into(),
        port.to_string(),
        "--allow-loopback-peers".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--no-cli".into(),
        "--min-port".into(),
        COTURN_PORTS.0.to_string(),
        "--max-port".into(),
        COTURN_PORTS.1.to_string(),
        "--relay-threads".into(),
        threads.to_string(),
        "--db".into(),
        d("turndb"),
        "--pidfile".into(),
        d("turnserver.pid"),
        "--log-file".into(),
        d("coturn.log"),
        "--simple-log".into(),
        "--no-stdout-log".into(),
    ]
}

fn umbra_args(threads: usize, secret_file: &std::path::Path) -> Vec<String> {
    vec![
        "relay".into(),
        "--auth-secret-file".into(),
        secret_file.to_string_lossy().into_owned(),
        "--udp-listen".into(),
        "127.0.0.1:0".into(),
        "--tcp-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--relay-port-min".into(),
        UMBRA_PORTS.0.to_string(),
        "--relay-port-max".into(),
        UMBRA_PORTS.1.to_string(),
        "--user-quota".into(),
        "100000".into(),
        "--workers".into(),
        threads.to_string(),
    ]
}

async fn start_coturn(bin: &str, args: &[String]) -> anyhow::Result<Child> {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} (install the Debian package coturn)"))
}

async fn start_umbra(bin: &str, args: &[String]) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} relay"))?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.trim().strip_prefix("udp ") {
                return a.trim().parse::<SocketAddr>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the Umbra relay printed no UDP address")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

fn uclient_args(args: &RelayBenchArgs) -> Vec<String> {
    vec![
        "-y".into(),
        "-c".into(),
        "-m".into(),
        args.uclient_clients.to_string(),
        "-l".into(),
        args.payload.to_string(),
        "-z".into(),
        "0".into(),
        "-n".into(),
        args.uclient_messages.to_string(),
    ]
}

/// Runs turnutils_uclient against `port` and reads the server's CPU around it.
async fn uclient_run(
    args: &RelayBenchArgs,
    port: u16,
    secret: &str,
    server: &Cpu,
    clk: f64,
) -> anyhow::Result<UclientReport> {
    let (user, pass) = rest::credentials(secret.as_bytes(), unix_now() + 3600, "uclient");
    let mut a = uclient_args(args);
    a.extend([
        "-u".into(),
        user,
        "-w".into(),
        pass,
        "-p".into(),
        port.to_string(),
        "127.0.0.1".into(),
    ]);
    let c0 = server.ticks()?;
    let t0 = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(&args.uclient)
            .args(&a)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("turnutils_uclient did not finish within 300 s")?
    .with_context(|| format!("running {}", args.uclient))?;
    let seconds = t0.elapsed().as_secs_f64();
    let c1 = server.ticks()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = |key: &str| number_after(&text, key);
    let (Some(sent), Some(received)) = (after("tot_send_msgs="), after("tot_recv_msgs=")) else {
        bail!("turnutils_uclient printed no totals:\n{text}");
    };
    let lost = after("Total lost packets").unwrap_or(0.0);
    let rtt = after("Average round trip delay").unwrap_or(f64::NAN);
    let cpu = c1.saturating_sub(c0) as f64 / clk;
    Ok(UclientReport {
        sent: sent as u64,
        received: received as u64,
        lost: lost as u64,
        seconds,
        per_second: received / seconds,
        server_cpu_s: cpu,
        cpu_us_per_message: if received > 0.0 {
            cpu / received * 1e6
        } else {
            0.0
        },
        avg_rtt_ms: rtt,
    })
}

/// The number following the last occurrence of `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.split_once(key).map(|(_, rest)| rest.trim_start()))
        .filter_map(|rest| {
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            num.parse().ok()
        })
        .next_back()
}

/// Both load phases over `pairs`.
async fn load_phases(
    name: &str,
    pairs: &mut [Pair],
    args: &RelayBenchArgs,
    server: &Cpu,
    clk: f64,
) -> anyhow::Result<(LoadReport, LoadReport)> {
    with_len(pairs, args.payload)?;
    let per_pair = args.rate as f64 / 2.0 / pairs.len().max(1) as f64;
    crate::note!(
        "  {name}: equal load, {} relayed packets/s offered ...",
        args.rate
    );
    let eq = run_phase(pairs, Mode::Rate(per_pair), args, server, clk, args.threads).await?;
    crate::note!(
        "    {:.0}/s, {:.2} us CPU/packet, p50 {:.1} us, p99 {:.1} us",
        eq.relayed_per_s,
        eq.cpu_us_per_packet,
        eq.p50_us,
        eq.p99_us
    );
    crate::note!(
        "  {name}: saturation, {} in flight per pair ...",
        args.window
    );
    let sat = run_phase(
        pairs,
        Mode::Window(args.window.max(1)),
        args,
        server,
        clk,
        args.threads,
    )
    .await?;
    crate::note!(
        "    {:.0}/s, {:.2} us CPU/packet, {:.0} packets/s per core, p99 {:.1} us",
        sat.relayed_per_s,
        sat.cpu_us_per_packet,
        sat.per_core,
        sat.p99_us
    );
    Ok((eq, sat))
}

/// Runs the comparison.
pub async fn run(args: &RelayBenchArgs) -> anyhow::Result<RelayBenchReport> {
    if args.payload < STAMP || args.payload > 1400 {
        bail!("--payload must be between {STAMP} and 1400 bytes");
    }
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if args.seconds == 0 || args.seconds > 120 {
        // A round's allocations must outlive both phases (permissions last 300 s).
        bail!("--seconds must be between 1 and 120");
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let clk = clock_ticks();
    let dir = std::env::temp_dir().join(format!("umbra-bench-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Removed on every exit path: it holds the shared secret and coturn's files.
    let _cleanup = RemoveOnDrop(dir.clone());
    let secret = random_token() + &random_token();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, &secret)?;
    let umbra_bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let coturn_port = free_port()?;
    let c_args = coturn_args(coturn_port, args.threads, &secret, &dir);
    let u_args = umbra_args(args.threads, &secret_file);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    // Start every path first, then let them take turns, round by round.
    let mut paths: Vec<PathUnderTest> = Vec::new();
    if wanted("baseline") {
        crate::note!("baseline: raw UDP forwarder, {} thread(s)", args.threads);
        let (fwd, map) = Forwarder::start(args.threads)?;
        paths.push(PathUnderTest::new(
            "baseline",
            Cpu::Threads(fwd.tids.clone()),
            Via::Forwarder(fwd, map),
        ));
    }
    if wanted("coturn") {
        crate::note!("coturn: {} {}", args.turnserver, redact(&c_args, &secret));
        let coturn = start_coturn(&args.turnserver, &c_args).await?;
        let addr: SocketAddr = ([127, 0, 0, 1], coturn_port).into();
        wait_stun(addr).await.context("coturn did not start")?;
        let cpu = Cpu::Process(coturn.id().context("coturn pid")?);
        paths.push(PathUnderTest::new("coturn", cpu, Via::Turn(addr, coturn)));
    }
    if wanted("umbra") {
        crate::note!("umbra: {umbra_bin} {}", u_args.join(" "));
        let (umbra, addr) = start_umbra(&umbra_bin, &u_args).await?;
        wait_stun(addr)
            .await
            .context("the Umbra relay did not start")?;
        let cpu = Cpu::Process(umbra.id().context("umbra pid")?);
        paths.push(PathUnderTest::new("umbra", cpu, Via::Turn(addr, umbra)));
    }
    for round in 1..=args.rounds.max(1) {
        crate::note!("round {round} of {}", args.rounds.max(1));
        for p in &mut paths {
            p.round(args, &secret, clk).await?;
        }
    }
    let mut targets = Vec::new();
    for p in paths {
        let uclient = match &p.via {
            Via::Turn(addr, _) if args.uclient_messages > 0 => {
                crate::note!("  {}: turnutils_uclient ...", p.name);
                let u = uclient_run(args, addr.port(), &secret, &p.cpu, clk).await?;
                crate::note!(
                    "    received {} of {} in {:.1} s, {:.2} us CPU/message",
                    u.received,
                    u.sent,
                    u.seconds,
                    u.cpu_us_per_message
                );
                Some(u)
            }
            _ => None,
        };
        let nclient = args.client_threads.max(1).min(args.pairs);
        targets.push(TargetReport {
            name: p.name.into(),
            uclient,
            equal_load: median(&p.eq, args.threads, nclient),
            saturation: median(&p.sat, args.threads, nclient),
            equal_load_rounds: p.eq,
            saturation_rounds: p.sat,
        });
        match p.via {
            Via::Forwarder(fwd, _) => fwd.stop(),
            Via::Turn(_, mut child) => {
                let _ = child.kill().await;
            }
        }
    }

    let mut uc = uclient_args(args);
    uc.extend(["-u", "USER", "-w", "PASS", "-p", "PORT", "127.0.0.1"].map(String::from));
    Ok(RelayBenchReport {
        threads: args.threads,
        client_threads: args.client_threads,
        pairs: args.pairs,
        payload: args.payload,
        window: args.window,
        seconds: args.seconds,
        rounds: args.rounds.max(1),
        rate: args.rate,
        coturn_command: format!("{} {}", args.turnserver, redact(&c_args, &secret)),
        umbra_command: format!("umbra {}", u_args.join(" ")),
        uclient_command: format!("{} {}", args.uclient, uc.join(" ")),
        targets,
    })
}

fn redact(args: &[String], secret: &str) -> String {
    args.join(" ").replace(secret, "S")
}

/// How a path is reached.
enum Via {
    /// The bench's own forwarder.
    Forwarder(Forwarder, ForwardMap),
    /// A TURN server (child process) at this address.
    Turn(SocketAddr, Child),
}

/// One path and its rounds so far.
struct PathUnderTest {
    name: &'static str,
    cpu: Cpu,
    via: Via,
    eq: Vec<LoadReport>,
    sat: Vec<LoadReport>,
}

impl PathUnderTest {
    fn new(name: &'static str, cpu: Cpu, via: Via) -> PathUnderTest {
        PathUnderTest {
            name,
            cpu,
            via,
            eq: Vec::new(),
            sat: Vec::new(),
        }
    }

    /// One round: fresh pairs (allocations on a TURN server, deleted afterwards, so no
    /// permission can expire mid-run), equal load, then saturation.
    async fn round(&mut self, args: &RelayBenchArgs, secret: &str, clk: f64) -> anyhow::Result<()> {
        let (eq, sat) = match &self.via {
            Via::Forwarder(fwd, map) => {
                let mut pairs = forwarder_pairs(fwd.addr, map, args.pairs)?;
                load_phases(self.name, &mut pairs, args, &self.cpu, clk).await?
            }
            Via::Turn(addr, _) => {
                let (mut pairs, clients) = turn_pairs(*addr, secret, args.pairs)
                    .await
                    .with_context(|| format!("allocating on {}", self.name))?;
                let r = load_phases(self.name, &mut pairs, args, &self.cpu, clk).await?;
                release(pairs, clients).await?;
                r
            }
        };
        self.eq.push(eq);
        self.sat.push(sat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_uclient_output() {
        let stat = "4242 (turn server) (x)) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 3 0 100";
        assert_eq!(parse_stat_ticks(stat).expect("valid"), 281);
        assert!(parse_stat_ticks("garbage").is_err());
        let out = "1: : start_mclient: tot_send_msgs=400, tot_recv_msgs=390\n\
                   8: : start_mclient: tot_send_msgs=40000, tot_recv_msgs=39613\n\
                   15: : Total lost packets 387 (0.967500%), total send dropped 0\n\
                   15: : Average round trip delay 1.496327 ms; min = 0 ms\n";
        assert_eq!(number_after(out, "tot_send_msgs="), Some(40000.0));
        assert_eq!(number_after(out, "tot_recv_msgs="), Some(39613.0));
        assert_eq!(number_after(out, "Total lost packets"), Some(387.0));
        assert_eq!(
            number_after(out, "Average round trip delay"),
            Some(1.496327)
        );
        assert_eq!(number_after(out, "absent"), None);
    }
}
