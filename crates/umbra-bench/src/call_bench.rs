//! `umbra bench call`: what a call between two Umbra users costs and how it
//! behaves, on the real binary, in one run on loopback.
//!
//! The bench starts a deployment (`umbra server` and one or two `umbra relay`
//! processes, optionally with a userspace impairer in front of the relay),
//! registers two profiles, and runs real calls: `umbra listen --auto-answer`
//! as the callee, `umbra call` as the caller, both `--json`, every line
//! timestamped as it arrives. It reports:
//!
//! - **time to audio**: from starting `umbra call` to its first frame of the
//!   callee's audio playing (login, relay credentials, allocation, offer,
//!   ringing, answer, ICE, DTLS, jitter buffer), relayed (callee protects its
//!   IP) and default (starts relayed, then moves direct: also the time until
//!   the direct path is in use);
//! - **round-trip time** reported by the call (RTCP) direct, through one
//!   relay, and through two (each side on its own relay);
//! - **the caller's CPU** (share of one core, steady state) and peak memory;
//! - **audio under impairment**: a forwarder of the bench's own between the
//!   relay and both clients drops `--loss` percent of the media packets it
//!   passes toward the clients and delays each by a uniform random 0 to
//!   `--jitter-ms` (this machine's kernel has no netem), against the same
//!   call on a clean path: frames concealed and the share of 200 ms windows
//!   in which the callee hears the right note of the caller's tone.
//!
//! Every process runs with a deadline; every loop is bounded.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::cpu::process_runtime_ns;
use crate::util::{spawn_logged, wait_for_line};

/// Flags of `umbra bench call`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallBenchArgs {
    /// The `umbra` binary to measure [default: this one].
    #[arg(long)]
    pub umbra: Option<String>,
    /// Calls per set-up measurement.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Length of the calls that measure CPU, memory and audio, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Media packets dropped by the impairer, percent.
    #[arg(long, default_value_t = 5.0)]
    pub loss: f64,
    /// Largest extra delay the impairer adds to a media packet (uniform).
    #[arg(long, default_value_t = 50)]
    pub jitter_ms: u64,
}

/// Milliseconds: median, 90th percentile, worst.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Worst.
    pub max: f64,
}

fn spread(mut v: Vec<f64>) -> Spread {
    if v.is_empty() {
        return Spread::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Spread {
        p50: at(0.5),
        p90: at(0.9),
        max: at(1.0),
    }
}

/// How audio came through one call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audio {
    /// Frames the callee concealed, percent of frames heard.
    pub concealed_percent: f64,
    /// 200 ms windows of the callee's recording whose dominant frequency is
    /// the note the caller was sending, percent.
    pub notes_heard_percent: f64,
    /// Interarrival jitter the callee measured, ms.
    pub jitter_ms: f64,
}

/// `umbra bench call`'s findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallBenchReport {
    /// Start of `umbra call` to the callee's audio playing, relayed.
    pub time_to_audio_relayed_ms: Spread,
    /// The same when neither side protects its IP (it starts relayed too).
    pub time_to_audio_default_ms: Spread,
    /// Start of `umbra call` to the direct path in use.
    pub time_to_direct_ms: Spread,
    /// Median RTT reported by calls going direct.
    pub rtt_direct_ms: f64,
    /// Through one relay.
    pub rtt_one_relay_ms: f64,
    /// Through two relays (one per side).
    pub rtt_two_relays_ms: f64,
    /// The caller's CPU in a steady call, percent of one core.
    pub caller_cpu_percent: f64,
    /// The caller's peak resident memory, MiB (VmRSS, including the pages
    /// of the binary's code it touched, which are file-backed and shared).
    pub caller_peak_rss_mib: f64,
    /// The caller's peak private memory, MiB (RssAnon: heap, stacks).
    pub caller_peak_private_mib: f64,
    /// Clean path.
    pub clean: Audio,
    /// Through the impairer.
    pub impaired: Audio,
    /// The impairer's settings.
    pub impairment: String,
}

