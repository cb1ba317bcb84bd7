//! Group calls through the forwarding unit as `umbra relay` runs it: the
//! relay daemon (in process) with its unit on real loopback sockets;
//! members that join over the unit's Noise control channel
//! (`umbra-client`) and talk through `umbra-call`'s group driver (str0m
//! ICE/DTLS-SRTP, SFrame). Checked as a member, a stranger and the
//! operator would look: what each member heard and where its packets went;
//! what a flooding member gets and what the others keep; what a member is
//! told when the unit stops; what bad control input gets; and that the
//! unit's metrics hold counts only.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use umbra_call::audio::{Sink, Tone};
use umbra_call::codec::Pcm;
use umbra_call::e2ee::{Epoch, EpochSecret, FrameKeys};
use umbra_call::group_driver::{self, GroupCommand, GroupMedia, GroupSummary};
use umbra_call::{CallError, Engine};
use umbra_client::calls::group_keys::{CallGroup, JoinRequest};
use umbra_client::calls::unit::{self, UnitEnd};
use umbra_crypto::Identity;
use umbra_crypto::mls::Member;
use umbra_relay::{Relay, RelayConfig};
use umbra_wire::invite::UnitLink;
use umbra_wire::proto::RelayCredentials;

#[path = "../../umbra-call/tests/support/exporter.rs"]
mod exporter;
#[path = "../../umbra-call/tests/support/tones.rs"]
mod tones;
use exporter::Exporter;
use tones::{ABSENT, HEARD, TONES, assert_hears_all_but, presence};

