//! Aggregate counters, rendered as Prometheus text; `umbra_daemon::metrics`
//! serves them on loopback.
//!
//! Only counts: no label ever carries a username, client IP, peer address or port.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use umbra_daemon::metrics::write_family;
use umbra_turn::server::Discarded;

/// Why a packet was dropped (the `reason` label of `umbra_relay_packets_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The peer policy refused the destination.
    Policy,
    /// Over the allocation's bandwidth cap.
    Bandwidth,
    /// Not STUN or ChannelData, or a corrupt stream.
    Malformed,
    /// No allocation, permission or channel for it (late, spoofed or expired).
    NoState,
    /// A message class or indication the server does not take from clients.
    Unexpected,
    /// The socket or connection could not take it (buffer full).
    SendFailed,
}

const DROPS: [(DropReason, &str); 6] = [
    (DropReason::Policy, "policy"),
    (DropReason::Bandwidth, "bandwidth"),
    (DropReason::Malformed, "malformed"),
    (DropReason::NoState, "no_state"),
    (DropReason::Unexpected, "unexpected"),
    (DropReason::SendFailed, "send_failed"),
];

/// STUN error codes counted individually; anything else is `other`.
const CODES: [u16; 10] = [400, 401, 403, 420, 437, 438, 440, 441, 486, 508];

