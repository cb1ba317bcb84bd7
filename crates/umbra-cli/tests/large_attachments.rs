//! A 200 MiB file through the real binaries, the server SIGKILLed in the
//! middle of its upload and again in the middle of its download: the crash
//! leaves no blob anyone can fetch, both transfers resume by themselves
//! once the server is back, the file arrives byte for byte, and neither
//! client's memory grows with the file.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProc, command, ok};
use sha2::{Digest, Sha256};

const SIZE: u64 = 200 << 20;

/// The peak resident memory of a running process so far, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn digest_of(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Runs a transfer command; once its progress passes 25%, `at_quarter`
/// runs (it kills and restarts the server). Returns the exit status, the
/// stderr lines and the peak memory seen.
fn transfer(
    mut child: Child,
    mut at_quarter: impl FnMut(),
) -> (std::process::ExitStatus, Vec<String>, u64) {
    let pid = child.id();
    let lines = common::lines_of(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let mut peak = 0;
    let mut fired = false;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(kib) = peak_kib(pid) {
            peak = peak.max(kib);
        }
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                let pct = line
                    .split(": ")
                    .nth(1)
                    .and_then(|r| r.split('%').next())
                    .and_then(|n| n.parse::<u32>().ok());
                if !fired && pct.is_some_and(|p| (25..90).contains(&p)) {
                    fired = true;
                    at_quarter();
                }
                seen.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        assert!(Instant::now() < deadline, "transfer hung: {seen:?}");
    }
    let status = common::wait_timeout(&mut child, Duration::from_secs(60));
    assert!(fired, "the transfer never reported 25-90%: {seen:?}");
    (status, seen, peak)
}

/// Checks a transfer finished, said it resumed, and held far less memory
/// than the file; returns what it said.
fn resumed_in_flat_memory(
    who: &str,
    (status, said, peak): (std::process::ExitStatus, Vec<String>, u64),
) -> Vec<String> {
    assert!(status.success(), "{who}: {said:?}");
    assert!(
        said.iter().any(|l| l.contains("interrupted; resuming")),
        "{who}: {said:?}"
    );
    eprintln!("{who} peak memory: {peak} KiB");
    assert!(
        peak < 120 * 1024,
        "the {who} held {peak} KiB for a 200 MiB file"
    );
    said
}

#[test]
fn a_200_mib_file_survives_server_crashes_in_flat_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    let data = p("server");
    let log = p("server.log");
    let mut server = Some(ServerProc::start(&data, "127.0.0.1:0", &log));
    let listen = server.as_ref().expect("server").listen.clone();
    let invite = server.as_ref().expect("server").invite.clone();
    for user in ["alice", "bob"] {
        common::register(&p(user), &invite, user);
    }
    // 200 MiB that compress to nothing useful and repeat nowhere.
    let big = p("archive.tar");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).expect("file"));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..SIZE / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all(&x.to_le_bytes()).expect("write");
        }
    }
    let want = digest_of(&big);

    // Upload; the server dies at a quarter and comes back on the same port.
    let blobs = data.join("blobs");
    let mut crash_and_restart = || {
        if let Some(s) = server.take() {
            s.kill();
        }
        // The crash left the upload partial: nothing complete to fetch.
        assert_eq!(count(&blobs.join("done")), 0, "a half blob became visible");
        std::thread::sleep(Duration::from_millis(300));
        server = Some(ServerProc::start(&data, &listen, &log));
    };
    let sender = command(&p("alice"))
        .args(["send", "bob", "--file"])
        .arg(&big)
        .arg("the whole archive")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send");
    let said = resumed_in_flat_memory("sender", transfer(sender, &mut crash_and_restart));
    assert!(
        said.iter().any(|l| l.starts_with("uploading: 100%")),
        "{said:?}"
    );
    assert_eq!(count(&blobs.join("done")), 2, "one blob and its record");
    assert_eq!(count(&blobs.join("partial")), 0);

    // Bob gets the message (200 MiB is above what is fetched on arrival),
    // then saves it; the server dies again a quarter in.
    ok(&p("bob"), &["sync"]);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&p("bob"), &["--json", "attachments"])).expect("json");
    assert_eq!(listed[0]["state"], "waiting", "{listed:?}");
    let id = listed[0]["id"].as_str().expect("id").to_string();
    let saved = p("bob-archive.tar");
    let receiver = command(&p("bob"))
        .args(["save", &id])
        .arg(&saved)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("save");
    let mut crash_and_restart = || {
        if let Some(s) = server.take() {
            s.kill();
        }
        assert!(!saved.exists(), "the file appears whole or not at all");
        std::thread::sleep(Duration::from_millis(300));
        server = Some(ServerProc::start(&data, &listen, &log));
    };
    resumed_in_flat_memory("receiver", transfer(receiver, &mut crash_and_restart));
    assert_eq!(digest_of(&saved), want, "byte for byte");
    // Nothing of the download is left beside the file.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part") || n.contains(".opening"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(server);
}
