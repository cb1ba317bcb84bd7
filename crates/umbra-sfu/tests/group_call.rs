//! Group calls through the forwarding unit, with real parts: the unit on a
//! UDP socket on loopback, and members that are `umbra-call` engines
//! (str0m: ICE, DTLS-SRTP) on sockets of their own, each sending a tone of
//! its own, sealed end to end with SFrame under keys from one MLS-style
//! exporter. What is checked is what each member heard and where its
//! packets went, and what someone with a valid credential but no key to
//! the call gets.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use umbra_call::audio::{Source, Tone};
use umbra_call::driver::bind_toward;
use umbra_call::e2ee::{Dropped, Epoch, FrameKeys};
use umbra_call::group::{GroupAudio, SpeakerStats};
use umbra_call::{Engine, EngineEvent};
use umbra_sfu::{JoinError, JoinRequest, Limits, RoomId, Sfu, SfuConfig, SfuStats};
use umbra_turn::credentials::rest;

const SECRET: &[u8] = b"the secret the server and the unit share";

#[path = "../../umbra-call/tests/support/exporter.rs"]
mod exporter;
#[path = "../../umbra-call/tests/support/tones.rs"]
mod tones;
use exporter::Exporter;
use tones::{ABSENT, HEARD, TONES, assert_hears_all_but, presence};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn credential(token: &str) -> (String, String) {
    rest::credentials(SECRET, unix_now() + 600, token)
}

struct Join {
    room: RoomId,
    username: String,
    password: String,
    offer: String,
    reply: oneshot::Sender<Result<String, JoinError>>,
}

/// The unit, on a UDP socket on loopback, in a task (which ends with the
/// test's runtime): joins come in on a channel. Returns its address, the
/// join channel and its counts as they go.
async fn start_unit(limits: Limits) -> (SocketAddr, mpsc::Sender<Join>, Arc<Mutex<SfuStats>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind unit");
    let public = socket.local_addr().expect("addr");
    let (join_tx, mut join_rx) = mpsc::channel::<Join>(16);
    let stats = Arc::new(Mutex::new(SfuStats::default()));
    let counts = stats.clone();
    tokio::spawn(async move {
        let mut sfu = Sfu::new(SfuConfig {
            public,
            secret: SECRET.to_vec(),
            limits,
        });
        let mut buf = vec![0u8; 2048];
        let mut open = true;
        loop {
            let wake = sfu
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let (n, from) = r.expect("unit recv");
                    sfu.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                j = join_rx.recv(), if open => match j {
                    Some(j) => {
                        let req = JoinRequest {
                            room: j.room,
                            username: &j.username,
                            password: &j.password,
                            offer: &j.offer,
                        };
                        let answer = sfu.join(Instant::now(), unix_now(), &req).map(|a| a.answer);
                        let _ = j.reply.send(answer);
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(wake.into()) => sfu.handle_timeout(Instant::now()),
            }
            while let Some(d) = sfu.poll_transmit() {
                let _ = socket.send_to(&d.data, d.to).await;
            }
            while sfu.poll_event().is_some() {}
            *counts.lock().expect("stats") = sfu.stats();
        }
    });
    (public, join_tx, stats)
}

async fn join(
    units: &mpsc::Sender<Join>,
    room: RoomId,
    token: &str,
    offer: String,
) -> Result<String, JoinError> {
    let (username, password) = credential(token);
    let (reply, answer) = oneshot::channel();
    units
        .send(Join {
            room,
            username,
            password,
            offer,
            reply,
        })
        .await
        .expect("unit running");
    answer.await.expect("unit answered")
}

/// What one member took away from the call.
struct Heard {
    recording: Vec<i16>,
    speakers: Vec<SpeakerStats>,
    dropped: Dropped,
    /// Every address it sent a datagram to, and heard one from.
    sent_to: HashSet<SocketAddr>,
    heard_from: HashSet<SocketAddr>,
    blocked: u64,
}

struct Member {
    index: u32,
    tone: f32,
    /// The call's secret as this member holds it.
    secret: [u8; 32],
}

async fn member(
    unit: SocketAddr,
    joins: mpsc::Sender<Join>,
    room: RoomId,
    me: Member,
    members: Vec<u32>,
    talk: Duration,
) -> Heard {
    let (socket, local) = bind_toward(unit).expect("member socket");
    let start = Instant::now();
    let mut engine = Engine::toward_unit(unit, local, start).expect("engine");
    let keys = FrameKeys::new(&Epoch {
        number: 1,
        own_index: me.index,
        members: &members,
        exporter: &Exporter(me.secret),
    })
    .expect("keys");
    let mut audio = GroupAudio::new(keys, 5, start).expect("audio");
    let offer = engine.create_offer(start).expect("offer");
    let answer = join(&joins, room, &format!("member-{}", me.index), offer)
        .await
        .expect("joined");
    engine
        .accept_answer(Instant::now(), &answer)
        .expect("answer");
    let mut tone = Tone::repeating(&[(me.tone, 10.0)]);
    let mut heard = Heard {
        recording: Vec::new(),
        speakers: Vec::new(),
        dropped: Dropped::default(),
        sent_to: HashSet::new(),
        heard_from: HashSet::new(),
        blocked: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut buf = vec![0u8; 2048];
    let end = Instant::now() + talk;
    while Instant::now() < end {
        let wake = engine.poll_timeout();
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let pcm = tone.next_frame().expect("tone");
                let frame = audio.seal(&pcm).expect("seal");
                engine.send_frame(now, frame);
                heard.recording.extend_from_slice(&audio.play(now));
            }
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r.expect("member recv");
                heard.heard_from.insert(from);
                engine.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            _ = tokio::time::sleep_until(wake.into()) => engine.handle_timeout(Instant::now()),
        }
        let now = Instant::now();
        while let Some(f) = engine.poll_frame() {
            audio.receive(now, &f);
        }
        while let Some(d) = engine.poll_transmit() {
            heard.sent_to.insert(d.to);
            let _ = socket.send_to(&d.data, d.to).await;
        }
        while let Some(e) = engine.poll_event() {
            if let EngineEvent::Failed(e) = e {
                panic!("member {} failed: {e}", me.index);
            }
        }
    }
    heard.speakers = audio.speakers(Instant::now());
    heard.dropped = audio.dropped();
    heard.blocked = engine.direct_sends_blocked();
    engine.hang_up(Instant::now());
    while let Some(d) = engine.poll_transmit() {
        let _ = socket.send_to(&d.data, d.to).await;
    }
    heard
}

