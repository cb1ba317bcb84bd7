//! Janus's side of `umbra bench sfu --janus`: rooms of its VideoRoom, and
//! members that join them as a browser would (a publishing peer connection
//! sending the same stamped 80-byte frames every 20 ms as Umbra's members,
//! and a subscribing one receiving every other member's feed), timed by
//! the same listener; and the network namespace the whole bench moves
//! into, because Janus gathers no candidates on loopback.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::janus::{Api, Session};
use crate::janus_peer::Peer;
use crate::sfu_bench::{FRAME_EVERY, Heard, SETUP_WITHIN, SfuBenchReport};
use crate::sfu_bench::{Stamper, StepClock, is_media};

/// The namespace's interface Janus gathers its candidates on.
pub(crate) const IFACE: &str = "ubj0";
/// Janus's address, on [`IFACE`].
pub(crate) const JANUS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 98, 0, 1));
/// The members' address, on the other end of the pair.
pub(crate) const MEMBER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 98, 0, 2));
/// Set in the bench's own run inside the namespace.
const INSIDE: &str = "UMBRA_BENCH_SFU_INSIDE";
/// Where the run inside leaves its report.
const REPORT: &str = "UMBRA_BENCH_SFU_REPORT";
/// How long Janus may take to answer a member's request.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A room of the VideoRoom, and the feeds published in it so far.
pub(crate) struct Room {
    id: u64,
    size: usize,
    feeds: Arc<watch::Sender<Vec<u64>>>,
}

/// What a member needs of its room.
pub(crate) struct Seat {
    room: u64,
    size: usize,
    feeds: Arc<watch::Sender<Vec<u64>>>,
}

impl Room {
    /// Creates a room for `size` publishers, audio in Opus.
    pub async fn create(api: &Api, size: usize) -> anyhow::Result<Self> {
        let session = api.session().await?;
        let handle = session.attach().await?;
        let id = rand::random::<u64>() >> 12;
        let answer = session
            .message(
                handle,
                json!({
                    "request": "create",
                    "room": id,
                    "publishers": size,
                    "audiocodec": "opus",
                    "is_private": true,
                    "notify_joining": false,
                }),
                None,
            )
            .await?;
        if answer["plugindata"]["data"]["videoroom"] != "created" {
            bail!("janus did not create the room: {answer}");
        }
        session.destroy().await;
        Ok(Self {
            id,
            size,
            feeds: Arc::new(watch::channel(Vec::new()).0),
        })
    }

    /// A member's seat.
    pub fn seat(&self) -> Seat {
        Seat {
            room: self.id,
            size: self.size,
            feeds: self.feeds.clone(),
        }
    }
}

/// One turn of `peer`'s packets and timers; what `until` gave, if it was
/// ready first.
async fn turn<F: Future>(peer: &mut Peer, buf: &mut [u8], until: Pin<&mut F>) -> Option<F::Output> {
    peer.flush().await;
    let wake = tokio::time::Instant::from_std(peer.timeout);
    tokio::select! {
        t = until => Some(t),
        r = peer.socket.recv_from(buf) => {
            if let Ok((n, from)) = r {
                peer.input(Instant::now(), from, &buf[..n]);
            }
            None
        }
        () = tokio::time::sleep_until(wake) => {
            peer.tick(Instant::now());
            None
        }
    }
}

/// Drives `peer` until `until` is ready.
async fn drive_until<T>(peer: &mut Peer, until: impl Future<Output = T>) -> T {
    tokio::pin!(until);
    let mut buf = vec![0u8; 2048];
    loop {
        if let Some(t) = turn(peer, &mut buf, until.as_mut()).await {
            return t;
        }
    }
}

/// Drives `peer` until ICE and DTLS are up.
async fn connect(peer: &mut Peer, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    let mut buf = vec![0u8; 2048];
    while !peer.connected {
        if turn(peer, &mut buf, deadline.as_mut()).await.is_some() {
            bail!(
                "a peer connection to janus did not come up within {} s",
                within.as_secs()
            );
        }
    }
    Ok(())
}

fn sdp_of(event: &Value) -> anyhow::Result<&str> {
    event["jsep"]["sdp"].as_str().context("janus sent no SDP")
}

