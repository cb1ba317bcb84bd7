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
    /// Link slots filled this minute.
    pub slots: crate::devices::SlotBudget,
    /// Attachment blobs.
    pub blobs: crate::blobs::Blobs,
    /// Protocol limits.
    pub limits: Limits,
    /// Call relay credentials, when a relay is configured.
    pub relay: Option<RelayCredentialIssuer>,
    /// The key business verifications are signed with (the invite's `sign`).
    pub sign: ed25519_dalek::SigningKey,
    /// The bus to the other nodes, when this node is one of several.
    pub bus: std::sync::OnceLock<Arc<crate::cluster::Bus>>,
    /// Other nodes may store into this node's mailboxes (a shared
    /// PostgreSQL database). A mailbox's envelopes are then numbered one
    /// after another, so a push that skips a number means another node
    /// stored the ones between: they are read from the database before the
    /// push is delivered, or the connection's cursor would pass them by.
    pub shared_database: bool,
}

/// Hands out TURN REST credentials for the call relay.
pub struct RelayCredentialIssuer {
    /// Secret shared with the relay.
    pub secret: Vec<u8>,
    /// TURN URLs given to clients.
    pub urls: Vec<String>,
    /// Credential lifetime.
    pub ttl: Duration,
    /// The forwarding unit's link (empty: none).
    pub unit: String,
}

impl std::fmt::Debug for RelayCredentialIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCredentialIssuer")
            .field("urls", &self.urls)
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl RelayCredentialIssuer {
    /// Credentials valid for `ttl` from `now_unix`, with a fresh random token
    /// as the name part (never the account name).
    pub fn issue(&self, now_unix: u64) -> umbra_wire::proto::RelayCredentials {
        let mut token = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
        let token = hex::encode(token);
        let (username, password) = umbra_turn::credentials::rest::credentials(
            &self.secret,
            now_unix + self.ttl.as_secs(),
            &token,
        );
        umbra_wire::proto::RelayCredentials {
            username,
            password,
            ttl_secs: u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX),
            urls: self.urls.clone(),
            unit: self.unit.clone(),
        }
    }
}
