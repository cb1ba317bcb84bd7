//! A group call between separate hosts: network namespaces made by this
//! test (a switch, the messaging server, the relay with its forwarding
//! unit, four members), every member and the unit captured with tcpdump,
//! and the captures read as each party would.
//!
//! - Four members run `umbra call team`, each sending a tone of its own:
//!   every recording holds the three others' tones and not its own, and
//!   each member's last report shows the others with under 1% loss.
//! - No member's capture holds a packet to or from another member's
//!   address, or another member's address written in a payload: each one
//!   talks only to the server and the unit.
//! - What the unit carried does not decode to any tone.
//! - Afterwards the server's and the unit's logs hold no username, no
//!   member address and no group name, and nothing past start-up tells of a
//!   call; the server's files hold no member address and no group name.
//!
//! Needs root (namespaces, captures): CI runs as root.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../../umbra-call/tests/support/tones.rs"]
mod tones;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{Net, decode_relayed, events, peers, read_wav, touches, udp_between};
use tones::{ABSENT, HEARD, TONES, presence};

const SERVER: &str = "192.0.2.1";
const SFU: &str = "192.0.2.11";
const MEMBERS: [(&str, &str); 4] = [
    ("ann", "192.0.2.21"),
    ("bob", "192.0.2.22"),
    ("cat", "192.0.2.23"),
    ("dan", "192.0.2.24"),
];

