//! Server configuration: realm, lifetimes, quotas, accepted password algorithms. Plain
//! values; loading them from a file is the daemon's job.

use std::time::Duration;

use crate::attribute::{AddressFamily, PasswordAlgorithm};

/// Settings of a [`super::Server`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The REALM sent to clients and used in key derivation.
    pub realm: String,
    /// SOFTWARE attribute to include in responses, if any.
    pub software: Option<String>,
    /// Secret keying the stateless nonces. Use fresh random bytes per process start.
    pub nonce_secret: [u8; 32],
    /// How long a nonce stays valid before 438 Stale Nonce (default 10 min).
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (default 3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Maximum simultaneous allocations per username (486 beyond).
    pub user_quota: usize,
    /// Maximum simultaneous allocations in total (508 beyond).
    pub total_quota: usize,
    /// Maximum permissions per allocation (508 beyond), bounding memory per client.
    pub max_permissions: usize,
    /// Password algorithms offered, in preference order. With only MD5 (the default) the
    /// server behaves like an RFC 5389 server (what browsers expect); adding SHA-256 turns
    /// on RFC 8489 PASSWORD-ALGORITHMS negotiation through the nonce cookie.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// Relay address families the daemon can allocate.
    pub relay_families: Vec<AddressFamily>,
    /// Whether the daemon can set DF on relayed packets (else DONT-FRAGMENT gets 420).
    pub dont_fragment: bool,
    /// Whether to append FINGERPRINT to every STUN message the server sends.
    pub fingerprint: bool,
}

impl ServerConfig {
    /// A configuration with RFC defaults for `realm`, keyed by `nonce_secret`.
    pub fn new(realm: impl Into<String>, nonce_secret: [u8; 32]) -> ServerConfig {
        ServerConfig {
            realm: realm.into(),
            software: None,
            nonce_secret,
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 64,
            password_algorithms: vec![PasswordAlgorithm::Md5],
            relay_families: vec![AddressFamily::V4, AddressFamily::V6],
            dont_fragment: true,
            fingerprint: true,
        }
    }

    /// True if the server negotiates password algorithms (anything beyond plain MD5).
    pub(crate) fn negotiates_algorithms(&self) -> bool {
        self.password_algorithms
            .iter()
            .any(|a| *a != PasswordAlgorithm::Md5)
    }

    /// RFC 8656 §7.2/7.3: max(default, min(requested, max)); `None` requested → default.
    pub(crate) fn desired_lifetime(&self, requested: Option<u32>) -> Duration {
        match requested {
            None => self.default_lifetime,
            Some(s) => Duration::from_secs(u64::from(s))
                .min(self.max_lifetime)
                .max(self.default_lifetime),
        }
    }
}
