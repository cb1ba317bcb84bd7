//! Two call engines on real UDP sockets on 127.0.0.1, through a real
//! `umbra relay` running in the test: relay-only calls (the default), a
//! direct path once both sides allow it, and a forged media key.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use umbra_call::analysis::frequencies_per_window;
use umbra_call::audio::{Recorder, Sink, Source, Tone};
use umbra_call::codec::{FRAME, Pcm};
use umbra_call::driver::{self, CallHandle, CallSummary, Command, Media, Notice};
use umbra_call::{CallError, EngineConfig, EngineEvent, Path, RelayServer, Role};
use umbra_relay::{Relay, RelayConfig};
use umbra_turn::credentials::rest;

const SECRET: &str = "call-test-secret";

struct RunningRelay {
    udp: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn relay() -> RunningRelay {
    let config = RelayConfig {
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        auth_secret: Some(SECRET.into()),
        workers: Some(1),
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await.unwrap();
    let udp = relay.udp_addr();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(relay.run(async move {
        let _ = rx.await;
    }));
    RunningRelay {
        udp,
        stop: Some(tx),
    }
}

fn server(relay: &RunningRelay, token: &str) -> RelayServer {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let (username, password) = rest::credentials(SECRET.as_bytes(), expiry, token);
    RelayServer {
        addr: relay.udp,
        username,
        password,
        transport: umbra_call::Transport::Udp,
    }
}

/// Records what it hears and shares it when the call ends.
struct Shared(std::sync::Arc<std::sync::Mutex<Recorder>>);

impl Sink for Shared {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.0.lock().unwrap().play(frame)
    }
}

struct Side {
    handle: CallHandle,
    local: SocketAddr,
    heard: std::sync::Arc<std::sync::Mutex<Recorder>>,
}

async fn side(role: Role, relay: RelayServer, source: Box<dyn Source>, secs: u64) -> Side {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Recorder::default()));
    let config = EngineConfig {
        role,
        relay: Some(relay),
        local,
        seed: rand_seed(),
        expected_loss: 5,
    };
    let media = Media {
        source,
        sink: Box::new(Shared(heard.clone())),
        duration: Some(Duration::from_secs(secs)),
    };
    Side {
        handle: driver::spawn(config, driver::CallIo::Udp(socket), media).unwrap(),
        local,
        heard,
    }
}

fn rand_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, b) in s.iter_mut().enumerate() {
        *b = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            >> (i % 24)) as u8
            ^ i as u8;
    }
    s
}

/// Waits for an engine event matching `pred`, passing trickled candidates
/// on to `other` as the signalling would.
async fn wait_for(
    s: &mut Side,
    other: Option<&CallHandle>,
    pred: impl Fn(&EngineEvent) -> bool,
) -> EngineEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, s.handle.notices.recv())
            .await
            .expect("event in time")
            .expect("call still running");
        if let Notice::Engine(e) = n {
            if let (EngineEvent::LocalCandidate(line), Some(o)) = (&e, other) {
                o.commands
                    .send(Command::RemoteCandidate(line.clone()))
                    .await
                    .unwrap();
            }
            if pred(&e) {
                return e;
            }
        }
    }
}

async fn relay_ready(s: &mut Side) {
    wait_for(s, None, |e| matches!(e, EngineEvent::RelayReady { .. })).await;
}

/// Offer/answer between the two sides; returns them connected.
async fn connect(caller: &mut Side, callee: &mut Side, tamper: bool) -> Result<(), CallError> {
    relay_ready(caller).await;
    let offer = caller.handle.request(Command::CreateOffer).await?;
    relay_ready(callee).await;
    let answer = callee
        .handle
        .request(|r| Command::AcceptOffer(offer, r))
        .await?;
    let answer = if tamper {
        forge_fingerprint(&answer)
    } else {
        answer
    };
    caller
        .handle
        .request(|r| Command::AcceptAnswer(answer, r))
        .await
}