impl fmt::Display for CallBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |x: &Spread| {
            format!(
                "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
                x.p50, x.p90, x.max
            )
        };
        writeln!(f, "umbra bench call (loopback, real binary)")?;
        writeln!(
            f,
            "  time to audio, relayed:      {}",
            s(&self.time_to_audio_relayed_ms)
        )?;
        writeln!(
            f,
            "  time to audio, default:      {}",
            s(&self.time_to_audio_default_ms)
        )?;
        writeln!(
            f,
            "  time to the direct path:     {}",
            s(&self.time_to_direct_ms)
        )?;
        writeln!(
            f,
            "  RTT direct / one relay / two relays: {:.1} / {:.1} / {:.1} ms",
            self.rtt_direct_ms, self.rtt_one_relay_ms, self.rtt_two_relays_ms
        )?;
        writeln!(
            f,
            "  caller: {:.1}% of one core, peak RSS {:.1} MiB ({:.1} MiB private)",
            self.caller_cpu_percent, self.caller_peak_rss_mib, self.caller_peak_private_mib
        )?;
        for (name, a) in [
            ("clean", &self.clean),
            (self.impairment.as_str(), &self.impaired),
        ] {
            writeln!(
                f,
                "  audio, {name}: {:.1}% concealed, right note in {:.1}% of windows, jitter {:.1} ms",
                a.concealed_percent, a.notes_heard_percent, a.jitter_ms
            )?;
        }
        Ok(())
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

struct Deployment {
    _procs: Vec<Proc>,
    invite: String,
}

/// A free UDP+TCP port on `ip` (the relay binds both).
fn free_port(ip: &str) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind(format!("{ip}:0"))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(format!("{ip}:{port}")).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {ip}")
}

impl Deployment {
    /// `umbra server` and `relays` relays on 127.0.0.1, 127.0.0.2, ...; with
    /// `impair`, the server hands out the impairer's address for relay 1.
    async fn start(
        bin: &str,
        dir: &Path,
        relays: usize,
        impair: Option<(f64, u64)>,
    ) -> anyhow::Result<Deployment> {
        let secret = dir.join("turn.secret");
        std::fs::write(&secret, "bench-call-shared-secret-0123456789")?;
        let mut procs = Vec::new();
        let mut urls = Vec::new();
        let ips: Vec<String> = (1..=relays).map(|i| format!("127.0.0.{i}")).collect();
        for (i, ip) in ips.iter().enumerate() {
            let port = free_port(ip)?;
            let mut args: Vec<String> = [
                "relay",
                "--udp-listen",
                &format!("{ip}:{port}"),
                "--tls-listen",
                &format!("{ip}:0"),
                "--metrics-listen",
                "127.0.0.1:0",
                // One-to-one calls only: no group call unit.
                "--no-unit",
                "--auth-secret-file",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(secret.display().to_string());
            for other in ips.iter().filter(|o| *o != ip) {
                args.push("--allow-peer".into());
                args.push(format!("{other}/32"));
            }
            let log = dir.join(format!("relay{i}.log"));
            procs.push(Proc(spawn_logged(bin, &args, &log, None)?));
            wait_for_line(&log, "udp ", Duration::from_secs(20)).await?;
            let relay: SocketAddr = format!("{ip}:{port}").parse()?;
            let advertised = match (i, impair) {
                (0, Some((loss, jitter))) => impairer(relay, loss, jitter).await?,
                _ => relay,
            };
            urls.push(format!("turn:{advertised}?transport=udp"));
        }
        let mut args: Vec<String> = [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.join("server").display().to_string());
        args.push("--relay-secret-file".into());
        args.push(secret.display().to_string());
        for u in urls {
            args.push("--relay-url".into());
            args.push(u);
        }
        let log = dir.join("server.log");
        procs.push(Proc(spawn_logged(bin, &args, &log, None)?));
        let line = wait_for_line(&log, "invite=umbra://", Duration::from_secs(20)).await?;
        let invite = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("invite="))
            .context("no invite")?
            .to_string();
        Ok(Deployment {
            _procs: procs,
            invite,
        })
    }
}