/// A 48 kHz mono WAV of a steady tone.
fn write_tone(path: &Path, freq: f32, seconds: u32) {
    let n = 48_000 * seconds;
    let mut b = Vec::with_capacity(44 + 2 * n as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&48_000u32.to_le_bytes());
    b.extend_from_slice(&96_000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let x = (2.0 * std::f32::consts::PI * freq * i as f32 / 48_000.0).sin() * 8_000.0;
        b.extend_from_slice(&(x as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Waits for `needle` in the file at `path`.
fn wait_for(path: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_members_on_four_hosts_hear_each_other_and_only_the_unit() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test builds network namespaces and needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net::new();
    net.host("srv", SERVER);
    net.host("sfu", SFU);
    for (u, ip) in MEMBERS {
        net.host(u, ip);
    }
    let secret = d.join("turn.secret");
    std::fs::write(&secret, "netns-group-test-shared-secret-0123456789").unwrap();
    let secret = secret.to_str().unwrap().to_string();
    net.spawn(
        "sfu",
        &[
            "relay",
            "--auth-secret-file",
            &secret,
            "--udp-listen",
            &format!("{SFU}:3478"),
            "--tls-listen",
            &format!("{SFU}:5349"),
            "--unit-listen",
            &format!("{SFU}:3479"),
        ],
        &d.join("sfu.log"),
    );
    let sfu_log = wait_for(
        &d.join("sfu.log"),
        "--unit 'umbra://unit?",
        Duration::from_secs(30),
    );
    let unit = sfu_log
        .split("--unit '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap()
        .to_string();
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
            &format!("turn:{SFU}:3478?transport=udp"),
            "--unit",
            &unit,
        ],
        &d.join("srv.log"),
    );
    let srv_log = wait_for(
        &d.join("srv.log"),
        "invite=umbra://",
        Duration::from_secs(30),
    );
    let invite = srv_log
        .split_whitespace()
        .find(|w| w.starts_with("invite=umbra://"))
        .unwrap()
        .trim_start_matches("invite=")
        .to_string();
    let profile = |u: &str| d.join(u).to_str().unwrap().to_string();
    for (u, _) in MEMBERS {
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
    net.ok(
        "ann",
        &[
            "--profile",
            &profile("ann"),
            "group",
            "create",
            "team",
            "bob",
            "cat",
            "dan",
        ],
    );
    for (u, _) in &MEMBERS[1..] {
        net.ok(u, &["--profile", &profile(u), "sync"]);
    }

    let caps: Vec<_> = MEMBERS
        .iter()
        .map(|(u, _)| *u)
        .chain(["sfu"])
        .map(|h| (h, net.capture(h, &d.join(format!("{h}.pcap")))))
        .collect();
    let mut calls = Vec::new();
    for (i, (u, _)) in MEMBERS.iter().enumerate() {
        let tone = d.join(format!("{u}-tone.wav"));
        write_tone(&tone, TONES[i], 20);
        let heard = d.join(format!("{u}-heard.wav"));
        // Ann starts the call and stays longest; the others join once it
        // is up, all at once.
        let duration = if i == 0 { "14" } else { "10" };
        let log = d.join(format!("{u}-call.log"));
        calls.push(net.spawn(
            u,
            &[
                "--profile",
                &profile(u),
                "--json",
                "call",
                "team",
                "--audio-in",
                tone.to_str().unwrap(),
                "--audio-out",
                heard.to_str().unwrap(),
                "--duration",
                duration,
            ],
            &log,
        ));
        if i == 0 {
            wait_for(&log, "\"call\":\"connected\"", Duration::from_secs(30));
        }
    }
    for c in calls {
        let status = common::wait_timeout(&mut net.children[c], Duration::from_secs(40));
        assert!(status.success(), "a member's call failed: {status:?}");
    }
    let caps: std::collections::HashMap<&str, _> =
        caps.into_iter().map(|(h, c)| (h, c.finish())).collect();

    for (i, (u, ip)) in MEMBERS.iter().enumerate() {
        let log = std::fs::read_to_string(d.join(format!("{u}-call.log"))).unwrap();
        let ev = events(&log);
        let left = ev
            .iter()
            .find(|e| e["call"] == "group_left")
            .unwrap_or_else(|| panic!("{u} never left: {log}"));
        assert!(left["error"].is_null(), "{u}: {left}");
        // The last report with all three others in it: each under 1% loss.
        let full = ev
            .iter()
            .rev()
            .find(|e| {
                e["call"] == "participants" && e["participants"].as_array().unwrap().len() == 3
            })
            .unwrap_or_else(|| panic!("{u} never had all three others: {log}"));
        for p in full["participants"].as_array().unwrap() {
            let series: Vec<String> = ev
                .iter()
                .filter(|e| e["call"] == "participants")
                .map(|e| e["participants"].to_string())
                .collect();
            assert!(
                p["loss_permille"].as_u64().unwrap() < 10,
                "{u}: {p}\n{}",
                series.join("\n")
            );
            assert_eq!(p["speaking"], true, "{u}: {p}");
        }
        // The middle of the recording, when all four were in the call.
        let heard = read_wav(&d.join(format!("{u}-heard.wav")));
        assert!(
            heard.len() > 48_000 * 8,
            "{u} recorded {} samples",
            heard.len()
        );
        let window = &heard[..heard.len() / 2 + 48_000];
        for (j, &tone) in TONES.iter().enumerate() {
            let p = presence(window, tone);
            if i == j {
                assert!(p < ABSENT, "{u} heard its own tone ({p:.4})");
            } else {
                assert!(
                    p > HEARD,
                    "{u} did not hear {}'s tone ({p:.4})",
                    MEMBERS[j].0
                );
            }
        }
        // Nobody but the server and the unit, on the wire or in a payload.
        let packets = &caps[u];
        let seen = peers(packets, ip);
        assert!(
            seen.iter().all(|a| a == SERVER || a == SFU),
            "{u} exchanged packets with {seen:?}"
        );
        for (other, other_ip) in MEMBERS.iter().filter(|(o, _)| o != u) {
            assert_eq!(touches(packets, other_ip), 0, "{u} saw {other}'s address");
            assert!(
                !packets.iter().any(|p| p
                    .payload
                    .windows(other_ip.len())
                    .any(|w| w == other_ip.as_bytes())),
                "{u} received {other}'s address in a payload"
            );
        }
        assert!(
            udp_between(packets, ip, SFU) > 300,
            "{u}'s audio went through the unit"
        );
    }
    // The unit forwarded everything, and none of it decodes to a tone.
    let sfu = &caps["sfu"];
    let relayed = decode_relayed(sfu);
    for &tone in &TONES {
        // Plaintext would put a quarter of the energy at each tone; what
        // Opus makes of ciphertext is noise, with a few thousandths at any
        // one frequency.
        let p = presence(&relayed, tone);
        assert!(p < 0.02, "the unit's capture decodes to {tone} Hz ({p:.4})");
    }
    for (_, ip) in MEMBERS {
        assert!(udp_between(sfu, ip, SFU) > 300);
    }

    // What the operator keeps.
    let member_ips: Vec<&str> = MEMBERS.iter().map(|(_, ip)| *ip).collect();
    for (h, log) in [("srv", "srv.log"), ("sfu", "sfu.log")] {
        let text = std::fs::read_to_string(d.join(log)).unwrap();
        for needle in MEMBERS
            .iter()
            .map(|(u, _)| *u)
            .chain(member_ips.iter().copied())
            .chain(["team"])
        {
            assert!(
                !text.contains(needle),
                "{h}'s log mentions `{needle}`:\n{text}"
            );
        }
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("20")).collect();
        assert!(
            lines.iter().all(|l| {
                let l = l.to_lowercase();
                !l.contains("call") && !l.contains("room")
            }),
            "{h}'s log tells of a call:\n{}",
            lines.join("\n")
        );
    }
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        for needle in member_ips.iter().copied().chain(["team"]) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle}",
                entry.path().display()
            );
        }
    }
}
