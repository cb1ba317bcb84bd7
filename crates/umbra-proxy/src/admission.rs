//! Admit or decoy: the decision taken on a connection's first bytes.

use std::sync::Mutex;
use std::time::Duration;

use umbra_wire::proxy::{Peek, Target, peek};

use crate::replay::{Refusal, ReplayCache};

/// What to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Read more bytes first.
    NeedMore,
    /// Forward to this upstream; drop the first
    /// [`umbra_wire::proxy::PREAMBLE_LEN`] bytes.
    Admit(Target),
    /// Serve as a web visitor, replaying every byte read so far.
    Decoy(Reason),
}

/// Why a connection went to the decoy (for counters only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a preamble, or a wrong tag.
    NoProof,
    /// Too old or from the future.
    Stale,
    /// A nonce seen before.
    Replayed,
    /// Valid, but that upstream is not configured.
    NoUpstream,
}

/// The admission state shared by all connections.
#[derive(Debug)]
pub struct Admission {
    secret: [u8; 32],
    replay: Mutex<ReplayCache>,
    relay_configured: bool,
}

impl Admission {
    /// Admission with `secret`; nonces are remembered up to `cache_entries`,
    /// timestamps accepted within `window`.
    pub fn new(
        secret: [u8; 32],
        cache_entries: usize,
        window: Duration,
        relay_configured: bool,
    ) -> Self {
        Self {
            secret,
            replay: Mutex::new(ReplayCache::new(cache_entries, window.as_secs())),
            relay_configured,
        }
    }

    /// Decides on the bytes read so far.
    pub fn decide(&self, first: &[u8], now_unix: u64) -> Decision {
        match peek(&self.secret, first) {
            Peek::NeedMore => Decision::NeedMore,
            Peek::NotAdmitted => Decision::Decoy(Reason::NoProof),
            Peek::Valid(v) => {
                if v.target == Target::Relay && !self.relay_configured {
                    return Decision::Decoy(Reason::NoUpstream);
                }
                let verdict = match self.replay.lock() {
                    Ok(mut cache) => cache.admit(now_unix, v.unix_time, v.nonce),
                    // A poisoned lock means a panic elsewhere: refuse, safely.
                    Err(_) => Err(Refusal::Stale),
                };
                match verdict {
                    Ok(()) => Decision::Admit(v.target),
                    Err(Refusal::Stale) => Decision::Decoy(Reason::Stale),
                    Err(Refusal::Replayed) => Decision::Decoy(Reason::Replayed),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_wire::proxy::preamble;

    #[test]
    fn decisions() {
        let a = Admission::new([5; 32], 100, Duration::from_secs(120), false);
        let p = preamble(&[5; 32], 1000, [1; 16], Target::Messaging);
        assert_eq!(a.decide(&p[..10], 1000), Decision::NeedMore);
        assert_eq!(a.decide(&p, 1000), Decision::Admit(Target::Messaging));
        assert_eq!(a.decide(&p, 1000), Decision::Decoy(Reason::Replayed));
        let old = preamble(&[5; 32], 500, [2; 16], Target::Messaging);
        assert_eq!(a.decide(&old, 1000), Decision::Decoy(Reason::Stale));
        let wrong = preamble(&[6; 32], 1000, [3; 16], Target::Messaging);
        assert_eq!(a.decide(&wrong, 1000), Decision::Decoy(Reason::NoProof));
        let relay = preamble(&[5; 32], 1000, [4; 16], Target::Relay);
        assert_eq!(a.decide(&relay, 1000), Decision::Decoy(Reason::NoUpstream));
        assert_eq!(
            a.decide(b"GET / HTTP/1.1\r\n", 1000),
            Decision::Decoy(Reason::NoProof)
        );
    }
}