/// A room on a fresh unit with `cast` in it, every member talking for
/// `talk`: the unit's address, what each member took away, and the unit's
/// counts at the end.
async fn call(
    cast: Vec<Member>,
    members: Vec<u32>,
    talk: Duration,
) -> (SocketAddr, Vec<Heard>, SfuStats) {
    let (unit, joins, stats) = start_unit(Limits::default()).await;
    let room = RoomId(rand::random());
    let mut tasks = Vec::new();
    for me in cast {
        let joins = joins.clone();
        tasks.push(tokio::spawn(member(
            unit,
            joins,
            room,
            me,
            members.clone(),
            talk,
        )));
    }
    drop(joins);
    let mut heard = Vec::new();
    for t in tasks {
        heard.push(t.await.expect("member"));
    }
    let stats = *stats.lock().expect("unit stats");
    (unit, heard, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_hear_each_other_through_the_unit_and_only_the_unit() {
    let cast = TONES
        .iter()
        .enumerate()
        .map(|(i, &tone)| Member {
            index: i as u32,
            tone,
            secret: [7; 32],
        })
        .collect();
    let (unit, heard, stats) = call(cast, vec![0, 1, 2, 3], Duration::from_secs(5)).await;
    for (i, h) in heard.iter().enumerate() {
        // Only the unit: no packet to, and none from, any other address.
        assert_eq!(
            h.sent_to,
            HashSet::from([unit]),
            "member {i} sent elsewhere"
        );
        assert_eq!(
            h.heard_from,
            HashSet::from([unit]),
            "member {i} heard others"
        );
        assert_eq!(h.blocked, 0, "member {i} tried another address");
        // Everyone else, by their own index from inside the frames, with
        // under 1% loss; and itself not at all.
        let others: Vec<u32> = h.speakers.iter().map(|s| s.member).collect();
        let expected: Vec<u32> = (0..4).filter(|&m| m != i as u32).collect();
        assert_eq!(others, expected, "member {i} heard {others:?}");
        for s in &h.speakers {
            assert!(
                s.loss < 0.01,
                "member {i} lost {:.3} of {}'s frames",
                s.loss,
                s.member
            );
            assert!(s.active && s.level_dbfs > -40.0, "member {i}: {s:?}");
        }
        assert_eq!(h.dropped.total(), 0, "member {i} dropped {:?}", h.dropped);
        assert_hears_all_but(i, &h.recording);
    }
    assert_eq!(stats.joins, 4);
    // Each member's frames went to three others.
    assert!(
        stats.frames_out >= stats.frames_in * 3 * 9 / 10,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_the_calls_keys_hears_nothing() {
    // Members 0 and 1 hold the call's secret; the third is a stranger in
    // the room (a valid credential from the server, the room id learnt
    // somehow) who is not in the call's group: it claims index 1 too,
    // under a key of its own.
    let cast = [
        (0, 440.0, [7; 32]),
        (1, 620.0, [7; 32]),
        (1, 1_010.0, [9; 32]),
    ]
    .into_iter()
    .map(|(index, tone, secret)| Member {
        index,
        tone,
        secret,
    })
    .collect();
    let (_, heard, _) = call(cast, vec![0, 1], Duration::from_secs(3)).await;
    let [a, b, s] = heard.as_slice() else {
        panic!("three members");
    };
    // The stranger got every frame and opened none: not one played.
    assert!(s.speakers.is_empty(), "the stranger heard {:?}", s.speakers);
    assert!(s.dropped.forged > 100, "{:?}", s.dropped);
    assert!(presence(&s.recording, 440.0) < ABSENT && presence(&s.recording, 620.0) < ABSENT);
    // And what it said is dropped by the members, never played: member 0
    // hears member 1's tone and not the stranger's. The stranger's frames
    // carry member 1's key id and counters: one that comes before the real
    // frame of its counter fails the tag (forged) and leaves the window
    // alone, so the real one still plays; one that comes after is refused
    // as a replay before any decryption.
    let refused = a.dropped.forged + a.dropped.replayed;
    assert!(refused > 100, "{:?}", a.dropped);
    assert!(presence(&a.recording, 620.0) > HEARD);
    assert!(
        presence(&a.recording, 1_010.0) < ABSENT,
        "the stranger was played"
    );
    assert!(
        presence(&b.recording, 1_010.0) < ABSENT,
        "the stranger was played"
    );
}

#[tokio::test]
async fn joins_are_refused_with_the_reason() {
    let now = Instant::now();
    let public: SocketAddr = "127.0.0.1:3480".parse().expect("addr");
    let mut sfu = Sfu::new(SfuConfig {
        public,
        secret: SECRET.to_vec(),
        limits: Limits {
            per_room: 2,
            per_credential: 1,
            total: 10,
        },
    });
    let offer = || {
        let mut e =
            Engine::toward_unit(public, "127.0.0.1:5000".parse().expect("a"), now).expect("engine");
        e.create_offer(now).expect("offer")
    };
    let room = RoomId([1; 16]);
    let try_join = |sfu: &mut Sfu, user: &str, pass: &str, offer: &str| {
        sfu.join(
            now,
            unix_now(),
            &JoinRequest {
                room,
                username: user,
                password: pass,
                offer,
            },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let (u1, p1) = credential("one");
    let (u2, p2) = credential("two");
    let (u3, p3) = credential("three");
    let (old, old_pass) = rest::credentials(SECRET, unix_now() - 1, "old");
    let o = offer();
    let e = try_join(&mut sfu, &u1, "not the password", &o).expect_err("wrong password");
    assert!(e.contains("not valid here"), "{e}");
    let e = try_join(&mut sfu, &old, &old_pass, &o).expect_err("expired");
    assert!(e.contains("expired"), "{e}");
    let e = try_join(&mut sfu, &u1, &p1, "v=0\r\n").expect_err("no audio");
    assert!(e.contains("no audio stream"), "{e}");
    let video = o.replacen("m=audio", "m=video", 1) + &o[o.find("m=audio").expect("m")..];
    let e = try_join(&mut sfu, &u1, &p1, &video).expect_err("two streams");
    assert!(e.contains("2 media streams"), "{e}");
    try_join(&mut sfu, &u1, &p1, &o).expect("one");
    let e = try_join(&mut sfu, &u1, &p1, &offer()).expect_err("credential busy");
    assert!(e.contains("already has 1 connections"), "{e}");
    try_join(&mut sfu, &u2, &p2, &offer()).expect("two");
    let e = try_join(&mut sfu, &u3, &p3, &offer()).expect_err("full");
    assert!(e.contains("call is full"), "{e}");
    let s = sfu.stats();
    assert_eq!((s.joins, s.refused, s.peers, s.rooms), (2, 6, 2, 1));
    // A connection that never comes up is out of the room after the
    // connect timeout, and its place is free.
    sfu.handle_timeout(now + umbra_sfu::sfu::CONNECT_TIMEOUT + Duration::from_secs(1));
    let mut left = 0;
    while sfu.poll_event().is_some() {
        left += 1;
    }
    assert_eq!((left, sfu.stats().peers), (2, 0));
    try_join(&mut sfu, &u3, &p3, &offer()).expect("room again");
}
