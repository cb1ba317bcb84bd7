//! Introduction budget: a token bucket per mailbox, in memory only.
//!
//! Each mailbox may receive `per_hour` envelopes without a valid delivery
//! token per hour (burst up to `per_hour`). Time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use umbra_store::MailboxId;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-mailbox introduction budgets.
pub struct IntroductionBudget {
    per_hour: f64,
    buckets: Mutex<HashMap<MailboxId, Bucket>>,
}

/// Forget full buckets once this many are tracked.
const SWEEP_AT: usize = 100_000;

impl IntroductionBudget {
    /// A budget of `per_hour` introductions per mailbox.
    pub fn new(per_hour: u32) -> Self {
        Self {
            per_hour: f64::from(per_hour),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + secs * self.per_hour / 3600.0).min(self.per_hour);
        b.at = now;
    }

    /// Introductions allowed per mailbox per hour.
    pub fn per_hour(&self) -> u32 {
        self.per_hour as u32
    }

    /// Takes one introduction for `mailbox` if the budget allows.
    pub fn try_take(&self, mailbox: &MailboxId, now: Instant) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        if map.len() >= SWEEP_AT && !map.contains_key(mailbox) {
            let full = self.per_hour;
            let rate = self.per_hour / 3600.0;
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < full
            });
        }
        let b = map.entry(*mailbox).or_insert(Bucket {
            tokens: self.per_hour,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn spends_and_refills() {
        let budget = IntroductionBudget::new(2);
        let t = Instant::now();
        let m = [1; 16];
        assert!(budget.try_take(&m, t));
        assert!(budget.try_take(&m, t));
        assert!(!budget.try_take(&m, t));
        assert!(budget.try_take(&[2; 16], t));
        assert!(budget.try_take(&m, t + Duration::from_secs(1800)));
        assert!(!budget.try_take(&m, t + Duration::from_secs(1800)));
    }
}
