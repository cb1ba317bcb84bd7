//! What every connection of every worker shares: admission, upstreams,
//! limits, counters, and the way a visitor is turned away.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use umbra_wire::proxy::Target;

use crate::admission::{Admission, Decision, Reason};
use crate::decoy;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// The proxy's state shared by its workers.
pub(crate) struct Shared {
    pub admission: Admission,
    pub tls: Option<TlsAcceptor>,
    pub upstream: Upstream,
    pub relay_upstream: Option<Upstream>,
    pub decoy: Option<String>,
    pub site: decoy::Builtin,
    /// Set in fronting mode: the TLS ports' site.
    pub front: Option<crate::front::Front>,
    pub metrics: Arc<Metrics>,
    pub idle: Duration,
    pub handshake: Duration,
    pub proxy_protocol: bool,
    pub max_connections: usize,
}

/// Seconds since the Unix epoch (admission timestamps).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    /// Counts a new connection and takes a slot under the connection limit;
    /// `false` (and counted as refused) when the limit is reached.
    pub fn open(&self) -> bool {
        let m = &self.metrics;
        m.connections.fetch_add(1, Ordering::Relaxed);
        let before = m.open.fetch_add(1, Ordering::Relaxed);
        if usize::try_from(before).unwrap_or(0) >= self.max_connections {
            m.open.fetch_sub(1, Ordering::Relaxed);
            m.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back the slot of a connection that ended.
    pub fn close(&self) {
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now, on every worker.
    pub fn open_now(&self) -> i64 {
        self.metrics.open.load(Ordering::Relaxed)
    }

    /// The upstream for an admitted target.
    pub fn upstream_for(&self, target: Target) -> Option<&Upstream> {
        match target {
            Target::Messaging => Some(&self.upstream),
            Target::Relay => self.relay_upstream.as_ref(),
        }
    }

    /// Counts an upstream that could not be reached.
    pub fn upstream_failed(&self) {
        self.metrics
            .upstream_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("cannot reach the upstream; check `umbra proxy doctor`");
    }

    /// Counts an admission decision.
    pub fn count(&self, decision: Decision) {
        let m = &self.metrics;
        match decision {
            Decision::Admit(a) => {
                match a.target {
                    Target::Messaging => m.admitted_messaging.fetch_add(1, Ordering::Relaxed),
                    Target::Relay => m.admitted_relay.fetch_add(1, Ordering::Relaxed),
                };
            }
            Decision::Decoy(reason) => {
                m.turned_away.fetch_add(1, Ordering::Relaxed);
                match reason {
                    Reason::Stale => m.stale.fetch_add(1, Ordering::Relaxed),
                    Reason::Replayed => m.replayed.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
            Decision::NeedMore => {}
        }
    }

    /// Serves a visitor the website, `first` being what it sent so far and
    /// `waited` how long that took.
    pub async fn turn_away<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        first: &[u8],
        tls: bool,
        waited: Duration,
    ) {
        let _ = match &self.decoy {
            Some(addr) => decoy::relay_to(stream, first, addr, self.handshake).await,
            None => decoy::serve_builtin(stream, first, &self.site, tls, waited).await,
        };
    }
}