/// Replaces the DTLS fingerprint in an SDP with another valid-looking one,
/// as a relay or server in the middle would to take over the media.
fn forge_fingerprint(sdp: &str) -> String {
    sdp.lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("a=fingerprint:sha-256 ") {
                let forged: Vec<String> = rest
                    .split(':')
                    .map(|b| format!("{:02X}", u8::from_str_radix(b, 16).unwrap_or(0) ^ 0x5a))
                    .collect();
                format!("a=fingerprint:sha-256 {}", forged.join(":"))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

fn check_heard(heard: &[i16], expect: &[f32]) {
    // Windows of 400 ms (one note each); the first few may straddle the
    // start, so look for every expected note in order among the rest.
    let freqs = frequencies_per_window(heard, 19_200, 48_000);
    let hits = freqs
        .iter()
        .filter(|f| expect.iter().any(|e| (*f - e).abs() <= 15.0))
        .count();
    assert!(
        hits * 10 >= freqs.len().saturating_sub(2) * 8,
        "heard {freqs:?}, expected notes {expect:?}"
    );
}

fn check_clean(summary: &CallSummary) {
    assert!(summary.error.is_none(), "{:?}", summary.error);
    let r = summary.stats.received;
    assert!(r.played > 50, "{r:?}");
    assert!(
        (r.concealed as f64) < 0.01 * (r.played + r.concealed) as f64,
        "loss over 1% on a clean path: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_call_carries_audio_both_ways_and_never_contacts_the_other_side() {
    let relay = relay().await;
    let mut caller = side(
        Role::Caller,
        server(&relay, "tok-a"),
        Box::new(Tone::repeating(&[(440.0, 0.4), (880.0, 0.4)])),
        3,
    )
    .await;
    let mut callee = side(
        Role::Callee,
        server(&relay, "tok-b"),
        Box::new(Tone::repeating(&[(660.0, 0.4), (1320.0, 0.4)])),
        3,
    )
    .await;
    connect(&mut caller, &mut callee, false).await.unwrap();
    let e = wait_for(&mut caller, None, |e| {
        matches!(e, EngineEvent::Connected(_))
    })
    .await;
    assert!(matches!(e, EngineEvent::Connected(Path::Relayed)), "{e:?}");
    let (callee_local, caller_local) = (callee.local, caller.local);
    let heard_by_callee = callee.heard.clone();
    let heard_by_caller = caller.heard.clone();
    let (a, b) = tokio::join!(caller.handle.finish(), callee.handle.finish());
    check_clean(&a);
    check_clean(&b);
    assert_eq!(a.stats.path, Some(Path::Relayed));
    // Each side only ever sent to the relay.
    assert_eq!(a.contacted.iter().collect::<Vec<_>>(), vec![&relay.udp]);
    assert_eq!(b.contacted.iter().collect::<Vec<_>>(), vec![&relay.udp]);
    assert!(!a.contacted.contains(&callee_local) && !b.contacted.contains(&caller_local));
    check_heard(&heard_by_callee.lock().unwrap().samples, &[440.0, 880.0]);
    check_heard(&heard_by_caller.lock().unwrap().samples, &[660.0, 1320.0]);
    let setup = a.setup_time.unwrap();
    assert!(setup < Duration::from_secs(5), "{setup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_path_is_used_only_once_both_sides_allow_it() {
    let relay = relay().await;
    let mut caller = side(
        Role::Caller,
        server(&relay, "tok-c"),
        Box::new(Tone::repeating(&[(440.0, 0.4)])),
        4,
    )
    .await;
    let mut callee = side(
        Role::Callee,
        server(&relay, "tok-d"),
        Box::new(Tone::repeating(&[(880.0, 0.4)])),
        4,
    )
    .await;
    connect(&mut caller, &mut callee, false).await.unwrap();
    caller
        .handle
        .commands
        .send(Command::AllowDirect)
        .await
        .unwrap();
    callee
        .handle
        .commands
        .send(Command::AllowDirect)
        .await
        .unwrap();
    // Trade the host candidates, as the signalling would.
    let (caller_local, callee_local) = (caller.local, callee.local);
    let c1 = wait_for(&mut caller, None, |e| {
        matches!(e, EngineEvent::LocalCandidate(_))
    })
    .await;
    let c2 = wait_for(&mut callee, None, |e| {
        matches!(e, EngineEvent::LocalCandidate(_))
    })
    .await;
    for (c, to) in [(c1, &callee.handle), (c2, &caller.handle)] {
        if let EngineEvent::LocalCandidate(line) = c {
            to.commands
                .send(Command::RemoteCandidate(line))
                .await
                .unwrap();
        }
    }
    let heard = callee.heard.clone();
    let (a, b) = tokio::join!(caller.handle.finish(), callee.handle.finish());
    check_clean(&a);
    check_clean(&b);
    assert_eq!(a.stats.path, Some(Path::Direct), "{:?}", a.stats);
    assert!(a.contacted.contains(&callee_local));
    assert!(b.contacted.contains(&caller_local));
    check_heard(&heard.lock().unwrap().samples, &[440.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_media_key_in_the_answer_fails_the_call_with_a_clear_error() {
    let relay = relay().await;
    let mut caller = side(
        Role::Caller,
        server(&relay, "tok-e"),
        Box::new(Tone::standard()),
        3,
    )
    .await;
    let mut callee = side(
        Role::Callee,
        server(&relay, "tok-f"),
        Box::new(Tone::standard()),
        3,
    )
    .await;
    connect(&mut caller, &mut callee, true).await.unwrap();
    let heard = callee.heard.clone();
    let (a, _b) = tokio::join!(caller.handle.finish(), callee.handle.finish());
    let err = a.error.expect("the caller refused the forged key");
    assert!(matches!(err, CallError::FingerprintMismatch), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(a.talk_time.is_zero());
    // Nothing was heard through the forged session.
    let samples = &heard.lock().unwrap().samples;
    assert!(
        samples.iter().all(|&s| s == 0),
        "audio leaked past a forged key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refusing_credentials_is_a_clear_error() {
    let relay = relay().await;
    let mut bad = server(&relay, "tok-g");
    bad.password = "wrong".into();
    let s = side(Role::Caller, bad, Box::new(Tone::standard()), 1).await;
    let summary = tokio::time::timeout(Duration::from_secs(20), s.handle.finish())
        .await
        .unwrap();
    let err = summary.error.expect("allocation fails");
    assert!(err.to_string().contains("call relay"), "{err}");
    let _ = FRAME;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_offers_and_candidates_are_refused_with_a_reason_and_the_call_survives() {
    let relay = relay().await;
    let mut caller = side(
        Role::Caller,
        server(&relay, "tok-h"),
        Box::new(Tone::standard()),
        3,
    )
    .await;
    let mut callee = side(
        Role::Callee,
        server(&relay, "tok-i"),
        Box::new(Tone::standard()),
        3,
    )
    .await;
    relay_ready(&mut caller).await;
    relay_ready(&mut callee).await;
    let offer = caller.handle.request(Command::CreateOffer).await.unwrap();
    for (bad, why) in [
        ("this is not SDP".to_string(), "not valid SDP"),
        (
            offer.replace("a=candidate:", "a=candidate:garbage "),
            "bad ICE candidate",
        ),
    ] {
        let e = callee
            .handle
            .request(|r| Command::AcceptOffer(bad, r))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    // Garbage candidates are dropped, never fatal.
    for line in [
        "candidate:1 1 udp x",
        "",
        "candidate:1 1 udp 1 999.1.1.1 1 typ host",
    ] {
        callee
            .handle
            .commands
            .send(Command::RemoteCandidate(line.into()))
            .await
            .unwrap();
    }
    // The real offer still works.
    let answer = callee
        .handle
        .request(|r| Command::AcceptOffer(offer, r))
        .await
        .unwrap();
    let e = caller
        .handle
        .request(|r| Command::AcceptAnswer("v=0\r\ngarbage".into(), r))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not valid SDP"), "{e}");
    // The good answer that follows still connects the call, audio flows.
    caller
        .handle
        .request(|r| Command::AcceptAnswer(answer.clone(), r))
        .await
        .unwrap();
    let e = caller
        .handle
        .request(|r| Command::AcceptAnswer(answer, r))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no offer is waiting"), "{e}");
    let heard = callee.heard.clone();
    let (a, b) = tokio::join!(caller.handle.finish(), callee.handle.finish());
    check_clean(&a);
    check_clean(&b);
    assert!(!heard.lock().unwrap().samples.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_hanging_up_at_once_end_cleanly() {
    let relay = relay().await;
    let mut caller = side(
        Role::Caller,
        server(&relay, "tok-j"),
        Box::new(Tone::standard()),
        30,
    )
    .await;
    let mut callee = side(
        Role::Callee,
        server(&relay, "tok-k"),
        Box::new(Tone::standard()),
        30,
    )
    .await;
    connect(&mut caller, &mut callee, false).await.unwrap();
    wait_for(&mut caller, None, |e| {
        matches!(e, EngineEvent::Connected(_))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (x, y) = tokio::join!(
        caller.handle.commands.send(Command::HangUp),
        callee.handle.commands.send(Command::HangUp)
    );
    x.unwrap();
    y.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(caller.handle.finish(), callee.handle.finish())
    })
    .await
    .expect("both ended promptly");
    for s in [&a, &b] {
        assert!(s.error.is_none(), "{:?}", s.error);
        assert!(
            s.talk_time >= Duration::from_millis(900),
            "{:?}",
            s.talk_time
        );
        assert!(s.stats.received.played > 20, "{:?}", s.stats.received);
    }
}
