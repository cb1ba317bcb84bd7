//! Calls between separate hosts: network namespaces made by this test (a
//! switch, the messaging server, two relays, and the callers), every host
//! captured with tcpdump, and the captures read as an observer would.
//!
//! - "protect IP" on one side, two relays: neither caller's capture holds a
//!   packet to or from the other caller's address; relay A never sees the
//!   callee's address and relay B never the caller's; the audio arrives, and
//!   what the relays carried does not decode to it.
//! - both sides allow it: the audio goes host to host.
//! - a stranger calls: nothing comes back from the callee's address, the
//!   callee contacts no relay, and nothing rings.
//! - the callee's network drops mid-call: the caller is told and the call
//!   ends by itself.
//! - afterwards the server's database and every daemon's log hold no
//!   username or client address, and nothing about a call.
//!
//! Needs root (namespaces, captures): CI runs as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{
    Capture, Net, Packet, decode_relayed, events, peers, read_wav, sh, touches, udp_between,
};

const SERVER: &str = "192.0.2.1";
const RELAY_A: &str = "192.0.2.11";
const RELAY_B: &str = "192.0.2.12";
const ALICE: &str = "192.0.2.21";
const BOB: &str = "192.0.2.22";
const CAROL: &str = "192.0.2.23";

const NOTES: [f32; 4] = [440.0, 660.0, 880.0, 1320.0];

/// Share of 200 ms windows whose dominant frequency is one of the notes.
fn note_share(samples: &[i16]) -> f64 {
    let (hits, windows) = umbra_call::analysis::windows_on_notes(samples, &NOTES, 15.0);
    if windows == 0 {
        return 0.0;
    }
    hits as f64 / windows as f64
}

fn ended(ev: &[serde_json::Value]) -> serde_json::Value {
    ev.iter()
        .rev()
        .find(|e| e["call"] == "ended")
        .cloned()
        .unwrap_or_else(|| panic!("no ended event in {ev:?}"))
}

