//! Aggregate counters, rendered as Prometheus text; `umbra_daemon::metrics`
//! serves them on loopback.
//!
//! Only counts: no label ever carries a user, device, mailbox or address.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open.
    pub connections_open: AtomicI64,
    /// Connections refused because the cap was reached.
    pub connections_refused: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Accounts registered.
    pub registrations: AtomicU64,
    /// Devices linked to an existing account.
    pub devices_linked: AtomicU64,
    /// Devices unlinked from their account.
    pub devices_unlinked: AtomicU64,
    /// Envelopes durably stored.
    pub envelopes_accepted: AtomicU64,
    /// Deliver frames sent.
    pub envelopes_delivered: AtomicU64,
    /// Envelopes deleted by acknowledgements.
    pub envelopes_acked: AtomicU64,
    /// Envelopes deleted by expiry.
    pub envelopes_expired: AtomicU64,
    /// Envelopes accepted without a valid delivery token.
    pub introductions: AtomicU64,
    /// Frames refused (malformed, oversize, undecryptable).
    pub frames_rejected: AtomicU64,
    /// Envelopes currently stored.
    pub envelopes_stored: AtomicI64,
    /// Storage transactions committed.
    pub storage_batches: AtomicU64,
    /// Relay credentials handed out.
    pub relay_credentials: AtomicU64,
    /// Online-only envelopes handed to a connected device.
    pub live_delivered: AtomicU64,
    /// Online-only envelopes held in memory for a device not connected.
    pub live_held: AtomicU64,
    /// Online-only envelopes dropped for lack of room.
    pub live_dropped: AtomicU64,
    /// Wake-up hints published to the other nodes.
    pub bus_hints: AtomicU64,
    /// Hints heard that woke a connection here.
    pub bus_wakes: AtomicU64,
    /// Times the NATS connection was made (first time included).
    pub bus_reconnects: AtomicU64,
    /// Hints that could not be published (the sweep carries the mail).
    pub bus_publish_failures: AtomicU64,
    /// Connections the sweep found behind their mailbox.
    pub sweep_wakes: AtomicU64,
    /// Sessions closed because the device logged in again (here or on
    /// another node).
    pub sessions_superseded: AtomicU64,
    /// Group epochs claimed (a commit won).
    pub epochs_won: AtomicU64,
    /// Epoch claims that lost to another commit.
    pub epochs_lost: AtomicU64,
    /// Attachment blobs created.
    pub blobs_created: AtomicU64,
    /// Attachment bytes received.
    pub blob_bytes_received: AtomicU64,
    /// Attachment bytes sent to downloaders.
    pub blob_bytes_sent: AtomicU64,
    /// Attachment blobs deleted by expiry.
    pub blobs_expired: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut put = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).to_string();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        put(
            "umbra_connections_open",
            "gauge",
            "Client connections open.",
            g(&self.connections_open),
        );
        put(
            "umbra_connections_refused_total",
            "counter",
            "Connections refused at the cap.",
            c(&self.connections_refused),
        );
        put(
            "umbra_logins_total",
            "counter",
            "Successful logins.",
            c(&self.logins),
        );
        put(
            "umbra_registrations_total",
            "counter",
            "Accounts registered.",
            c(&self.registrations),
        );
        put(
            "umbra_devices_linked_total",
            "counter",
            "Devices linked to an existing account.",
            c(&self.devices_linked),
        );
        put(
            "umbra_devices_unlinked_total",
            "counter",
            "Devices unlinked from their account.",
            c(&self.devices_unlinked),
        );
        put(
            "umbra_blobs_created_total",
            "counter",
            "Attachment blobs created.",
            c(&self.blobs_created),
        );
        put(
            "umbra_blob_bytes_received_total",
            "counter",
            "Attachment bytes received.",
            c(&self.blob_bytes_received),
        );
        put(
            "umbra_blob_bytes_sent_total",
            "counter",
            "Attachment bytes sent to downloaders.",
            c(&self.blob_bytes_sent),
        );
        put(
            "umbra_blobs_expired_total",
            "counter",
            "Attachment blobs deleted by expiry.",
            c(&self.blobs_expired),
        );
        put(
            "umbra_envelopes_accepted_total",
            "counter",
            "Envelopes durably stored.",
            c(&self.envelopes_accepted),
        );
        put(
            "umbra_envelopes_delivered_total",
            "counter",
            "Envelopes pushed to devices.",
            c(&self.envelopes_delivered),
        );
        put(
            "umbra_envelopes_acked_total",
            "counter",
            "Envelopes deleted after acknowledgement.",
            c(&self.envelopes_acked),
        );
        put(
            "umbra_envelopes_expired_total",
            "counter",
            "Envelopes deleted by expiry.",
            c(&self.envelopes_expired),
        );
        put(
            "umbra_introductions_total",
            "counter",
            "Envelopes accepted without a delivery token.",
            c(&self.introductions),
        );
        put(
            "umbra_frames_rejected_total",
            "counter",
            "Malformed or oversize frames.",
            c(&self.frames_rejected),
        );
        put(
            "umbra_envelopes_stored",
            "gauge",
            "Envelopes waiting in mailboxes.",
            g(&self.envelopes_stored),
        );
        put(
            "umbra_storage_batches_total",
            "counter",
            "Storage transactions committed.",
            c(&self.storage_batches),
        );
        put(
            "umbra_live_envelopes_delivered_total",
            "counter",
            "Online-only envelopes handed to a connected device.",
            c(&self.live_delivered),
        );
        put(
            "umbra_live_envelopes_held_total",
            "counter",
            "Online-only envelopes held in memory for a device not connected.",
            c(&self.live_held),
        );
        put(
            "umbra_live_envelopes_dropped_total",
            "counter",
            "Online-only envelopes dropped for lack of room.",
            c(&self.live_dropped),
        );
        put(
            "umbra_relay_credentials_total",
            "counter",
            "Call relay credentials handed out.",
            c(&self.relay_credentials),
        );
        for (name, help, v) in [
            (
                "umbra_bus_hints_total",
                "Wake-up hints published to the other nodes.",
                &self.bus_hints,
            ),
            (
                "umbra_bus_wakes_total",
                "Hints heard that woke a connection here.",
                &self.bus_wakes,
            ),
            (
                "umbra_bus_connects_total",
                "NATS connections made (the first included).",
                &self.bus_reconnects,
            ),
            (
                "umbra_bus_publish_failures_total",
                "Hints that could not be published.",
                &self.bus_publish_failures,
            ),
            (
                "umbra_sweep_wakes_total",
                "Connections the sweep found behind their mailbox.",
                &self.sweep_wakes,
            ),
            (
                "umbra_sessions_superseded_total",
                "Sessions closed by a later login of their device.",
                &self.sessions_superseded,
            ),
            (
                "umbra_epochs_won_total",
                "Group epoch claims won by a commit.",
                &self.epochs_won,
            ),
            (
                "umbra_epochs_lost_total",
                "Group epoch claims that lost to another commit (a concurrent change).",
                &self.epochs_lost,
            ),
        ] {
            put(name, "counter", help, c(v));
        }
        out
    }
}

impl umbra_daemon::Render for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
}