/// A UDP forwarder in front of `relay`: one upstream socket per client (as
/// a NAT would); media (ChannelData) toward the clients is dropped with
/// probability `loss` percent and delayed by a uniform 0..`jitter_ms`.
async fn impairer(relay: SocketAddr, loss: f64, jitter_ms: u64) -> anyhow::Result<SocketAddr> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = front.local_addr()?;
    let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        // Bounded: the bench's processes end, and this task with the runtime.
        while let Ok((n, client)) = front.recv_from(&mut buf).await {
            let up = {
                let mut map = upstreams.lock().await;
                if let Some(u) = map.get(&client) {
                    u.clone()
                } else {
                    let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let u = Arc::new(u);
                    map.insert(client, u.clone());
                    let (u2, front2) = (u.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut b = vec![0u8; 2048];
                        while let Ok((n, _)) = u2.recv_from(&mut b).await {
                            let data = b[..n].to_vec();
                            let media = data.first().is_some_and(|x| (0x40..0x80).contains(x));
                            if !media {
                                let _ = front2.send_to(&data, client).await;
                                continue;
                            }
                            let (drop, delay) = {
                                let mut rng = rand::thread_rng();
                                (
                                    rng.gen_bool((loss / 100.0).clamp(0.0, 1.0)),
                                    rng.gen_range(0..=jitter_ms),
                                )
                            };
                            if drop {
                                continue;
                            }
                            let f = front2.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                                let _ = f.send_to(&data, client).await;
                            });
                        }
                    });
                    u
                }
            };
            let _ = up.send_to(&buf[..n], relay).await;
        }
    });
    Ok(addr)
}

/// One JSON event line and when it arrived.
struct Line {
    at: Duration,
    event: serde_json::Value,
}

/// What one call showed.
struct CallRun {
    caller: Vec<Line>,
    callee: Vec<serde_json::Value>,
    heard: PathBuf,
    cpu_percent: f64,
    peak_rss_mib: f64,
    peak_private_mib: f64,
}

/// RssAnon of a process, KiB (0 if gone).
fn private_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

struct Users {
    bin: String,
    alice: PathBuf,
    bob: PathBuf,
}

