//! `umbra bench sfu`: the group call forwarding unit under real Opus packet
//! rates. It starts `umbra relay` (whose unit is measured, in its own
//! process), and in this process as many members as each step asks for:
//! each one a real member's engine (`Engine::toward_unit`: ICE, DTLS-SRTP)
//! with a control connection of its own, sending one 80-byte frame every
//! 20 ms (what Opus at 32 kbit/s makes), stamped with when it was sent.
//!
//! In each room one member (the listener) opens everything it receives and
//! records each frame's delay from its sender's stamp (sealing, the unit,
//! SRTP both ways and two trips through the kernel: what a member would
//! hear) and the frames that never came; the other members read only what
//! keeps their connection up (STUN, DTLS, RTCP) and drop forwarded media
//! unopened, so the load tool spends its core on sending. The unit's CPU
//! is its process's scheduler run time over the measured seconds.
//!
//! Steps: one room of each size asked for (4, 8, 16, 32, 50), then the
//! largest room that holds p99 under the bound, then the most rooms of 4.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use umbra_call::driver::bind_toward;
use umbra_call::{Engine, EngineEvent};
use umbra_client::calls::unit;
use umbra_turn::credentials::rest;
use umbra_wire::invite::UnitLink;
use umbra_wire::proto::RelayCredentials;

use crate::cpu::process_runtime_ns;
use crate::janus;
use crate::progress::Progress;
use crate::sfu_janus;
use crate::util::{RemoveOnDrop, random_token, unix_now};

/// Bytes of each frame: Opus at 32 kbit/s, 20 ms.
const FRAME_BYTES: usize = 80;
/// A frame every 20 ms.
pub(crate) const FRAME_EVERY: Duration = Duration::from_millis(20);
/// Connecting every member of a step may take this long.
pub(crate) const SETUP_WITHIN: Duration = Duration::from_secs(60);
/// Joins toward Umbra's unit under way at once (its limit per address).
const JOINS_AT_ONCE: usize = 8;
/// Sending before the measured seconds start.
const WARM_UP: Duration = Duration::from_secs(1);

/// Flags of `umbra bench sfu`.
#[derive(Debug, Clone, clap::Args)]
pub struct SfuBenchArgs {
    /// The `umbra` binary whose unit is measured [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
    /// Room sizes measured one room at a time.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,50")]
    pub sizes: Vec<usize>,
    /// Larger rooms tried, in order, for the largest that holds the bound.
    #[arg(long, value_delimiter = ',', default_value = "56,64,80,100")]
    pub large: Vec<usize>,
    /// Counts of rooms of 4 tried, in order, for the most that hold the bound.
    #[arg(long, value_delimiter = ',', default_value = "25,50,75,100,150")]
    pub rooms: Vec<usize>,
    /// Seconds measured per step (after a warm-up of one second).
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// The bound a step must hold: p99 delay, milliseconds (and under 1% lost).
    #[arg(long, default_value_t = 20)]
    pub p99_ms: u64,
    /// Also measure Janus's VideoRoom (Debian package `janus`), the same
    /// steps after Umbra's. Janus uses no loopback interface, so the whole
    /// bench then runs in a network namespace it creates (needs root and
    /// `ip`) whose traffic never leaves it.
    #[arg(long)]
    pub janus: bool,
    /// The Janus binary.
    #[arg(long, default_value = "janus")]
    pub janus_bin: String,
}

/// One step: rooms of a size, all at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Members per room.
    pub room_size: usize,
    /// Rooms.
    pub rooms: usize,
    /// Forwarded streams: each sender's audio toward each other member.
    pub streams: usize,
    /// Frames the unit forwarded per second (measured by the listeners,
    /// scaled to every member).
    pub forwarded_per_s: f64,
    /// The unit's CPU over the measured seconds, in cores.
    pub unit_cores: f64,
    /// The load tool's (this process's members'), in cores: on a small
    /// machine, what is left for the unit.
    pub load_cores: f64,
    /// Forwarded streams per core of the unit.
    pub streams_per_core: f64,
    /// Delay of a frame, sender to listener: median, p99, worst (ms).
    pub p50_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Frames the listeners never got, share.
    pub lost: f64,
    /// Members that did not get connected within the set-up time.
    pub not_connected: u64,
    /// Why a member could not join, when one could not.
    pub why_not: Option<String>,
    /// Whether it held the bound.
    pub held: bool,
}

