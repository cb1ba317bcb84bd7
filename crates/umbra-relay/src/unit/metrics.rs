//! The forwarding unit's aggregate counters, rendered into the relay's
//! Prometheus endpoint. Counts only: no room, no address, no credential.

use std::sync::atomic::{AtomicU64, Ordering};

use umbra_daemon::metrics::{write_family, write_metric};
use umbra_sfu::SfuStats;

/// Counters the unit's task and its control connections keep.
#[derive(Debug, Default)]
pub struct UnitMetrics {
    members: AtomicU64,
    rooms: AtomicU64,
    joins: AtomicU64,
    refused: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    unknown_source: AtomicU64,
    rate_limited: AtomicU64,
    oversize: AtomicU64,
    send_failed: AtomicU64,
    control_open: AtomicU64,
    control_refused: AtomicU64,
}

impl UnitMetrics {
    /// Copies the unit's own counts.
    pub(crate) fn update(&self, s: &SfuStats) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.members, s.peers);
        set(&self.rooms, s.rooms);
        set(&self.joins, s.joins);
        set(&self.refused, s.refused);
        set(&self.frames_in, s.frames_in);
        set(&self.frames_out, s.frames_out);
        set(&self.bytes_out, s.bytes_out);
        set(&self.unknown_source, s.unknown_source);
        set(&self.rate_limited, s.rate_limited);
        set(&self.oversize, s.oversize);
    }

    pub(crate) fn count_send_failed(&self) {
        self.send_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn control_opened(&self) {
        self.control_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn control_closed(&self) {
        self.control_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn count_control_refused(&self) {
        self.control_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Members in rooms now.
    pub fn members(&self) -> u64 {
        self.members.load(Ordering::Relaxed)
    }

    /// Frames dropped for their sender's rate.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text of every counter.
    pub fn render_into(&self, out: &mut String) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "umbra_unit_members",
                "gauge",
                "Group call connections in rooms now.",
                &self.members,
            ),
            (
                "umbra_unit_rooms",
                "gauge",
                "Rooms with anyone in them now.",
                &self.rooms,
            ),
            (
                "umbra_unit_joins_total",
                "counter",
                "Joins accepted.",
                &self.joins,
            ),
            (
                "umbra_unit_joins_refused_total",
                "counter",
                "Joins refused (credential, limits, offer).",
                &self.refused,
            ),
            (
                "umbra_unit_frames_in_total",
                "counter",
                "Frames received from members.",
                &self.frames_in,
            ),
            (
                "umbra_unit_frames_out_total",
                "counter",
                "Frames forwarded to members.",
                &self.frames_out,
            ),
            (
                "umbra_unit_bytes_out_total",
                "counter",
                "Bytes of frames forwarded.",
                &self.bytes_out,
            ),
            (
                "umbra_unit_send_failed_total",
                "counter",
                "Datagrams the socket could not take (dropped).",
                &self.send_failed,
            ),
            (
                "umbra_unit_control_connections",
                "gauge",
                "Control connections open.",
                &self.control_open,
            ),
            (
                "umbra_unit_control_refused_total",
                "counter",
                "Control connections refused at the cap or failing the handshake.",
                &self.control_refused,
            ),
        ];
        for (name, kind, help, a) in rows {
            write_metric(out, name, kind, help, v(a));
        }
        write_family(
            out,
            "umbra_unit_dropped_total",
            "Datagrams and frames the unit dropped, by reason.",
            "reason",
            [
                ("unknown_source", v(&self.unknown_source)),
                ("rate_limited", v(&self.rate_limited)),
                ("oversize", v(&self.oversize)),
            ],
        );
    }
}