#[test]
fn calls_across_hosts_reveal_no_address_that_the_settings_protect() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test builds network namespaces and needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net::new();
    for (h, ip) in [
        ("srv", SERVER),
        ("ra", RELAY_A),
        ("rb", RELAY_B),
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
    ] {
        net.host(h, ip);
    }
    let secret = d.join("turn.secret");
    std::fs::write(&secret, "netns-test-shared-secret-0123456789").unwrap();
    let secret = secret.to_str().unwrap().to_string();
    // Two relays, each admitting only the other as a peer beyond its own
    // allocations.
    for (h, ip, other) in [("ra", RELAY_A, RELAY_B), ("rb", RELAY_B, RELAY_A)] {
        net.spawn(
            h,
            &[
                "relay",
                "--auth-secret-file",
                &secret,
                "--udp-listen",
                &format!("{ip}:3478"),
                "--tls-listen",
                &format!("{ip}:5349"),
                "--allow-peer",
                &format!("{other}/32"),
            ],
            &d.join(format!("{h}.log")),
        );
    }
    let data = d.join("server-data");
    let data_s = data.to_str().unwrap().to_string();
    net.spawn(
        "srv",
        &[
            "server",
            "--listen",
            &format!("{SERVER}:7700"),
            "--data-dir",
            &data_s,
            "--relay-secret-file",
            &secret,
            "--relay-url",
            &format!("turn:{RELAY_A}:3478?transport=udp"),
            "--relay-url",
            &format!("turn:{RELAY_B}:3478?transport=udp"),
        ],
        &d.join("srv.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let invite = loop {
        let log = std::fs::read_to_string(d.join("srv.log")).unwrap_or_default();
        if let Some(i) = log
            .split_whitespace()
            .find(|w| w.starts_with("invite=umbra://"))
        {
            break i.trim_start_matches("invite=").to_string();
        }
        assert!(Instant::now() < deadline, "server did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let profile = |u: &str| d.join(u).to_str().unwrap().to_string();
    for u in ["alice", "bob", "carol"] {
        net.ok(
            u,
            &[
                "--profile",
                &profile(u),
                "register",
                "--no-passphrase",
                "--invite",
                &invite,
                u,
            ],
        );
    }
    // Bob has written to Alice: she may ring him. Carol has not.
    net.ok(
        "bob",
        &["--profile", &profile("bob"), "send", "alice", "call me"],
    );
    net.ok("alice", &["--profile", &profile("alice"), "sync"]);
    net.ok(
        "carol",
        &[
            "--profile",
            &profile("carol"),
            "send",
            "bob",
            "hi, stranger here",
        ],
    );

    // 1. Bob protects his IP address; two relays.
    net.ok(
        "bob",
        &["--profile", &profile("bob"), "settings", "protect-ip", "on"],
    );
    let caps: Vec<(&str, Capture)> = ["alice", "bob", "ra", "rb"]
        .into_iter()
        .map(|h| (h, net.capture(h, &d.join(format!("1-{h}.pcap")))))
        .collect();
    let bob_wav = d.join("bob-heard-1.wav");
    let listen = net.spawn(
        "bob",
        &[
            "--profile",
            &profile("bob"),
            "--json",
            "listen",
            "--auto-answer",
            "--audio-in",
            "silence",
            "--audio-out",
            bob_wav.to_str().unwrap(),
        ],
        &d.join("bob-listen-1.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out, err) = net.run(
        "alice",
        &[
            "--profile",
            &profile("alice"),
            "--json",
            "call",
            "bob",
            "--duration",
            "4",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let ev = events(&out);
    assert_eq!(ended(&ev)["outcome"], "answered", "{ev:?}");
    std::thread::sleep(Duration::from_millis(500));
    net.stop(listen);
    let mut caps: std::collections::HashMap<&str, Vec<Packet>> =
        caps.into_iter().map(|(h, c)| (h, c.finish())).collect();
    let (alice_p, bob_p) = (&caps["alice"], &caps["bob"]);
    assert!(!alice_p.is_empty() && !bob_p.is_empty());
    assert_eq!(
        touches(alice_p, BOB),
        0,
        "alice saw bob's address: {:?}",
        peers(alice_p, ALICE)
    );
    assert_eq!(
        touches(bob_p, ALICE),
        0,
        "bob saw alice's address: {:?}",
        peers(bob_p, BOB)
    );
    // Each relay sees one caller only.
    assert_eq!(touches(&caps["ra"], BOB), 0, "relay A saw the callee");
    assert_eq!(touches(&caps["rb"], ALICE), 0, "relay B saw the caller");
    assert!(
        udp_between(alice_p, ALICE, RELAY_A) > 100,
        "alice's media went via relay A"
    );
    assert!(
        udp_between(bob_p, BOB, RELAY_B) > 100,
        "bob's media went via relay B"
    );
    assert!(
        udp_between(&caps["ra"], RELAY_A, RELAY_B) > 100,
        "the relays carried it between them"
    );
    // The audio arrived, with little loss.
    let heard = read_wav(&bob_wav);
    let share = note_share(&heard);
    assert!(share >= 0.7, "bob heard the notes in {share:.2} of windows");
    let listen_ev = events(&std::fs::read_to_string(d.join("bob-listen-1.log")).unwrap());
    let last_q = listen_ev
        .iter()
        .rev()
        .find(|e| e["call"] == "quality")
        .unwrap_or_else(|| panic!("no quality in {listen_ev:?}"));
    assert!(
        last_q["loss_in_permille"].as_u64().unwrap() < 10,
        "{last_q}"
    );
    // The relay cannot listen: what it carried does not decode to the notes.
    let relayed = decode_relayed(&caps["ra"]);
    let leaked = note_share(&relayed);
    assert!(
        leaked < 0.2,
        "relay A's payloads decode to the audio ({leaked:.2})"
    );
    caps.clear();

    // 2. Neither protects: once answered, audio goes host to host.
    net.ok(
        "bob",
        &[
            "--profile",
            &profile("bob"),
            "settings",
            "protect-ip",
            "off",
        ],
    );
    let cap_a = net.capture("alice", &d.join("2-alice.pcap"));
    let bob_wav2 = d.join("bob-heard-2.wav");
    let listen = net.spawn(
        "bob",
        &[
            "--profile",
            &profile("bob"),
            "listen",
            "--auto-answer",
            "--audio-out",
            bob_wav2.to_str().unwrap(),
        ],
        &d.join("bob-listen-2.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out, err) = net.run(
        "alice",
        &[
            "--profile",
            &profile("alice"),
            "--json",
            "call",
            "bob",
            "--duration",
            "5",
        ],
    );
    assert!(ok, "{out}\n{err}");
    net.stop(listen);
    let alice_p = cap_a.finish();
    let direct = udp_between(&alice_p, ALICE, BOB);
    assert!(direct > 100, "only {direct} packets went host to host");
    assert!(note_share(&read_wav(&bob_wav2)) >= 0.7);

    // 3. A stranger calls: nothing comes back from bob's address, bob
    //    contacts no relay, nothing rings.
    let cap_c = net.capture("carol", &d.join("3-carol.pcap"));
    let cap_b = net.capture("bob", &d.join("3-bob.pcap"));
    let listen = net.spawn(
        "bob",
        &["--profile", &profile("bob"), "listen", "--auto-answer"],
        &d.join("bob-listen-3.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, out, _) = net.run(
        "carol",
        &[
            "--profile",
            &profile("carol"),
            "--json",
            "call",
            "bob",
            "--ring-timeout",
            "3",
        ],
    );
    let ev = events(&out);
    assert!(!ev.iter().any(|e| e["call"] == "ringing"), "{ev:?}");
    assert_eq!(ended(&ev)["outcome"], "missed");
    std::thread::sleep(Duration::from_millis(500));
    net.stop(listen);
    let carol_p = cap_c.finish();
    let bob_p = cap_b.finish();
    assert_eq!(
        touches(&carol_p, BOB),
        0,
        "a packet between carol and bob's address"
    );
    let relay_packets = touches(&bob_p, RELAY_A) + touches(&bob_p, RELAY_B);
    assert_eq!(
        relay_packets, 0,
        "bob contacted a relay for a silenced call"
    );
    let listen_log = std::fs::read_to_string(d.join("bob-listen-3.log")).unwrap();
    assert!(
        listen_log.contains("silenced a call from carol"),
        "{listen_log}"
    );

    // 4. Bob's network drops mid-call: Alice is told, and her call ends by
    //    itself.
    let listen = net.spawn(
        "bob",
        &["--profile", &profile("bob"), "listen", "--auto-answer"],
        &d.join("bob-listen-4.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let alice_log = d.join("alice-call-4.log");
    let caller = net.spawn(
        "alice",
        &["--profile", &profile("alice"), "--json", "call", "bob"],
        &alice_log,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&alice_log)
        .unwrap_or_default()
        .contains("\"quality\"")
    {
        assert!(Instant::now() < deadline, "the call never connected");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let cut = Instant::now();
    sh(&["ip", "-n", &net.ns("bob"), "link", "set", "eth0", "down"]);
    let status = common::wait_timeout(&mut net.children[caller], Duration::from_secs(30));
    let took = cut.elapsed();
    sh(&["ip", "-n", &net.ns("bob"), "link", "set", "eth0", "up"]);
    net.stop(listen);
    let ev = events(&std::fs::read_to_string(&alice_log).unwrap());
    let end = ended(&ev);
    assert!(
        end["error"]
            .as_str()
            .unwrap_or("")
            .contains("connection was lost"),
        "{end}"
    );
    assert!(
        status.code().is_some(),
        "the call was killed, not ended: {status:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?} to notice");

    // 5. What the operator keeps: no username or client address in any
    //    daemon's log, none in the server's files, and no call in them.
    for (h, log) in [("srv", "srv.log"), ("ra", "ra.log"), ("rb", "rb.log")] {
        let text = std::fs::read_to_string(d.join(log)).unwrap();
        for needle in ["alice", "bob", "carol", ALICE, BOB, CAROL] {
            assert!(
                !text.contains(needle),
                "{h}'s log mentions `{needle}`:\n{text}"
            );
        }
        // Past the start-up banner, nothing says a call took place.
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with("20")).collect();
        assert!(
            events.iter().all(|l| !l.to_lowercase().contains("call")),
            "{h}'s log tells of a call:\n{}",
            events.join("\n")
        );
    }
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        for needle in [ALICE, BOB, CAROL] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle}",
                entry.path().display()
            );
        }
    }
}