/// One unit's steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    /// Which unit: `umbra` or `janus`.
    pub unit: String,
    /// One room of each size.
    pub sizes: Vec<Step>,
    /// The larger rooms tried (up to the first that failed).
    pub large: Vec<Step>,
    /// The counts of rooms of 4 tried (up to the first that failed).
    pub small_rooms: Vec<Step>,
}

/// What `umbra bench sfu` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SfuBenchReport {
    /// Umbra's unit.
    pub umbra: Side,
    /// Janus's VideoRoom, with `--janus`.
    pub janus: Option<Side>,
    /// The bound, p99 ms.
    pub p99_bound_ms: u64,
    /// Cores of this machine.
    pub cores: usize,
}

/// What one listener measured.
pub(crate) struct Heard {
    delays_us: Histogram<u64>,
    received: u64,
    /// Per sender: first and last sequence number seen in the window.
    seen: HashMap<u16, (u32, u32)>,
}

impl Heard {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            delays_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            received: 0,
            seen: HashMap::new(),
        })
    }

    /// A frame stamped by [`Stamper::frame`] arrived.
    pub(crate) fn record(&mut self, f: &[u8], epoch: Instant) {
        if f.len() < 14 {
            return;
        }
        let stamp = u64::from_be_bytes(f[..8].try_into().unwrap_or_default());
        let sender = u16::from_be_bytes([f[8], f[9]]);
        let s = u32::from_be_bytes(f[10..14].try_into().unwrap_or_default());
        let now_us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self.delays_us.record(now_us.saturating_sub(stamp).max(1));
        self.received += 1;
        let e = self.seen.entry(sender).or_insert((s, s));
        e.0 = e.0.min(s);
        e.1 = e.1.max(s);
    }

    /// Frames the senders sent between the first and last each was heard.
    fn expected(&self) -> u64 {
        self.seen
            .values()
            .map(|(lo, hi)| u64::from(hi - lo) + 1)
            .sum()
    }
}

/// What a member writes into each frame: when it was sent, by whom, which.
pub(crate) struct Stamper {
    epoch: Instant,
    id: u16,
    seq: u32,
}

impl Stamper {
    pub(crate) fn new(epoch: Instant, id: u16) -> Self {
        Self { epoch, id, seq: 0 }
    }

    /// The next frame.
    pub(crate) fn frame(&mut self) -> Vec<u8> {
        let mut frame = vec![0u8; FRAME_BYTES];
        let stamp = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        frame[..8].copy_from_slice(&stamp.to_be_bytes());
        frame[8..10].copy_from_slice(&self.id.to_be_bytes());
        frame[10..14].copy_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        frame
    }
}

/// What the members of a step share: the time stamps' origin, the count
/// of members connected, and the measured window once it is set.
#[derive(Clone)]
pub(crate) struct StepClock {
    pub(crate) epoch: Instant,
    pub(crate) connected: Arc<AtomicU64>,
    pub(crate) window: watch::Receiver<Window>,
    /// Joins under way at once toward Umbra's unit: it lets at most 8
    /// control connections from one address wait to join, and every
    /// member here comes from 127.0.0.1.
    joins: Arc<Semaphore>,
}

impl StepClock {
    /// Whether the window is over, and whether `now` is in it.
    pub(crate) fn state(&self, now: Instant) -> (bool, bool) {
        match *self.window.borrow() {
            Some((from, until)) => (now >= until, now >= from && now < until),
            None => (false, false),
        }
    }
}

/// The unit a step measures.
enum Target<'a> {
    /// Umbra's, in `umbra relay`.
    Umbra {
        link: &'a UnitLink,
        secret: &'a Arc<String>,
    },
    /// Janus's VideoRoom.
    Janus { api: &'a janus::Api, ip: IpAddr },
}

