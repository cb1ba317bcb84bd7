//! Separate hosts for process-level tests: network namespaces on one
//! bridge (made by the test, deleted on drop), `umbra` run on a host,
//! tcpdump captures read back as IPv4 packets, and what an observer does
//! with them (who talked to whom, decoding what a relay carried).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bin;

pub fn sh(args: &[&str]) {
    let s = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(s.success(), "{args:?} failed");
}

/// The namespaces of one test run, deleted on drop.
pub struct Net {
    tag: String,
    names: Vec<String>,
    /// What [`Net::spawn`] started, by the index it returned.
    pub children: Vec<Child>,
}

impl Net {
    pub fn new() -> Net {
        let tag = format!("u{}", std::process::id() % 100_000);
        let sw = format!("{tag}sw");
        sh(&["ip", "netns", "add", &sw]);
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        Net {
            tag,
            names: vec![sw],
            children: Vec::new(),
        }
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.tag)
    }

    /// A host on the switch with `ip`/24 on its eth0.
    pub fn host(&mut self, host: &str, ip: &str) {
        let ns = self.ns(host);
        let sw = &self.names[0];
        let (a, b) = (format!("{ns}a"), format!("{ns}b"));
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        sh(&["ip", "link", "set", &a, "netns", &ns]);
        sh(&["ip", "link", "set", &b, "netns", sw]);
        sh(&["ip", "-n", &ns, "link", "set", &a, "name", "eth0"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", sw, "link", "set", &b, "master", "br0"]);
        sh(&["ip", "-n", sw, "link", "set", &b, "up"]);
        self.names.push(ns);
    }

    /// `umbra ARGS` on `host`, in the background, output to `log`.
    pub fn spawn(&mut self, host: &str, args: &[&str], log: &Path) -> usize {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(bin())
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("UMBRA_PROFILE")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// `umbra ARGS` on `host`, waited for; (success, stdout, stderr).
    pub fn run(&self, host: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(bin())
            .args(args)
            .env_remove("UMBRA_PROFILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, host: &str, args: &[&str]) -> String {
        let (ok, out, err) = self.run(host, args);
        assert!(ok, "umbra {args:?} on {host} failed:\n{out}\n{err}");
        out
    }

    /// Starts tcpdump on `host`'s eth0.
    pub fn capture(&mut self, host: &str, file: &Path) -> Capture {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "tcpdump",
                "-i",
                "eth0",
                "-n",
                "-U",
                "-s",
                "0",
            ])
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Capture {
            child,
            file: file.to_path_buf(),
        }
    }

    pub fn stop(&mut self, index: usize) {
        let c = &mut self.children[index];
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        super::wait_timeout(c, Duration::from_secs(15));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

pub struct Capture {
    child: Child,
    file: PathBuf,
}

/// One IPv4 packet of a capture.
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub udp: bool,
    pub payload: Vec<u8>,
}

impl Capture {
    /// Stops tcpdump and reads what it wrote.
    pub fn finish(mut self) -> Vec<Packet> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        super::wait_timeout(&mut self.child, Duration::from_secs(10));
        parse_pcap(&std::fs::read(&self.file).unwrap())
    }
}

/// A classic pcap file (Ethernet frames) as IPv4 packets.
pub fn parse_pcap(b: &[u8]) -> Vec<Packet> {
    assert!(
        b.len() >= 24 && b[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "not a pcap file"
    );
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let len = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap()) as usize;
        let frame = &b[i + 16..(i + 16 + len).min(b.len())];
        i += 16 + len;
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let udp = ip[9] == 17;
        let payload = if udp && ip.len() >= ihl + 8 {
            ip[ihl + 8..].to_vec()
        } else {
            Vec::new()
        };
        out.push(Packet {
            src,
            dst,
            udp,
            payload,
        });
    }
    out
}

pub fn touches(packets: &[Packet], ip: &str) -> usize {
    let ip: Ipv4Addr = ip.parse().unwrap();
    packets
        .iter()
        .filter(|p| p.src == ip || p.dst == ip)
        .count()
}

pub fn udp_between(packets: &[Packet], a: &str, b: &str) -> usize {
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse().unwrap(), b.parse().unwrap());
    packets
        .iter()
        .filter(|p| p.udp && ((p.src == a && p.dst == b) || (p.src == b && p.dst == a)))
        .count()
}

pub fn peers(packets: &[Packet], me: &str) -> BTreeSet<String> {
    let me: Ipv4Addr = me.parse().unwrap();
    packets
        .iter()
        .flat_map(|p| [p.src, p.dst])
        .filter(|a| *a != me)
        .map(|a| a.to_string())
        .collect()
}

pub fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap();
    bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// What a relay operator could try: take every media payload it forwarded,
/// strip the RTP header, and decode it as Opus.
pub fn decode_relayed(packets: &[Packet]) -> Vec<i16> {
    let mut dec = umbra_call::codec::Decoder::new().unwrap();
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| p.udp) {
        let mut d = p.payload.as_slice();
        // ChannelData header (0x40..0x7f), as the clients' legs carry it.
        if d.len() > 4 && (0x40..0x80).contains(&d[0]) {
            d = &d[4..];
        }
        if d.len() > 12 && d[0] & 0xc0 == 0x80 && (d[1] & 0x7f) >= 96 {
            let cc = usize::from(d[0] & 0x0f);
            let mut off = 12 + 4 * cc;
            if d[0] & 0x10 != 0 && d.len() > off + 4 {
                let words = usize::from(u16::from_be_bytes([d[off + 2], d[off + 3]]));
                off += 4 + 4 * words;
            }
            if d.len() > off {
                out.extend_from_slice(&dec.decode(&d[off..]));
            }
        }
    }
    out
}

pub fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
