//! The host's aggregate counters, served on its loopback metrics endpoint.
//! Nothing in them names a business, a customer or a message.

use std::sync::atomic::{AtomicU64, Ordering};

use umbra_daemon::metrics::{Render, write_metric};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything counted, over every business this host runs.
#[derive(Debug, Default)]
pub struct Metrics {
    /// API requests answered with a 2xx.
    pub api_ok: Counter,
    /// API requests answered with a 4xx.
    pub api_client_errors: Counter,
    /// API requests answered with a 5xx.
    pub api_server_errors: Counter,
    /// API requests refused by a rate limit.
    pub api_rate_limited: Counter,
    /// Messages queued through the API (repeats not counted).
    pub messages_accepted: Counter,
    /// Batches committed.
    pub batches: Counter,
    /// Conversations opened with customers new to a business.
    pub conversations_opened: Counter,
    /// Things that happened to a business's devices (messages, receipts).
    pub events_received: Counter,
    /// Webhooks the receiver took (2xx).
    pub webhooks_delivered: Counter,
    /// Webhook attempts that failed (to be retried).
    pub webhooks_failed: Counter,
    /// Webhooks given up after every attempt failed.
    pub webhooks_dropped: Counter,
}

impl Render for Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "umbra_business_api_ok_total",
                "API requests answered 2xx.",
                &self.api_ok,
            ),
            (
                "umbra_business_api_client_errors_total",
                "API requests answered 4xx.",
                &self.api_client_errors,
            ),
            (
                "umbra_business_api_server_errors_total",
                "API requests answered 5xx.",
                &self.api_server_errors,
            ),
            (
                "umbra_business_api_rate_limited_total",
                "API requests refused by a rate limit.",
                &self.api_rate_limited,
            ),
            (
                "umbra_business_messages_accepted_total",
                "Messages queued through the API.",
                &self.messages_accepted,
            ),
            (
                "umbra_business_batches_total",
                "Batches of messages committed.",
                &self.batches,
            ),
            (
                "umbra_business_conversations_opened_total",
                "Conversations opened with new customers.",
                &self.conversations_opened,
            ),
            (
                "umbra_business_events_received_total",
                "Messages and receipts received by the devices.",
                &self.events_received,
            ),
            (
                "umbra_business_webhooks_delivered_total",
                "Webhooks taken by their receiver.",
                &self.webhooks_delivered,
            ),
            (
                "umbra_business_webhooks_failed_total",
                "Webhook attempts that failed.",
                &self.webhooks_failed,
            ),
            (
                "umbra_business_webhooks_dropped_total",
                "Webhooks given up after every attempt.",
                &self.webhooks_dropped,
            ),
        ] {
            write_metric(&mut out, name, "counter", help, c.get());
        }
        out
    }
}
