//! Interop with a TURN client nobody here wrote: coturn's `turnutils_uclient` (Debian
//! package `coturn`) in client-to-client mode (`-y`) against our relay over UDP, TCP and
//! TLS, with TURN REST credentials. Every message must arrive: 0 lost.
//!
//! Without `-c` (its default) uclient runs RTP/RTCP pairs: it allocates with EVEN-PORT and
//! the R bit, then allocates the reserved next port from another socket with the
//! RESERVATION-TOKEN it got (RFC 8656 §7.2); with `-c` it sometimes sends EVEN-PORT
//! without R and never reserves.
//!
//! The `-y` clients relay to each other's relayed addresses, which the closed-world policy
//! allows: no allowlist is configured here.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{creds, start};

const UCLIENT: &str = "turnutils_uclient";

fn require_uclient() {
    let found = std::process::Command::new(UCLIENT)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{UCLIENT} not found: install coturn's client tools (`apt-get install -y coturn`); \
         this interop test must not be skipped"
    );
}

/// Runs uclient with `flags` against `port`; returns (sent, lost) parsed from its output.
async fn uclient(flags: &[&str], port: u16) -> (u64, u64, String) {
    let (user, pass) = creds("uclient", 3600);
    let port = port.to_string();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend_from_slice(&[
        "-y",
        "-m",
        "5",
        "-l",
        "170",
        "-n",
        "50",
        "-z",
        "5",
        "-u",
        &user,
        "-w",
        &pass,
        "-p",
        &port,
        "127.0.0.1",
    ]);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(UCLIENT)
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("turnutils_uclient finished within 60 s")
    .expect("turnutils_uclient ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let number_after = |key: &str| -> Option<u64> {
        text.lines()
            .filter_map(|l| l.split_once(key).map(|(_, rest)| rest.trim_start()))
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .next_back()
    };
    let lost = number_after("Total lost packets")
        .unwrap_or_else(|| panic!("no loss line:\n{text}\nargs: {args:?}"));
    let sent = number_after("tot_send_msgs=").unwrap_or(0);
    let received = number_after("tot_recv_msgs=").unwrap_or(0);
    assert_eq!(sent, received, "sent {sent}, received {received}:\n{text}");
    (sent, lost, text)
}

async fn interop(flags: &[&str], tls: bool, tcp: bool) {
    let rtcp = !flags.contains(&"-c");
    require_uclient();
    let mut cfg = common::config();
    cfg.user_quota = 100;
    let relay = start(cfg).await;
    let port = if tls {
        relay.tls.port()
    } else if tcp {
        relay.tcp.port()
    } else {
        relay.udp.port()
    };
    let (sent, lost, text) = uclient(flags, port).await;
    assert_eq!(lost, 0, "messages lost:\n{text}");
    // uclient's own totals for `-m 5 -n 50`, RTCP sessions included.
    let expected = if rtcp { 8 * 50 } else { 6 * 50 };
    assert_eq!(sent, expected, "every client sent its messages:\n{text}");
    let m = &relay.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let relayed = load(&m.packets_to_peers);
    assert!(
        relayed >= 5 * 50,
        "relay forwarded only {relayed} packets:\n{text}"
    );
    assert_eq!(m.error_responses(508), 0, "508 sent:\n{text}");
    let (made, claimed) = (load(&m.reservations_made), load(&m.reservations_claimed));
    if rtcp {
        // Each of the 5 clients' RTCP allocations claims its RTP allocation's reservation.
        assert!(claimed >= 5, "{claimed} reservations claimed:\n{text}");
        assert!(made >= claimed, "{made} made, {claimed} claimed");
    } else {
        assert_eq!((made, claimed), (0, 0));
    }
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_udp() {
    interop(&["-c"], false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tcp() {
    interop(&["-c", "-t"], false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tls() {
    interop(&["-c", "-t", "-S"], true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_default_rtp_rtcp_over_udp() {
    interop(&[], false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_default_rtp_rtcp_over_tcp() {
    interop(&["-t"], false, true).await;
}