const SECRET: &str = "group-call-secret-shared-with-the-server";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the messaging server hands a logged-in member (it holds the same
/// secret).
fn credentials(token: &str) -> RelayCredentials {
    let (username, password) =
        umbra_turn::credentials::rest::credentials(SECRET.as_bytes(), unix_now() + 600, token);
    RelayCredentials {
        username,
        password,
        ttl_secs: 600,
        urls: Vec::new(),
        unit: String::new(),
    }
}

struct Running {
    link: UnitLink,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_relay(room_size: usize) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let config = RelayConfig {
        udp_listen: any,
        tls_listen: Some(any),
        metrics_listen: any,
        unit_listen: Some(any),
        unit_room_size: room_size,
        auth_secret: Some(SECRET.into()),
        workers: Some(1),
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await.expect("relay binds");
    let link = relay.unit_link("127.0.0.1").expect("the unit runs");
    let metrics = relay.metrics_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    Running {
        link,
        metrics,
        stop: Some(stop),
        task,
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits (up to 5 s) until the unit holds `n` members: a leave is a
/// closed connection, which the unit sees a moment later.
async fn wait_members(metrics: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&scrape(metrics).await, "umbra_unit_members") != n {
        assert!(Instant::now() < deadline, "the unit never held {n} members");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sink the test reads after the call.
#[derive(Clone, Default)]
struct Tape(Arc<Mutex<Vec<i16>>>);

impl Sink for Tape {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.0.lock().expect("tape").extend_from_slice(frame);
        Ok(())
    }
}

fn keys(index: u32, members: &[u32], secret: [u8; 32]) -> FrameKeys {
    FrameKeys::new(&Epoch {
        number: 1,
        own_index: index,
        members,
        exporter: &Exporter(secret),
    })
    .expect("keys")
}

struct Heard {
    summary: GroupSummary,
    tape: Vec<i16>,
    end: UnitEnd,
}

/// How a member keys its frames: its first keys, and the new epochs it is
/// handed during the call (and when).
struct Keys {
    first: FrameKeys,
    later: Vec<(Instant, EpochSecret)>,
}

/// Keys from the stand-in exporter, one epoch for the whole call.
fn fixed(index: u32, members: &[u32]) -> Keys {
    Keys {
        first: keys(index, members, [7; 32]),
        later: Vec::new(),
    }
}

/// One member: joins `room` over the control channel, talks `tone` for
/// `talk` (or until the unit ends the call), and leaves.
async fn member(
    link: UnitLink,
    room: [u8; 16],
    token: String,
    keys: Keys,
    tone: f32,
    talk: Duration,
) -> Heard {
    let media_addr: SocketAddr = format!("127.0.0.1:{}", link.0.port).parse().expect("addr");
    let prepared = group_driver::prepare(media_addr).expect("prepare");
    let creds = credentials(&token);
    let mut session = unit::join(&link, &creds, room, &prepared.offer)
        .await
        .expect("joined");
    let tape = Tape::default();
    let call = prepared
        .start(
            &session.answer,
            keys.first,
            GroupMedia {
                source: Box::new(Tone::repeating(&[(tone, 10.0)])),
                sink: Box::new(tape.clone()),
                duration: Some(talk),
            },
        )
        .expect("start");
    let commands = call.commands.clone();
    let rekeys = tokio::spawn(async move {
        for (at, secret) in keys.later {
            tokio::time::sleep_until(at.into()).await;
            let _ = commands.send(GroupCommand::Rekey(secret)).await;
        }
    });
    let end = tokio::select! {
        e = session.ended() => { call.hang_up(); e }
        _ = tokio::time::sleep(talk + Duration::from_secs(3)) => UnitEnd::Closed,
    };
    rekeys.abort();
    let summary = call.finish().await.expect("call ends");
    session.leave().await;
    let tape = tape.0.lock().expect("tape").clone();
    Heard { summary, tape, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_join_over_the_control_channel_and_hear_each_other() {
    let mut relay = start_relay(64).await;
    let room: [u8; 16] = rand::random();
    let members: Vec<u32> = (0..4).collect();
    let tasks: Vec<_> = TONES
        .iter()
        .enumerate()
        .map(|(i, &tone)| {
            tokio::spawn(member(
                relay.link.clone(),
                room,
                format!("member-{i}"),
                fixed(i as u32, &members),
                tone,
                Duration::from_secs(5),
            ))
        })
        .collect();
    let mut heard = Vec::new();
    for t in tasks {
        heard.push(t.await.expect("member"));
    }
    let unit: SocketAddr = format!("127.0.0.1:{}", relay.link.0.port)
        .parse()
        .expect("addr");
    for (i, h) in heard.iter().enumerate() {
        let s = &h.summary;
        assert!(s.error.is_none(), "member {i}: {:?}", s.error);
        assert_eq!(
            s.sent_to,
            BTreeSet::from([unit]),
            "member {i} sent elsewhere"
        );
        assert_eq!(
            s.heard_from,
            BTreeSet::from([unit]),
            "member {i} heard others"
        );
        let others: Vec<u32> = s.speakers.iter().map(|x| x.member).collect();
        let expected: Vec<u32> = (0..4).filter(|&m| m != i as u32).collect();
        assert_eq!(others, expected, "member {i}");
        for sp in &s.speakers {
            assert!(
                sp.loss < 0.01,
                "member {i} lost {:.3} of {}",
                sp.loss,
                sp.member
            );
        }
        assert_hears_all_but(i, &h.tape);
    }
    wait_members(relay.metrics, 0).await;
    let text = scrape(relay.metrics).await;
    assert_eq!(metric(&text, "umbra_unit_joins_total"), 4);
    assert!(metric(&text, "umbra_unit_frames_out_total") > 4 * 3 * 200);
    // Counts only: no address, no port, no room.
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains(&unit.port().to_string()), "{text}");
    assert!(!text.contains(&hex::encode(room)), "{text}");
    let _ = relay.stop.take().map(|s| s.send(()));
    relay
        .task
        .await
        .expect("join")
        .expect("relay stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_member_is_cut_to_its_rate_and_the_others_keep_their_audio() {
    let mut relay = start_relay(64).await;
    let room: [u8; 16] = rand::random();
    let link = relay.link.clone();
    let members = [0, 1];
    let a = tokio::spawn(member(
        link.clone(),
        room,
        "member-0".into(),
        fixed(0, &members),
        440.0,
        Duration::from_secs(4),
    ));
    let b = tokio::spawn(member(
        link.clone(),
        room,
        "member-1".into(),
        fixed(1, &members),
        620.0,
        Duration::from_secs(4),
    ));
    // The flooder: a valid credential and a real DTLS-SRTP connection,
    // sending a frame every millisecond (20 times a talker's rate).
    let unit_addr: SocketAddr = format!("127.0.0.1:{}", link.0.port).parse().expect("addr");
    let (socket, local) = umbra_call::driver::bind_toward(unit_addr).expect("socket");
    let start = Instant::now();
    let mut engine = Engine::toward_unit(unit_addr, local, start).expect("engine");
    let offer = engine.create_offer(start).expect("offer");
    let session = unit::join(&link, &credentials("flooder"), room, &offer)
        .await
        .expect("joined");
    engine
        .accept_answer(Instant::now(), &session.answer)
        .expect("answer");
    let mut flood = keys(1, &[0, 1], [9; 32]);
    let mut buf = vec![0u8; 2048];
    let mut sent = 0u32;
    let end = Instant::now() + Duration::from_secs(4);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                if engine.is_connected() {
                    engine.send_frame(Instant::now(), flood.seal(&[0u8; 80]).expect("seal"));
                    sent += 1;
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.expect("recv");
                engine.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            _ = tokio::time::sleep_until(engine.poll_timeout().into()) => engine.handle_timeout(Instant::now()),
        }
        while engine.poll_frame().is_some() {}
        while engine.poll_event().is_some() {}
        while let Some(d) = engine.poll_transmit() {
            let _ = socket.send_to(&d.data, d.to).await;
        }
    }
    // On a loaded machine the unit (a debug build) may still be working
    // through the flood's backlog: judge it once its counters stand still.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = scrape(relay.metrics).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = scrape(relay.metrics).await;
        let still = metric(&again, "umbra_unit_frames_in_total")
            == metric(&text, "umbra_unit_frames_in_total");
        text = again;
        if still || Instant::now() > deadline {
            break;
        }
    }
    session.leave().await;
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    assert!(sent > 1_500, "the flood sent {sent}");
    let limited = text
        .lines()
        .find_map(|l| l.strip_prefix("umbra_unit_dropped_total{reason=\"rate_limited\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("rate_limited counter");
    // What reached the unit: the two talkers' frames (50 a second each,
    // for at most 5 s) and whatever of the flood the kernel did not drop
    // (on a loaded machine, much of it). What the unit let through must
    // fit the talkers plus one member's rate and burst over the flood's
    // 4 s (and 1 s of slack), whatever share of the flood arrived; and
    // enough of it arrived above that rate to be cut.
    let frames_in = metric(&text, "umbra_unit_frames_in_total");
    let talkers = 2 * 50 * 5;
    let passed = frames_in.saturating_sub(limited);
    let allowed = talkers + (umbra_sfu::FRAME_RATE * 5.0 + umbra_sfu::FRAME_BURST) as u64;
    assert!(
        limited >= 100,
        "the flood was not cut: {limited} of {frames_in} frames ({sent} sent)"
    );
    assert!(
        passed <= allowed,
        "{passed} of {frames_in} frames passed, {limited} cut ({sent} sent)"
    );
    for (h, other, tone) in [(&a, 1, 620.0), (&b, 0, 440.0)] {
        assert_little_loss(h, other);
        assert!(presence(&h.tape, tone) > 0.3, "{}", presence(&h.tape, tone));
    }
    let _ = relay.stop.take().map(|s| s.send(()));
    relay.task.await.expect("join").expect("relay stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_told_when_the_unit_shuts_down() {
    let mut relay = start_relay(64).await;
    let room: [u8; 16] = rand::random();
    let a = tokio::spawn(member(
        relay.link.clone(),
        room,
        "member-0".into(),
        fixed(0, &[0, 1]),
        440.0,
        Duration::from_secs(30),
    ));
    let b = tokio::spawn(member(
        relay.link.clone(),
        room,
        "member-1".into(),
        fixed(1, &[0, 1]),
        620.0,
        Duration::from_secs(30),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let _ = relay.stop.take().map(|s| s.send(()));
    relay.task.await.expect("join").expect("relay stops");
    // Each was told, having heard the other until then.
    for (h, heard) in [(a.await.expect("a"), 620.0), (b.await.expect("b"), 440.0)] {
        assert_eq!(h.end, UnitEnd::ShuttingDown);
        assert!(presence(&h.tape, heard) > HEARD);
    }
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_input_gets_a_clear_refusal_and_costs_nothing() {
    let mut relay = start_relay(2).await;
    let link = relay.link.clone();
    let unit_addr: SocketAddr = format!("127.0.0.1:{}", link.0.port).parse().expect("addr");
    // Garbage instead of a handshake: closed, nothing else.
    let mut s = tokio::net::TcpStream::connect(unit_addr)
        .await
        .expect("connect");
    s.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(got.len() <= 2, "answered garbage with {got:?}");
    // The wrong key pinned: the handshake fails on the member's side.
    let mut wrong = link.clone();
    wrong.0.server_key = [3; 32];
    let offer = || group_driver::prepare(unit_addr).expect("prepare");
    let room: [u8; 16] = rand::random();
    let p = offer();
    assert!(
        unit::join(&wrong, &credentials("w"), room, &p.offer)
            .await
            .is_err()
    );
    // A credential the server never signed.
    let mut forged = credentials("f");
    forged.password = "bm90IHRoZSBwYXNzd29yZA==".into();
    let e = unit::join(&link, &forged, room, &p.offer)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("refused the join"), "{e}");
    // An offer that is not one audio stream.
    let e = unit::join(&link, &credentials("v"), room, "v=0\r\n")
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no audio stream"), "{e}");
    // Someone at another address opens connections and says nothing: it
    // gets a few places in the queue, not everyone's, and a member still
    // joins at once.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind");
        idle.push(sock.connect(unit_addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused_idle = metric(
        &scrape(relay.metrics).await,
        "umbra_unit_control_refused_total",
    );
    assert!(
        refused_idle >= 12,
        "an idle flood took {refused_idle} refusals only"
    );
    // A full room says so; the two inside stay.
    let (p1, p2, p3) = (offer(), offer(), offer());
    let s1 = unit::join(&link, &credentials("one"), room, &p1.offer)
        .await
        .expect("one");
    let s2 = unit::join(&link, &credentials("two"), room, &p2.offer)
        .await
        .expect("two");
    assert_eq!(s2.room_size, 2);
    // The answer names the unit and nothing else: one candidate, its own.
    let candidates: Vec<&str> = s1
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert_eq!(candidates.len(), 1, "{}", s1.answer);
    assert!(
        candidates[0].contains(&format!(" 127.0.0.1 {} typ host", link.0.port)),
        "{}",
        candidates[0]
    );
    assert!(s1.answer.contains("a=ice-lite"), "{}", s1.answer);
    let e = unit::join(&link, &credentials("three"), room, &p3.offer)
        .await
        .err()
        .expect("full");
    assert!(e.to_string().contains("full"), "{e}");
    let text = scrape(relay.metrics).await;
    assert_eq!(metric(&text, "umbra_unit_members"), 2);
    assert!(
        metric(&text, "umbra_unit_joins_refused_total") >= 3,
        "{text}"
    );
    drop(idle);
    s1.leave().await;
    s2.leave().await;
    wait_members(relay.metrics, 0).await;
    let _ = relay.stop.take().map(|s| s.send(()));
    relay.task.await.expect("join").expect("relay stops");
}

/// `h` heard `member` with under 1% of its frames lost end to end.
fn assert_little_loss(h: &Heard, member: u32) {
    let s = h
        .summary
        .speakers
        .iter()
        .find(|s| s.member == member)
        .unwrap_or_else(|| panic!("member {member} never heard"));
    assert!(s.loss < 0.01, "{s:?}");
}

/// `id` asks into the call and `admitter` lets it in; `others` apply the
/// commit (what the call's signalling carries, end to end).
fn admit(
    admitter: &mut CallGroup,
    admitter_id: &Identity,
    id: &Identity,
    others: &mut [&mut CallGroup],
) -> CallGroup {
    let request = JoinRequest::new(id).expect("request");
    let from = Member {
        username: id.username().to_owned(),
        identity_key: id.identity_key(),
        hosting: None,
        certificate: None,
    };
    let commit = admitter
        .admit(admitter_id, &request.key_package, &from)
        .expect("admit");
    for o in others.iter_mut() {
        o.apply(&commit.commit, admitter_id.username())
            .expect("apply");
    }
    request
        .accept(commit.welcome.as_deref().expect("welcome"))
        .expect("welcome accepted")
}

fn frame_keys(secret: &EpochSecret) -> FrameKeys {
    FrameKeys::new(&secret.epoch()).expect("keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_the_calls_group_hears_nothing_after_and_the_rest_go_on() {
    // The call's own MLS group (real openmls): ann starts it, bob and cat
    // are admitted; all three talk through the unit under its epoch.
    let ids: Vec<Identity> = ["ann", "bob", "cat"]
        .iter()
        .map(|n| Identity::generate(n).expect("identity"))
        .collect();
    let mut a = CallGroup::start(&ids[0]).expect("start");
    let mut b = admit(&mut a, &ids[0], &ids[1], &mut []);
    let c = admit(&mut a, &ids[0], &ids[2], &mut [&mut b]);
    let first: Vec<EpochSecret> = [&a, &b, &c]
        .iter()
        .map(|g| g.epoch_secret().expect("secret"))
        .collect();
    // Cat is removed (she is still connected to the unit, still sending,
    // and keeps the keys she had): ann and bob move to the next epoch
    // 2.5 s in.
    let commit = a.remove(&ids[0], "cat").expect("remove");
    b.apply(&commit.commit, "ann").expect("bob applies");
    let at = Instant::now() + Duration::from_millis(2_500);
    let next = [a.epoch_secret().expect("a"), b.epoch_secret().expect("b")];
    let mut relay = start_relay(64).await;
    let room: [u8; 16] = rand::random();
    let talk = Duration::from_secs(6);
    let [next_a, next_b] = next;
    let cast = [
        (first[0].clone(), vec![(at, next_a)], 440.0),
        (first[1].clone(), vec![(at, next_b)], 620.0),
        (first[2].clone(), Vec::new(), 1_010.0),
    ];
    let tasks: Vec<_> = cast
        .into_iter()
        .enumerate()
        .map(|(i, (secret, later, tone))| {
            let keys = Keys {
                first: frame_keys(&secret),
                later,
            };
            tokio::spawn(member(
                relay.link.clone(),
                room,
                format!("member-{i}"),
                keys,
                tone,
                talk,
            ))
        })
        .collect();
    let mut heard = Vec::new();
    for t in tasks {
        heard.push(t.await.expect("member"));
    }
    let [ann, bob, cat] = heard.as_slice() else {
        panic!("three members");
    };
    // Cat, from the change on: nothing of either of them.
    for tone in [440.0, 620.0] {
        let p = presence(&cat.tape, tone);
        assert!(p < ABSENT, "cat still hears {tone} Hz ({p:.4})");
    }
    assert!(
        cat.summary.dropped.total() > 100,
        "{:?}",
        cat.summary.dropped
    );
    // Ann and bob hear each other across the change with nothing lost,
    // and cat's frames (old keys, her key gone at once) not at all.
    for (h, other, tone) in [(ann, 1, 620.0), (bob, 0, 440.0)] {
        assert!(
            presence(&h.tape, tone) > HEARD,
            "{}",
            presence(&h.tape, tone)
        );
        assert!(
            presence(&h.tape, 1_010.0) < ABSENT,
            "cat was played after her removal"
        );
        assert_little_loss(h, other);
        assert!(h.summary.error.is_none(), "{:?}", h.summary.error);
    }
    let _ = relay.stop.take().map(|s| s.send(()));
    relay.task.await.expect("join").expect("relay stops");
}