impl Users {
    async fn run(&self, profile: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&self.bin)
                .arg("--profile")
                .arg(profile)
                .args(args)
                .env_remove("UMBRA_PROFILE")
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .context("umbra did not finish")??;
        if !out.status.success() {
            bail!(
                "umbra {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn register(bin: &str, dir: &Path, invite: &str) -> anyhow::Result<Users> {
        let u = Users {
            bin: bin.to_string(),
            alice: dir.join("alice"),
            bob: dir.join("bob"),
        };
        u.run(
            &u.alice,
            &["register", "--no-passphrase", "--invite", invite, "alice"],
        )
        .await?;
        u.run(
            &u.bob,
            &["register", "--no-passphrase", "--invite", invite, "bob"],
        )
        .await?;
        u.run(&u.bob, &["send", "alice", "call me"]).await?;
        u.run(&u.alice, &["sync"]).await?;
        Ok(u)
    }

    async fn protect(&self, on: bool) -> anyhow::Result<()> {
        self.run(
            &self.bob,
            &["settings", "protect-ip", if on { "on" } else { "off" }],
        )
        .await
        .map(|_| ())
    }

    /// One call of `secs` seconds, Alice sending the standard tone to Bob.
    async fn call(&self, dir: &Path, tag: &str, secs: u64) -> anyhow::Result<CallRun> {
        let heard = dir.join(format!("{tag}-bob.wav"));
        let bob_log = dir.join(format!("{tag}-bob.log"));
        let f = std::fs::File::create(&bob_log)?;
        let mut bob = Proc(
            Command::new(&self.bin)
                .arg("--profile")
                .arg(&self.bob)
                .args([
                    "--json",
                    "listen",
                    "--auto-answer",
                    "--audio-in",
                    "silence",
                    "--audio-out",
                ])
                .arg(&heard)
                .env_remove("UMBRA_PROFILE")
                .stdin(Stdio::null())
                .stdout(f.try_clone()?)
                .stderr(f)
                .kill_on_drop(true)
                .spawn()?,
        );
        // `listen --json` prints nothing until something happens: give it
        // time to log in.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let start = Instant::now();
        let mut alice = Command::new(&self.bin)
            .arg("--profile")
            .arg(&self.alice)
            .args(["--json", "call", "bob", "--audio-in", "tone", "--duration"])
            .arg(secs.to_string())
            .env_remove("UMBRA_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = alice.id().unwrap_or(0);
        let mut lines = BufReader::new(alice.stdout.take().context("stdout")?).lines();
        let mut caller = Vec::new();
        let mut cpu_from: Option<(Instant, u64)> = None;
        let mut cpu_to: Option<(Instant, u64)> = None;
        let mut peak_kib = 0u64;
        let mut peak_private_kib = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs + 60);
        let mut sample = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                l = lines.next_line() => {
                    let Ok(Some(l)) = l else { break };
                    if let Ok(event) = serde_json::from_str::<serde_json::Value>(&l) {
                        caller.push(Line { at: start.elapsed(), event });
                    }
                }
                _ = sample.tick() => {
                    if let Ok(kib) = crate::memory::rss_kib(pid) {
                        peak_kib = peak_kib.max(kib);
                    }
                    peak_private_kib = peak_private_kib.max(private_kib(pid));
                    let hearing = caller.iter().find(|l| l.event["call"] == "hearing").map(|l| l.at);
                    if let Some(h) = hearing && start.elapsed() > h + Duration::from_secs(1) {
                        let now = (Instant::now(), process_runtime_ns(pid));
                        if cpu_from.is_none() {
                            cpu_from = Some(now);
                        } else if now.1 > 0 {
                            cpu_to = Some(now);
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => bail!("the call did not end in time"),
            }
        }
        let _ = alice.wait().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = bob.0.start_kill();
        let _ = bob.0.wait().await;
        let cpu_percent = match (cpu_from, cpu_to) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1.saturating_sub(c0)) as f64 / 1e9 / (t1 - t0).as_secs_f64() * 100.0
            }
            _ => 0.0,
        };
        let callee = std::fs::read_to_string(&bob_log)?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(CallRun {
            caller,
            callee,
            heard,
            cpu_percent,
            peak_rss_mib: peak_kib as f64 / 1024.0,
            peak_private_mib: peak_private_kib as f64 / 1024.0,
        })
    }
}

