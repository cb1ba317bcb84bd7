//! Admit or decoy: the decision taken on a connection's first bytes (the
//! preamble inside TLS, the WebSocket upgrade on a plain port).

use std::sync::Mutex;
use std::time::Duration;

use umbra_wire::proxy::{PREAMBLE_LEN, Peek, Target, Verified, peek};
use umbra_wire::upgrade;

use crate::replay::{Refusal, ReplayCache};

/// What to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Read more bytes first.
    NeedMore,
    /// Forward to an upstream.
    Admit(Admitted),
    /// Serve as a web visitor, replaying every byte read so far.
    Decoy(Reason),
}

/// An admitted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Where it goes.
    pub target: Target,
    /// The proof's nonce (on a plain port, it keys the masks).
    pub nonce: [u8; 16],
    /// How many first bytes were the proof (not forwarded).
    pub proof_len: usize,
    /// On a plain port, where in the proof the client's first write is,
    /// when it rode in the upgrade.
    pub early: Option<upgrade::Early>,
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
    /// The plain ports' request line, worked out once.
    expect: upgrade::Expect,
    /// When this process started, unix seconds: a proof made before it is
    /// refused, since the replay cache (in memory) cannot know whether it
    /// was used before a restart.
    started_unix: u64,
}

impl Admission {
    /// Admission with `secret`; nonces are remembered up to `cache_entries`,
    /// timestamps accepted within `window` and from `started_unix` on.
    pub fn new(
        secret: [u8; 32],
        cache_entries: usize,
        window: Duration,
        relay_configured: bool,
        started_unix: u64,
    ) -> Self {
        Self {
            secret,
            replay: Mutex::new(ReplayCache::new(cache_entries, window.as_secs())),
            relay_configured,
            expect: upgrade::Expect::new(&secret),
            started_unix,
        }
    }

    /// Decides on the bytes read so far inside TLS (the preamble).
    pub fn decide(&self, first: &[u8], now_unix: u64) -> Decision {
        match peek(&self.secret, first) {
            Peek::NeedMore => Decision::NeedMore,
            Peek::NotAdmitted => Decision::Decoy(Reason::NoProof),
            Peek::Valid(v) => self.check(v, PREAMBLE_LEN, now_unix),
        }
    }

    /// Decides on the bytes read so far on a plain port (the upgrade).
    pub fn decide_plain(&self, first: &[u8], now_unix: u64) -> Decision {
        match self.expect.peek(first) {
            upgrade::Peek::NeedMore => Decision::NeedMore,
            upgrade::Peek::NotAdmitted => Decision::Decoy(Reason::NoProof),
            upgrade::Peek::Valid {
                verified,
                head_len,
                early,
            } => match self.check(verified, head_len, now_unix) {
                Decision::Admit(a) => Decision::Admit(Admitted { early, ..a }),
                other => other,
            },
        }
    }

    /// The checks after a valid proof: the target is served, the time is
    /// fresh and the nonce new.
    pub(crate) fn check(&self, v: Verified, proof_len: usize, now_unix: u64) -> Decision {
        if v.target == Target::Relay && !self.relay_configured {
            return Decision::Decoy(Reason::NoUpstream);
        }
        if v.unix_time < self.started_unix {
            // Possibly seen by the process before this one.
            return Decision::Decoy(Reason::Stale);
        }
        let verdict = match self.replay.lock() {
            Ok(mut cache) => cache.admit(now_unix, v.unix_time, v.nonce),
            // A poisoned lock means a panic elsewhere: refuse, safely.
            Err(_) => Err(Refusal::Stale),
        };
        match verdict {
            Ok(()) => Decision::Admit(Admitted {
                target: v.target,
                nonce: v.nonce,
                proof_len,
                early: None,
            }),
            Err(Refusal::Stale) => Decision::Decoy(Reason::Stale),
            Err(Refusal::Replayed) => Decision::Decoy(Reason::Replayed),
        }
    }

    /// The secret (the fronting port's marks).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The secret, keyed for its PRF: the plain ports' masks.
    pub fn prf(&self) -> &umbra_wire::mask::Prf {
        self.expect.prf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_wire::proxy::preamble;

    fn admitted(target: Target, nonce: u8, proof_len: usize) -> Decision {
        Decision::Admit(Admitted {
            target,
            nonce: [nonce; 16],
            proof_len,
            early: None,
        })
    }

    #[test]
    fn decisions() {
        let a = Admission::new([5; 32], 100, Duration::from_secs(120), false, 0);
        let p = preamble(&[5; 32], 1000, [1; 16], Target::Messaging);
        assert_eq!(a.decide(&p[..10], 1000), Decision::NeedMore);
        assert_eq!(
            a.decide(&p, 1000),
            admitted(Target::Messaging, 1, PREAMBLE_LEN)
        );
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

    #[test]
    fn plain_decisions_share_the_replay_cache_rules() {
        let a = Admission::new([5; 32], 100, Duration::from_secs(120), true, 0);
        let r = upgrade::request(&[5; 32], "h", 1000, [7; 16], Target::Relay);
        let len = r.len();
        assert_eq!(
            a.decide_plain(&r.as_bytes()[..len - 1], 1000),
            Decision::NeedMore
        );
        assert_eq!(
            a.decide_plain(r.as_bytes(), 1000),
            admitted(Target::Relay, 7, len)
        );
        assert_eq!(
            a.decide_plain(r.as_bytes(), 1000),
            Decision::Decoy(Reason::Replayed)
        );
        let old = upgrade::request(&[5; 32], "h", 500, [8; 16], Target::Relay);
        assert_eq!(
            a.decide_plain(old.as_bytes(), 1000),
            Decision::Decoy(Reason::Stale)
        );
        let p = preamble(&[5; 32], 1000, [9; 16], Target::Messaging);
        assert_eq!(a.decide_plain(&p, 1000), Decision::Decoy(Reason::NoProof));
    }

    #[test]
    fn a_restarted_proxy_refuses_what_the_last_one_may_have_seen() {
        let before = upgrade::request(&[5; 32], "h", 999, [1; 16], Target::Messaging);
        let after = upgrade::request(&[5; 32], "h", 1000, [2; 16], Target::Messaging);
        let restarted = Admission::new([5; 32], 100, Duration::from_secs(120), false, 1000);
        assert_eq!(
            restarted.decide_plain(before.as_bytes(), 1001),
            Decision::Decoy(Reason::Stale)
        );
        assert_eq!(
            restarted.decide_plain(after.as_bytes(), 1001),
            admitted(Target::Messaging, 2, after.len())
        );
    }
}