/// One member of a Janus room: publishes, subscribes to every other
/// member's feed, then sends a stamped frame every 20 ms until the window
/// ends; a listener also times what it receives.
pub(crate) async fn member(
    api: Api,
    ip: IpAddr,
    seat: Seat,
    id: u16,
    listen: bool,
    mut clock: StepClock,
) -> anyhow::Result<Option<Heard>> {
    let mut session = api.session().await?;
    let published = publish(&mut session, ip, &seat, id).await;
    let (mut publisher, feed) = match published {
        Ok(p) => p,
        Err(e) => {
            session.destroy().await;
            return Err(e);
        }
    };
    let subscribed = subscribe(&mut session, &mut publisher, ip, &seat, feed).await;
    let mut subscriber = match subscribed {
        Ok(s) => s,
        Err(e) => {
            session.destroy().await;
            return Err(e);
        }
    };
    let mut stamper = Stamper::new(clock.epoch, id);
    let mut heard = Heard::new()?;
    let mut tick = tokio::time::interval(FRAME_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut is_up = false;
    let (mut b1, mut b2) = (vec![0u8; 2048], vec![0u8; 2048]);
    loop {
        if clock.state(Instant::now()).0 {
            break;
        }
        publisher.flush().await;
        subscriber.flush().await;
        let wake = tokio::time::Instant::from_std(publisher.timeout.min(subscriber.timeout));
        tokio::select! {
            r = publisher.socket.recv_from(&mut b1) => {
                if let Ok((n, from)) = r {
                    publisher.input(Instant::now(), from, &b1[..n]);
                }
            }
            r = subscriber.socket.recv_from(&mut b2) => {
                if let Ok((n, from)) = r
                    && (listen || !is_media(&b2[..n]))
                {
                    subscriber.input(Instant::now(), from, &b2[..n]);
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if publisher.timeout <= now {
                    publisher.tick(now);
                }
                if subscriber.timeout <= now {
                    subscriber.tick(now);
                }
            }
            _ = tick.tick(), if is_up => publisher.send_frame(Instant::now(), stamper.frame()),
            changed = clock.window.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        let measuring = clock.state(Instant::now()).1;
        for f in subscriber.frames.drain(..) {
            if listen && measuring {
                heard.record(&f, clock.epoch);
            }
        }
        if !is_up && publisher.connected && subscriber.connected {
            is_up = true;
            clock.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
    publisher.close().await;
    subscriber.close().await;
    session.destroy().await;
    Ok(listen.then_some(heard))
}

/// Joins the room as a publisher with an audio offer; returns the
/// publishing connection and the member's feed id.
async fn publish(
    session: &mut Session,
    ip: IpAddr,
    seat: &Seat,
    id: u16,
) -> anyhow::Result<(Peer, u64)> {
    let handle = session.attach().await?;
    let mut publisher = Peer::new(ip)?;
    let offer = publisher.offer_audio()?;
    session
        .message(
            handle,
            json!({
                "request": "joinandconfigure",
                "room": seat.room,
                "ptype": "publisher",
                "display": format!("m{id}"),
                "audio": true,
                "video": false,
            }),
            Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
        )
        .await?;
    let joined = session
        .event(handle, ANSWER_WITHIN, |e| e["jsep"]["type"] == "answer")
        .await?;
    let feed = joined["plugindata"]["data"]["id"]
        .as_u64()
        .context("janus gave the publisher no feed id")?;
    publisher.accept_answer(sdp_of(&joined)?)?;
    // Janus lets nobody subscribe to a feed before its media is up.
    connect(&mut publisher, ANSWER_WITHIN).await?;
    seat.feeds.send_modify(|f| f.push(feed));
    Ok((publisher, feed))
}

/// Once every member of the room has published, subscribes to all feeds
/// but `own` (keeping `publisher` connected meanwhile).
async fn subscribe(
    session: &mut Session,
    publisher: &mut Peer,
    ip: IpAddr,
    seat: &Seat,
    own: u64,
) -> anyhow::Result<Peer> {
    let mut feeds = seat.feeds.subscribe();
    let all = drive_until(
        publisher,
        tokio::time::timeout(SETUP_WITHIN, feeds.wait_for(|f| f.len() >= seat.size)),
    )
    .await
    .context("not every member of the room published in time")?
    .context("the room went away")?
    .clone();
    let streams: Vec<Value> = all
        .iter()
        .filter(|&&f| f != own)
        .map(|f| json!({"feed": f}))
        .collect();
    let handle = session.attach().await?;
    // Janus takes a feed a moment after its media is up: until then a
    // subscription is refused with "No such feed".
    let mut tries = 0;
    let attached = loop {
        tries += 1;
        let asked = session
            .message(
                handle,
                json!({
                    "request": "join",
                    "room": seat.room,
                    "ptype": "subscriber",
                    "streams": streams,
                }),
                None,
            )
            .await;
        let offered = match asked {
            Ok(_) => {
                drive_until(
                    publisher,
                    session.event(handle, ANSWER_WITHIN, |e| e["jsep"]["type"] == "offer"),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match offered {
            Ok(o) => break o,
            Err(e) if tries < 50 && e.to_string().contains("No such feed") => {
                session.forget(handle);
                drive_until(publisher, tokio::time::sleep(Duration::from_millis(100))).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut subscriber = Peer::new(ip)?;
    let answer = subscriber.accept_offer(sdp_of(&attached)?)?;
    session
        .message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
    Ok(subscriber)
}

/// Where this run of the bench stands toward the namespace.
pub(crate) enum Namespace {
    /// This run made the namespace, ran the bench inside it, and has its
    /// report.
    Outside(Box<SfuBenchReport>),
    /// This is the run inside.
    Inside,
}

/// A network namespace, deleted when dropped.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The run inside the namespace, asked to stop (SIGTERM, as Ctrl-C would)
/// if the run outside is stopped first, so that it stops Janus and the
/// relay it started before the namespace goes.
struct StopOnDrop(tokio::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed (--janus needs root): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// With `--janus`: unless this is already the run inside, makes a network
/// namespace with a veth pair (Janus on one end, the members on the
/// other), runs this same command inside it and returns its report.
pub(crate) async fn in_namespace() -> anyhow::Result<Namespace> {
    if std::env::var_os(INSIDE).is_some() {
        return Ok(Namespace::Inside);
    }
    let name = format!("umbra-bench-{}", std::process::id());
    ip(&["netns", "add", &name])?;
    let _ns = NetNs(name.clone());
    let (j, m) = (format!("{JANUS_IP}/24"), format!("{MEMBER_IP}/24"));
    for args in [
        &["-n", &name, "link", "set", "lo", "up"][..],
        &[
            "-n", &name, "link", "add", IFACE, "type", "veth", "peer", "name", "ubj1",
        ],
        &["-n", &name, "addr", "add", &j, "dev", IFACE],
        &["-n", &name, "addr", "add", &m, "dev", "ubj1"],
        &["-n", &name, "link", "set", IFACE, "up"],
        &["-n", &name, "link", "set", "ubj1", "up"],
    ] {
        ip(args)?;
    }
    // Janus sends out of its interface; what reaches the other end comes
    // from an address of this same namespace, which the kernel drops as
    // martian unless told otherwise.
    for conf in ["all", "default", IFACE, "ubj1"] {
        for (key, value) in [("accept_local", "1"), ("rp_filter", "0")] {
            ip(&[
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.{key}={value}"),
            ])?;
        }
    }
    let report: PathBuf = std::env::temp_dir().join(format!("{name}.json"));
    let inside = tokio::process::Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .env(REPORT, &report)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("running the bench inside its namespace")?;
    let mut inside = StopOnDrop(inside);
    let status = inside.0.wait().await?;
    let text = std::fs::read_to_string(&report);
    let _ = std::fs::remove_file(&report);
    if !status.success() {
        bail!("the bench inside its network namespace failed ({status})");
    }
    let report: SfuBenchReport =
        serde_json::from_str(&text.context("the bench inside left no report")?)?;
    Ok(Namespace::Outside(Box::new(report)))
}

/// The run inside the namespace leaves its report for the run outside.
pub(crate) fn hand_out(report: &SfuBenchReport) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(REPORT) {
        std::fs::write(path, serde_json::to_vec(report)?)?;
    }
    Ok(())
}
