//! Per-allocation bandwidth caps: a token bucket in bytes, refilled at the configured rate,
//! holding at most one second's worth. Traffic over the cap is dropped (and counted by the
//! caller), never queued.

use std::time::Instant;

/// A token bucket. A rate of 0 means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `bytes` tokens if available; false means drop the packet.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = self.rate as f64;
        self.tokens = (self.tokens + elapsed * cap).min(cap);
        let need = bytes as f64;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn caps_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.take(600, t0));
        assert!(!b.take(600, t0));
        assert!(b.take(400, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        // Refill never exceeds one second's worth.
        assert!(b.take(1000, t0 + Duration::from_secs(100)));
        assert!(!b.take(1, t0 + Duration::from_secs(100)));
        let mut free = TokenBucket::new(0, t0);
        assert!(free.take(usize::MAX, t0));
    }
}
