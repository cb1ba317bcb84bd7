//! Aggregate counters, served as Prometheus text on loopback. No per-client
//! data exists here: no addresses, no per-connection labels.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The proxy's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections refused at the limit.
    pub refused: AtomicU64,
    /// Admitted to the messaging server.
    pub admitted_messaging: AtomicU64,
    /// Admitted to the call relay.
    pub admitted_relay: AtomicU64,
    /// Served as web visitors (no valid proof).
    pub turned_away: AtomicU64,
    /// Of those: a valid tag but a stale timestamp.
    pub stale: AtomicU64,
    /// Of those: a replayed nonce.
    pub replayed: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// Upstream connections that failed.
    pub upstream_failures: AtomicU64,
    /// Connections closed for idleness.
    pub idle_closed: AtomicU64,
    /// Bytes from clients to upstreams.
    pub bytes_up: AtomicU64,
    /// Bytes from upstreams to clients.
    pub bytes_down: AtomicU64,
    /// Of all bytes forwarded, those moved without a copy (splice).
    pub bytes_spliced: AtomicU64,
    /// Certificates obtained over ACME.
    pub acme_issued: AtomicU64,
    /// ACME attempts that failed.
    pub acme_failures: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, String); 16] = [
            (
                "umbra_proxy_connections_total",
                "counter",
                "Connections accepted.",
                c(&self.connections).to_string(),
            ),
            (
                "umbra_proxy_connections_open",
                "gauge",
                "Connections open.",
                self.open.load(Ordering::Relaxed).to_string(),
            ),
            (
                "umbra_proxy_connections_refused_total",
                "counter",
                "Connections refused at the limit.",
                c(&self.refused).to_string(),
            ),
            (
                "umbra_proxy_admitted_messaging_total",
                "counter",
                "Connections admitted to the messaging server.",
                c(&self.admitted_messaging).to_string(),
            ),
            (
                "umbra_proxy_admitted_relay_total",
                "counter",
                "Connections admitted to the call relay.",
                c(&self.admitted_relay).to_string(),
            ),
            (
                "umbra_proxy_turned_away_total",
                "counter",
                "Connections served the decoy site.",
                c(&self.turned_away).to_string(),
            ),
            (
                "umbra_proxy_stale_total",
                "counter",
                "Admission proofs with a stale timestamp.",
                c(&self.stale).to_string(),
            ),
            (
                "umbra_proxy_replayed_total",
                "counter",
                "Admission proofs replayed.",
                c(&self.replayed).to_string(),
            ),
            (
                "umbra_proxy_tls_failures_total",
                "counter",
                "Failed TLS handshakes.",
                c(&self.tls_failures).to_string(),
            ),
            (
                "umbra_proxy_upstream_failures_total",
                "counter",
                "Failed upstream connections.",
                c(&self.upstream_failures).to_string(),
            ),
            (
                "umbra_proxy_idle_closed_total",
                "counter",
                "Connections closed for idleness.",
                c(&self.idle_closed).to_string(),
            ),
            (
                "umbra_proxy_bytes_up_total",
                "counter",
                "Bytes forwarded from clients.",
                c(&self.bytes_up).to_string(),
            ),
            (
                "umbra_proxy_bytes_down_total",
                "counter",
                "Bytes forwarded to clients.",
                c(&self.bytes_down).to_string(),
            ),
            (
                "umbra_proxy_bytes_spliced_total",
                "counter",
                "Bytes forwarded without a copy through the proxy (splice).",
                c(&self.bytes_spliced).to_string(),
            ),
            (
                "umbra_proxy_acme_issued_total",
                "counter",
                "Certificates obtained over ACME.",
                c(&self.acme_issued).to_string(),
            ),
            (
                "umbra_proxy_acme_failures_total",
                "counter",
                "ACME attempts that failed.",
                c(&self.acme_failures).to_string(),
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        out
    }
}

impl umbra_daemon::Render for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}