/// Relay-wide counters, shared by all workers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Allocations currently live.
    pub allocations_active: AtomicI64,
    /// Allocations created.
    pub allocations_created: AtomicU64,
    /// Allocations that ran out their lifetime.
    pub allocations_expired: AtomicU64,
    /// Allocations deleted by their client (Refresh 0, connection closed) or at shutdown.
    pub allocations_deleted: AtomicU64,
    /// Packets relayed from clients to peers.
    pub packets_to_peers: AtomicU64,
    /// Payload bytes relayed from clients to peers.
    pub bytes_to_peers: AtomicU64,
    /// Packets relayed from peers to clients.
    pub packets_to_clients: AtomicU64,
    /// Payload bytes relayed from peers to clients.
    pub bytes_to_clients: AtomicU64,
    /// TCP and TLS connections open.
    pub connections_open: AtomicI64,
    /// Connections refused at the cap or failing the TLS handshake.
    pub connections_refused: AtomicU64,
    /// Next ports reserved by EVEN-PORT with the R bit (RFC 8656 §7.2).
    pub reservations_made: AtomicU64,
    /// Reserved ports claimed by an Allocate with their RESERVATION-TOKEN.
    pub reservations_claimed: AtomicU64,
    /// Reserved ports released unclaimed after about 30 s.
    pub reservations_expired: AtomicU64,
    dropped: [AtomicU64; 6],
    errors: [AtomicU64; 11],
    /// The forwarding unit's counters (rendered with the relay's).
    pub unit: std::sync::Arc<crate::unit::UnitMetrics>,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a dropped packet.
    pub fn count_drop(&self, why: DropReason) {
        if let Some(i) = DROPS.iter().position(|(d, _)| *d == why) {
            inc(&self.dropped[i]);
        }
    }

    /// Packets dropped for `why` so far.
    pub fn drops(&self, why: DropReason) -> u64 {
        DROPS
            .iter()
            .position(|(d, _)| *d == why)
            .map_or(0, |i| self.dropped[i].load(Ordering::Relaxed))
    }

    /// Counts a packet the TURN server discarded.
    pub fn discarded(&self, d: &Discarded) {
        self.count_drop(match d {
            Discarded::Malformed(_) | Discarded::BadIndication => DropReason::Malformed,
            Discarded::PeerForbidden => DropReason::Policy,
            Discarded::Unexpected => DropReason::Unexpected,
            _ => DropReason::NoState,
        });
    }

    /// Counts an error response sent with STUN error `code`.
    pub fn error_response(&self, code: u16) {
        let i = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len());
        inc(&self.errors[i]);
    }

    /// Error responses sent with `code` so far (`401` includes the normal first challenge
    /// of every allocation).
    pub fn error_responses(&self, code: u16) -> u64 {
        let i = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len());
        self.errors[i].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let simple: [(&str, &str, &str, i128); 13] = [
            (
                "umbra_relay_allocations_active",
                "gauge",
                "Allocations live now.",
                g(&self.allocations_active).into(),
            ),
            (
                "umbra_relay_allocations_created_total",
                "counter",
                "Allocations created.",
                c(&self.allocations_created).into(),
            ),
            (
                "umbra_relay_allocations_expired_total",
                "counter",
                "Allocations reclaimed at the end of their lifetime.",
                c(&self.allocations_expired).into(),
            ),
            (
                "umbra_relay_allocations_deleted_total",
                "counter",
                "Allocations deleted by clients, closed connections or shutdown.",
                c(&self.allocations_deleted).into(),
            ),
            (
                "umbra_relay_connections_open",
                "gauge",
                "TCP and TLS client connections open.",
                g(&self.connections_open).into(),
            ),
            (
                "umbra_relay_connections_refused_total",
                "counter",
                "Connections refused at the cap or failing the TLS handshake.",
                c(&self.connections_refused).into(),
            ),
            (
                "umbra_relay_packets_to_peers_total",
                "counter",
                "Packets relayed from clients to peers.",
                c(&self.packets_to_peers).into(),
            ),
            (
                "umbra_relay_bytes_to_peers_total",
                "counter",
                "Payload bytes relayed from clients to peers.",
                c(&self.bytes_to_peers).into(),
            ),
            (
                "umbra_relay_packets_to_clients_total",
                "counter",
                "Packets relayed from peers to clients.",
                c(&self.packets_to_clients).into(),
            ),
            (
                "umbra_relay_bytes_to_clients_total",
                "counter",
                "Payload bytes relayed from peers to clients.",
                c(&self.bytes_to_clients).into(),
            ),
            (
                "umbra_relay_reservations_made_total",
                "counter",
                "Next ports reserved for a RESERVATION-TOKEN (EVEN-PORT with the R bit).",
                c(&self.reservations_made).into(),
            ),
            (
                "umbra_relay_reservations_claimed_total",
                "counter",
                "Reserved ports claimed with their RESERVATION-TOKEN.",
                c(&self.reservations_claimed).into(),
            ),
            (
                "umbra_relay_reservations_expired_total",
                "counter",
                "Reserved ports released unclaimed.",
                c(&self.reservations_expired).into(),
            ),
        ];
        for (name, kind, help, v) in simple {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        write_family(
            &mut out,
            "umbra_relay_packets_dropped_total",
            "Packets dropped, by reason.",
            "reason",
            DROPS
                .iter()
                .enumerate()
                .map(|(i, (_, reason))| (*reason, c(&self.dropped[i]))),
        );
        let codes: Vec<String> = CODES.iter().map(u16::to_string).collect();
        write_family(
            &mut out,
            "umbra_relay_error_responses_total",
            "STUN error responses sent, by code (401 includes each allocation's first challenge; 401 and 438 after that are authentication failures).",
            "code",
            codes
                .iter()
                .map(String::as_str)
                .chain(["other"])
                .zip(self.errors.iter().map(c)),
        );
        self.unit.render_into(&mut out);
        out
    }
}

impl umbra_daemon::Render for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_only() {
        let m = Metrics::default();
        m.count_drop(DropReason::Bandwidth);
        m.error_response(401);
        m.error_response(999);
        let text = m.render();
        assert!(text.contains("umbra_relay_packets_dropped_total{reason=\"bandwidth\"} 1"));
        assert!(text.contains("umbra_relay_error_responses_total{code=\"401\"} 1"));
        assert!(text.contains("umbra_relay_error_responses_total{code=\"other\"} 1"));
        assert_eq!(m.drops(DropReason::Bandwidth), 1);
    }
}
