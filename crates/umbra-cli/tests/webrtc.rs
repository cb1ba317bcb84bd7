//! A real browser through the real relay: headless Chromium with two
//! RTCPeerConnections (`iceTransportPolicy: "relay"`, only `umbra relay` as
//! ICE server) runs a data-channel round trip and fake-device audio, and
//! checks through getStats() and the SDPs that only relay candidates exist
//! and that the selected pair is relay on both ends. The harness lives in
//! tests/webrtc/ (playwright-core driving Debian's chromium); this test runs
//! it against the binary under test, over UDP and over TCP.

use std::path::PathBuf;
use std::process::Command;

fn run(transport_flag: Option<&str>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/webrtc/with-umbra-relay.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if let Some(flag) = transport_flag {
        cmd.arg(flag);
    }
    let out = cmd
        .env("UMBRA_BIN", env!("CARGO_BIN_EXE_umbra"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed (needs chromium, node >= 20 and npm: scripts/test.sh installs them)\n\
         stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json = stdout.find('{').map(|i| &stdout[i..]).unwrap_or("{}");
    let verdict: serde_json::Value = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("the driver printed no JSON verdict ({e}):\n{stdout}"));
    assert_eq!(verdict["ok"], true, "{verdict}");
    let checks = verdict["checks"].as_array().expect("checks");
    assert!(checks.len() >= 10, "{verdict}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{verdict}");
}

#[test]
fn chromium_calls_through_umbra_relay_over_udp_with_relay_candidates_only() {
    run(None);
}

#[test]
fn chromium_calls_through_umbra_relay_over_tcp() {
    run(Some("--tcp"));
}
