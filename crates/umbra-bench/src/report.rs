//! What a bench run measured.

use std::fmt;
use std::time::Duration;

/// Phase 1 results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThroughputReport {
    /// Envelopes delivered to receivers.
    pub delivered: u64,
    /// Sends the server refused.
    pub send_errors: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Delivered envelopes per second.
    pub per_second: f64,
    /// Median end-to-end latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile end-to-end latency, milliseconds.
    pub p99_ms: f64,
    /// Largest end-to-end latency, milliseconds.
    pub max_ms: f64,
    /// Whether the deadline cut the run short.
    pub timed_out: bool,
    /// With several nodes: what crossed between them.
    pub across_nodes: Option<AcrossNodes>,
}

/// Messages whose sender and receiver were on different nodes: the delay
/// includes the wake-up over the bus.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AcrossNodes {
    /// Nodes loaded.
    pub nodes: usize,
    /// Messages that crossed.
    pub delivered: u64,
    /// Their median delay, milliseconds.
    pub p50_ms: f64,
    /// Their 99th percentile delay, milliseconds.
    pub p99_ms: f64,
}

/// Phase 2 results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryReport {
    /// Logged-in idle connections opened.
    pub connections: usize,
    /// Server RSS before, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with the connections open, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connections, bytes.
    pub bytes_per_connection: u64,
    /// Sessions registered and logged in a second while opening them.
    pub logins_per_second: f64,
}

/// Both phases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Phase 1.
    pub throughput: ThroughputReport,
    /// Phase 2, if run.
    pub memory: Option<MemoryReport>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.throughput;
        writeln!(
            f,
            "delivered {} envelopes in {:.2}s: {:.0} msg/s{}",
            t.delivered,
            t.elapsed.as_secs_f64(),
            t.per_second,
            if t.timed_out {
                " (deadline reached)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "end-to-end latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; refused sends: {}",
            t.p50_ms, t.p99_ms, t.max_ms, t.send_errors
        )?;
        if let Some(a) = &t.across_nodes {
            writeln!(
                f,
                "across {} nodes: {} messages crossed, p50 {:.2} ms, p99 {:.2} ms",
                a.nodes, a.delivered, a.p50_ms, a.p99_ms
            )?;
        }
        match &self.memory {
            Some(m) => writeln!(
                f,
                "server memory: {} idle logged-in connections, RSS {} KiB -> {} KiB, {} bytes ({:.1} KiB) per connection; {:.0} registrations and logins/s",
                m.connections,
                m.rss_before_kib,
                m.rss_after_kib,
                m.bytes_per_connection,
                m.bytes_per_connection as f64 / 1024.0,
                m.logins_per_second
            ),
            None => writeln!(f, "server memory: not measured (give --server-pid)"),
        }
    }
}