impl CallRun {
    fn first(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Option<f64> {
        self.caller
            .iter()
            .find(|l| pred(&l.event))
            .map(|l| l.at.as_secs_f64() * 1000.0)
    }

    fn answered(&self) -> anyhow::Result<()> {
        let end = self
            .caller
            .iter()
            .rev()
            .find(|l| l.event["call"] == "ended");
        match end {
            Some(l) if l.event["outcome"] == "answered" => Ok(()),
            other => bail!("the call did not go through: {:?}", other.map(|l| &l.event)),
        }
    }

    fn median_rtt(&self, path: &str) -> f64 {
        let v: Vec<f64> = self
            .caller
            .iter()
            .filter(|l| l.event["call"] == "quality" && l.event["path"] == path)
            .filter_map(|l| l.event["rtt_ms"].as_f64())
            .collect();
        spread(v).p50
    }

    fn audio(&self) -> Audio {
        let q = self.callee.iter().rev().find(|e| e["call"] == "quality");
        let samples = read_wav(&self.heard);
        // Alice's tone is 400 ms notes: judged in 200 ms windows.
        let notes = umbra_call::audio::STANDARD_TONES.map(|(f, _)| f);
        let (right, windows) = umbra_call::analysis::windows_on_notes(&samples, &notes, 15.0);
        Audio {
            concealed_percent: q
                .and_then(|q| q["loss_in_permille"].as_f64())
                .unwrap_or(0.0)
                / 10.0,
            notes_heard_percent: if windows == 0 {
                0.0
            } else {
                right as f64 * 100.0 / windows as f64
            },
            jitter_ms: q.and_then(|q| q["jitter_ms"].as_f64()).unwrap_or(0.0),
        }
    }
}

fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .get(44..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Runs the whole bench.
pub async fn run(args: &CallBenchArgs) -> anyhow::Result<CallBenchReport> {
    let bin = match &args.umbra {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let dir = tempfile_dir()?;
    let mut report = CallBenchReport {
        impairment: format!("{}% loss, 0-{} ms jitter", args.loss, args.jitter_ms),
        ..CallBenchReport::default()
    };
    let rounds = args.rounds.max(1);

    crate::note!(
        "one relay: {rounds} relayed calls, {rounds} default calls, one {} s call",
        args.seconds
    );
    let d1 = dir.join("one");
    std::fs::create_dir_all(&d1)?;
    let dep = Deployment::start(&bin, &d1, 1, None).await?;
    let users = Users::register(&bin, &d1, &dep.invite).await?;
    let (mut relayed, mut default, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let mut rtt_direct = Vec::new();
    let mut rtt_one = Vec::new();
    users.protect(true).await?;
    for i in 0..rounds {
        let run = users.call(&d1, &format!("relayed{i}"), 3).await?;
        run.answered()?;
        relayed.extend(run.first(|e| e["call"] == "hearing"));
        rtt_one.push(run.median_rtt("relayed"));
        crate::note!("  relayed call {}/{rounds}", i + 1);
    }
    let long = users.call(&d1, "clean", args.seconds).await?;
    long.answered()?;
    report.clean = long.audio();
    report.caller_cpu_percent = long.cpu_percent;
    report.caller_peak_rss_mib = long.peak_rss_mib;
    report.caller_peak_private_mib = long.peak_private_mib;
    users.protect(false).await?;
    for i in 0..rounds {
        let run = users.call(&d1, &format!("default{i}"), 4).await?;
        run.answered()?;
        default.extend(run.first(|e| e["call"] == "hearing"));
        direct.extend(run.first(|e| e["call"] == "connected" && e["path"] == "direct"));
        rtt_direct.push(run.median_rtt("direct"));
        crate::note!("  default call {}/{rounds}", i + 1);
    }
    drop(dep);
    report.time_to_audio_relayed_ms = spread(relayed);
    report.time_to_audio_default_ms = spread(default);
    report.time_to_direct_ms = spread(direct);
    report.rtt_one_relay_ms = spread(rtt_one).p50;
    report.rtt_direct_ms = spread(rtt_direct).p50;

    crate::note!("two relays: {rounds} relayed calls");
    let d2 = dir.join("two");
    std::fs::create_dir_all(&d2)?;
    let dep = Deployment::start(&bin, &d2, 2, None).await?;
    let users = Users::register(&bin, &d2, &dep.invite).await?;
    users.protect(true).await?;
    let mut rtt_two = Vec::new();
    for i in 0..rounds {
        let run = users.call(&d2, &format!("two{i}"), 3).await?;
        run.answered()?;
        rtt_two.push(run.median_rtt("relayed"));
    }
    drop(dep);
    report.rtt_two_relays_ms = spread(rtt_two).p50;

    crate::note!("impaired: one {} s call through the impairer", args.seconds);
    let d3 = dir.join("impaired");
    std::fs::create_dir_all(&d3)?;
    let dep = Deployment::start(&bin, &d3, 1, Some((args.loss, args.jitter_ms))).await?;
    let users = Users::register(&bin, &d3, &dep.invite).await?;
    users.protect(true).await?;
    let run = users.call(&d3, "impaired", args.seconds).await?;
    run.answered()?;
    report.impaired = run.audio();
    drop(dep);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("umbra-bench-call-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
