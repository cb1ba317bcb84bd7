//! State shared by the connection tasks and the storage thread.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::IntroductionBudget;
use crate::metrics::Metrics;
use crate::routing::{MailboxCache, Registry};

/// Protocol limits announced to clients and enforced per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame.
    pub max_frame_bytes: u32,
    /// Largest sealed envelope.
    pub max_envelope_bytes: u32,
    /// Silence allowed before login.
    pub idle_timeout: Duration,
}

/// Everything a connection needs besides its socket.
pub struct Shared {
    /// Mailbox routing data.
    pub cache: MailboxCache,
    /// Online devices.
    pub registry: Registry,
    /// Aggregate counters.
    pub metrics: Arc<Metrics>,
    /// Introduction budgets.
    pub budget: IntroductionBudget,
    /// Protocol limits.
    pub limits: Limits,
}