/// Starts `umbra relay` with its unit on loopback; returns it and the link.
async fn start_unit(
    bin: &str,
    secret: &std::path::Path,
    room: usize,
    max: usize,
) -> anyhow::Result<(Child, UnitLink)> {
    let mut child = Command::new(bin)
        .args(["relay", "--auth-secret-file"])
        .arg(secret)
        .args([
            "--udp-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--unit-listen",
            "127.0.0.1:0",
        ])
        .args(["--unit-room-size", &room.to_string()])
        .args(["--unit-max-members", &max.max(room).to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} relay"))?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let link = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("--unit '").nth(1) {
                return rest
                    .split('\'')
                    .next()
                    .and_then(|l| UnitLink::parse(l).ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the relay printed no forwarding unit link")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, link))
}

/// Whether a datagram is forwarded media (RTP, not RTCP): what a member
/// that does not listen drops unopened.
pub(crate) fn is_media(d: &[u8]) -> bool {
    d.len() > 12 && d[0] & 0xc0 == 0x80 && !(200..=207).contains(&d[1])
}

/// The measured window, once every member is connected.
type Window = Option<(Instant, Instant)>;

/// One member: joins, sends a stamped frame every 20 ms until the window
/// ends; a listener also opens and times what it receives.
async fn member(
    link: UnitLink,
    secret: Arc<String>,
    room: [u8; 16],
    id: u16,
    listen: bool,
    mut clock_of: StepClock,
) -> anyhow::Result<Option<Heard>> {
    let (username, password) =
        rest::credentials(secret.as_bytes(), unix_now() + 3600, &random_token());
    let creds = RelayCredentials {
        username,
        password,
        ..Default::default()
    };
    let unit_addr = unit::resolve(&link).await?;
    let (socket, local) = bind_toward(unit_addr)?;
    let mut engine = Engine::toward_unit(unit_addr, local, Instant::now())?;
    let offer = engine.create_offer(Instant::now())?;
    let permit = clock_of.joins.acquire().await?;
    let session = unit::join(&link, &creds, room, &offer).await?;
    drop(permit);
    engine.accept_answer(Instant::now(), &session.answer)?;
    let mut buf = vec![0u8; 2048];
    let mut clock = tokio::time::interval(FRAME_EVERY);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut is_up = false;
    let mut stamper = Stamper::new(clock_of.epoch, id);
    let mut heard = Heard::new()?;
    loop {
        if clock_of.state(Instant::now()).0 {
            break;
        }
        let wake = tokio::time::Instant::from_std(engine.poll_timeout());
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r
                    && (listen || !is_media(&buf[..n]))
                {
                    engine.handle_datagram(Instant::now(), from, &buf[..n]);
                }
            }
            () = tokio::time::sleep_until(wake) => engine.handle_timeout(Instant::now()),
            _ = clock.tick(), if is_up => engine.send_frame(Instant::now(), stamper.frame()),
            changed = clock_of.window.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        let measuring = clock_of.state(Instant::now()).1;
        while let Some(f) = engine.poll_frame() {
            if listen && measuring {
                heard.record(&f, clock_of.epoch);
            }
        }
        while let Some(e) = engine.poll_event() {
            if matches!(e, EngineEvent::Connected(_)) && !is_up {
                is_up = true;
                clock_of.connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(d) = engine.poll_transmit() {
            let _ = socket.send_to(&d.data, d.to).await;
        }
    }
    engine.hang_up(Instant::now());
    while let Some(d) = engine.poll_transmit() {
        let _ = socket.send_to(&d.data, d.to).await;
    }
    session.leave().await;
    Ok(listen.then_some(heard))
}

/// Runs one step: `rooms` rooms of `size`, on the unit `target` whose
/// process is `unit_pid`.
async fn step(
    target: &Target<'_>,
    unit_pid: u32,
    size: usize,
    rooms: usize,
    args: &SfuBenchArgs,
) -> anyhow::Result<Step> {
    let total = size * rooms;
    let connected = Arc::new(AtomicU64::new(0));
    let (window_tx, window_rx) = watch::channel::<Window>(None);
    let clock = StepClock {
        epoch: Instant::now(),
        connected: connected.clone(),
        window: window_rx,
        joins: Arc::new(Semaphore::new(JOINS_AT_ONCE)),
    };
    let mut tasks = Vec::with_capacity(total);
    let label: &'static str = "members connected";
    let progress = Progress::start(label, connected.clone(), total as u64, true);
    for r in 0..rooms {
        let janus_room = match target {
            Target::Umbra { .. } => None,
            Target::Janus { api, .. } => Some(sfu_janus::Room::create(api, size).await?),
        };
        let room: [u8; 16] = rand::random();
        for m in 0..size {
            let id = u16::try_from(m).unwrap_or(u16::MAX);
            let listen = m == 0;
            tasks.push(match (target, janus_room.as_ref()) {
                (Target::Janus { api, ip }, Some(jr)) => tokio::spawn(sfu_janus::member(
                    (*api).clone(),
                    *ip,
                    jr.seat(),
                    id,
                    listen,
                    clock.clone(),
                )),
                (Target::Umbra { link, secret }, _) => tokio::spawn(member(
                    (*link).clone(),
                    (*secret).clone(),
                    room,
                    id,
                    listen,
                    clock.clone(),
                )),
                (Target::Janus { .. }, None) => bail!("a Janus room was not created"),
            });
            // Joins spread out as real ones are, a little.
            if (r * size + m) % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    // A member that cannot join or connect in time fails the step (it is
    // measured all the same, with those that did).
    let deadline = Instant::now() + SETUP_WITHIN;
    while connected.load(Ordering::Relaxed) < total as u64
        && Instant::now() < deadline
        && !tasks.iter().any(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(progress);
    let joined = connected.load(Ordering::Relaxed);
    let from = Instant::now() + WARM_UP;
    let until = from + Duration::from_secs(args.seconds);
    let _ = window_tx.send(Some((from, until)));
    tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
    let me = std::process::id();
    let (cpu0, load0) = (process_runtime_ns(unit_pid), process_runtime_ns(me));
    let t0 = Instant::now();
    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    let (cpu1, load1) = (process_runtime_ns(unit_pid), process_runtime_ns(me));
    let wall = t0.elapsed().as_secs_f64();
    let mut delays = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut received, mut expected) = (0u64, 0u64);
    let mut failed = total as u64 - joined.min(total as u64);
    let mut why = None;
    for t in tasks {
        match t.await.context("a member task")? {
            Ok(Some(h)) => {
                delays.add(&h.delays_us)?;
                received += h.received;
                expected += h.expected();
            }
            Ok(None) => {}
            Err(e) => {
                failed = failed.max(1);
                why.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let streams = rooms * size * (size - 1);
    let unit_cores = (cpu1.saturating_sub(cpu0)) as f64 / 1e9 / wall;
    let load_cores = (load1.saturating_sub(load0)) as f64 / 1e9 / wall;
    // Each listener hears size - 1 streams; every member hears as many.
    let per_listener = received as f64 / wall / rooms.max(1) as f64;
    let forwarded_per_s = per_listener * total as f64;
    let lost = if expected == 0 {
        1.0
    } else {
        1.0 - (received.min(expected) as f64 / expected as f64)
    };
    let ms = |q: f64| delays.value_at_quantile(q) as f64 / 1000.0;
    let p99_ms = ms(0.99);
    Ok(Step {
        room_size: size,
        rooms,
        streams,
        forwarded_per_s,
        unit_cores,
        load_cores,
        streams_per_core: if unit_cores > 0.0 {
            streams as f64 / unit_cores
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p99_ms,
        max_ms: delays.max() as f64 / 1000.0,
        lost,
        not_connected: failed,
        why_not: why,
        held: failed == 0 && p99_ms < args.p99_ms as f64 && lost < 0.01,
    })
}

/// Runs every step on one unit.
async fn side(
    name: &'static str,
    target: &Target<'_>,
    pid: u32,
    args: &SfuBenchArgs,
) -> anyhow::Result<Side> {
    let mut side = Side {
        unit: name.to_owned(),
        sizes: Vec::new(),
        large: Vec::new(),
        small_rooms: Vec::new(),
    };
    for &size in &args.sizes {
        crate::note!("{name}: one room of {size}");
        side.sizes.push(step(target, pid, size, 1, args).await?);
    }
    for &size in &args.large {
        crate::note!("{name}: one room of {size}");
        let s = step(target, pid, size, 1, args).await?;
        let held = s.held;
        side.large.push(s);
        if !held {
            break;
        }
    }
    for &rooms in &args.rooms {
        crate::note!("{name}: {rooms} rooms of 4");
        let s = step(target, pid, 4, rooms, args).await?;
        let held = s.held;
        side.small_rooms.push(s);
        if !held {
            break;
        }
    }
    Ok(side)
}

/// Runs the whole bench (with `--janus`, from inside a network namespace
/// of its own: see [`sfu_janus::in_namespace`]).
pub async fn run(args: &SfuBenchArgs) -> anyhow::Result<SfuBenchReport> {
    if args.seconds == 0 || args.seconds > 60 {
        bail!("--seconds must be between 1 and 60");
    }
    if args
        .sizes
        .iter()
        .chain(&args.large)
        .any(|&s| !(2..=256).contains(&s))
    {
        bail!("room sizes must be between 2 and 256");
    }
    let janus_ip = if args.janus {
        match sfu_janus::in_namespace().await? {
            sfu_janus::Namespace::Outside(report) => return Ok(*report),
            sfu_janus::Namespace::Inside => Some(sfu_janus::JANUS_IP),
        }
    } else {
        None
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = std::env::temp_dir().join(format!("umbra-bench-sfu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let secret = Arc::new(random_token() + &random_token());
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret.as_bytes())?;
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let most = args
        .sizes
        .iter()
        .chain(&args.large)
        .copied()
        .chain(args.rooms.iter().map(|r| r * 4))
        .max()
        .unwrap_or(64);
    let largest = args
        .sizes
        .iter()
        .chain(&args.large)
        .copied()
        .max()
        .unwrap_or(4);
    let (mut child, link) = start_unit(&bin, &secret_file, largest, most + 16).await?;
    let pid = child.id().context("the relay's pid")?;
    let umbra = side(
        "umbra",
        &Target::Umbra {
            link: &link,
            secret: &secret,
        },
        pid,
        args,
    )
    .await?;
    let _ = child.kill().await;
    let janus = match janus_ip {
        Some(ip) => {
            let jdir = dir.join("janus");
            std::fs::create_dir_all(&jdir)?;
            let j = janus::start(&args.janus_bin, &jdir, ip, sfu_janus::IFACE).await?;
            let measured = side(
                "janus",
                &Target::Janus {
                    api: &j.api,
                    ip: sfu_janus::MEMBER_IP,
                },
                j.pid()?,
                args,
            )
            .await;
            j.stop().await;
            Some(measured?)
        }
        None => None,
    };
    let report = SfuBenchReport {
        umbra,
        janus,
        p99_bound_ms: args.p99_ms,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    sfu_janus::hand_out(&report)?;
    Ok(report)
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4} x {:<4} {:>7} streams {:>9.0} frames/s  unit {:>5.2} cores (load {:>4.2})  \
             {:>7.0} streams/core  delay p50 {:>5.1} p99 {:>5.1} max {:>6.1} ms  lost {:>5.2}%  {}",
            self.rooms,
            self.room_size,
            self.streams,
            self.forwarded_per_s,
            self.unit_cores,
            self.load_cores,
            self.streams_per_core,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.lost * 100.0,
            if self.held { "holds" } else { "does not hold" }
        )?;
        if self.not_connected > 0 {
            write!(f, " ({} members not connected", self.not_connected)?;
            if let Some(w) = &self.why_not {
                write!(f, ": {w}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: rooms x size", self.unit)?;
        for s in self
            .sizes
            .iter()
            .chain(&self.large)
            .chain(&self.small_rooms)
        {
            writeln!(f, "{s}")?;
        }
        write!(
            f,
            "{}: largest room that holds: {}; most rooms of 4 that hold: {}",
            self.unit,
            self.largest().map_or("none".into(), |n| n.to_string()),
            self.most_rooms().map_or("none".into(), |n| n.to_string())
        )
    }
}

impl Side {
    /// The largest room that held the bound.
    pub fn largest(&self) -> Option<usize> {
        self.sizes
            .iter()
            .chain(&self.large)
            .filter(|s| s.held)
            .map(|s| s.room_size)
            .max()
    }

    /// The most rooms of 4 that held the bound.
    pub fn most_rooms(&self) -> Option<usize> {
        self.small_rooms
            .iter()
            .filter(|s| s.held)
            .map(|s| s.rooms)
            .max()
    }
}

impl fmt::Display for SfuBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Forwarding units, {} cores; each member sends an 80-byte frame every 20 ms; bound: p99 < {} ms, \
             under 1% lost",
            self.cores, self.p99_bound_ms
        )?;
        write!(f, "{}", self.umbra)?;
        let Some(janus) = &self.janus else {
            return Ok(());
        };
        write!(f, "\n{janus}\nJanus beside Umbra, same rooms:")?;
        for (u, j) in self.umbra.sizes.iter().zip(&janus.sizes) {
            write!(
                f,
                "\n  room of {:>3}: Janus takes {:>5.2}x Umbra's CPU; p99 {:.1} ms (Umbra {:.1}); \
                 lost {:.2}% (Umbra {:.2}%)",
                u.room_size,
                j.unit_cores / u.unit_cores.max(1e-9),
                j.p99_ms,
                u.p99_ms,
                j.lost * 100.0,
                u.lost * 100.0
            )?;
        }
        Ok(())
    }
}
