//! A peer nobody here wrote: headless Chromium (tests/webrtc/page/peer.html,
//! relay-only ICE, a 1000 Hz tone) calls an Umbra call engine through a real
//! `umbra relay`, the test carrying the SDP both ways as the signalling
//! would. Both sides check what they heard: Chromium the Umbra notes
//! (WebAudio analyser), the engine Chromium's tone; both stay relay-only.
//! Needs chromium, node >= 20 and npm (scripts/test.sh installs them).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use umbra_call::audio::{Recorder, Sink, Tone};
use umbra_call::codec::Pcm;
use umbra_call::driver::{self, CallIo, Command as CallCommand, Media, Notice};
use umbra_call::{CallError, EngineConfig, EngineEvent, Path, RelayServer, Role, Transport};
use umbra_relay::{Relay, RelayConfig};
use umbra_turn::credentials::rest;

const SECRET: &str = "browser-interop-secret";

struct Shared(Arc<Mutex<Recorder>>);

impl Sink for Shared {
    fn play(&mut self, frame: &Pcm) -> Result<(), CallError> {
        self.0.lock().unwrap().play(frame)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_and_an_umbra_endpoint_talk_both_ways_through_umbra_relay() {
    let relay = Relay::bind(RelayConfig {
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        auth_secret: Some(SECRET.into()),
        workers: Some(1),
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    let relay_addr = relay.udp_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let (user, pass) = rest::credentials(SECRET.as_bytes(), expiry, "browser");
    let (user2, pass2) = rest::credentials(SECRET.as_bytes(), expiry, "umbra-endpoint");

    // The browser side.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut browser = Command::new("bash")
        .arg(root.join("tests/webrtc/run.sh"))
        .arg(format!("turn:{relay_addr}?transport=udp"))
        .args([&user, &pass, "--peer", "--timeout", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs tests/webrtc/run.sh");
    let stdout = browser.stdout.take().unwrap();
    let (offer_tx, offer_rx) = std::sync::mpsc::channel::<String>();
    let rest_of_stdout = Arc::new(Mutex::new(String::new()));
    let sink = rest_of_stdout.clone();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(json) = line.strip_prefix("OFFER ") {
                let _ = offer_tx.send(serde_json::from_str::<String>(json).unwrap());
            } else {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let stderr = browser.stderr.take().unwrap();
    let errors = Arc::new(Mutex::new(String::new()));
    let sink = errors.clone();
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });

    // The Umbra side: a callee whose user has answered.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let heard = Arc::new(Mutex::new(Recorder::default()));
    let mut call = driver::spawn(
        EngineConfig {
            role: Role::Callee,
            relay: Some(RelayServer {
                addr: relay_addr,
                username: user2,
                password: pass2,
                transport: Transport::Udp,
            }),
            local,
            seed: [9; 32],
            expected_loss: 5,
        },
        CallIo::Udp(socket),
        Media {
            source: Box::new(Tone::standard()),
            sink: Box::new(Shared(heard.clone())),
            duration: Some(Duration::from_secs(7)),
        },
    )
    .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), call.notices.recv()).await {
            Ok(Some(Notice::Engine(EngineEvent::RelayReady { .. }))) => break,
            Ok(Some(_)) => {}
            other => panic!("no relay allocation: {other:?}"),
        }
    }
    let offer = tokio::task::spawn_blocking(move || offer_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("the browser gave no offer:\n{}", errors.lock().unwrap()));
    let answer = call
        .request(|r| CallCommand::AcceptOffer(offer, r))
        .await
        .unwrap();
    {
        let stdin = browser.stdin.as_mut().unwrap();
        writeln!(stdin, "ANSWER {}", serde_json::to_string(&answer).unwrap()).unwrap();
        stdin.flush().unwrap();
    }
    let summary = call.finish().await;
    // Wait for the browser and for its last lines to be read.
    let status = tokio::task::spawn_blocking(move || {
        let status = browser.wait();
        let _ = stdout_reader.join();
        let _ = stderr_reader.join();
        status
    })
    .await
    .unwrap()
    .unwrap();
    let _ = stop.send(());

    let out = rest_of_stdout.lock().unwrap().clone();
    let json = out.find('{').map(|i| &out[i..]).unwrap_or("{}");
    let verdict: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| {
        panic!(
            "no verdict from the browser ({e}):\n{out}\n{}",
            errors.lock().unwrap()
        )
    });
    assert!(
        status.success() && verdict["ok"] == true,
        "browser checks failed: {verdict:#}\n{}",
        errors.lock().unwrap()
    );
    assert!(summary.error.is_none(), "{:?}", summary.error);
    assert_eq!(summary.stats.path, Some(Path::Relayed));
    assert_eq!(
        summary.contacted.iter().collect::<Vec<_>>(),
        vec![&relay_addr],
        "the Umbra endpoint sent to someone other than the relay"
    );
    // The engine heard Chromium's 1000 Hz tone.
    let samples = heard.lock().unwrap().samples.clone();
    let windows = umbra_call::analysis::frequencies_per_window(&samples, 9_600, 48_000);
    let on_tone = windows
        .iter()
        .filter(|f| (**f - 1000.0).abs() <= 15.0)
        .count();
    assert!(
        windows.len() >= 10 && on_tone * 10 >= windows.len() * 6,
        "heard {windows:?}"
    );
    let r = summary.stats.received;
    assert!(r.played > 150, "{r:?}");
}
