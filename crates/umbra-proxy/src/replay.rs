//! A bounded cache of admission nonces already used.
//!
//! Entries are kept in arrival order up to a fixed count. When the cache is
//! full the oldest entry is dropped and its timestamp becomes the *floor*:
//! from then on a preamble stamped at or before the floor is refused as
//! stale. So an evicted nonce can never be replayed, and memory stays bounded
//! whatever the admission rate (the effective window just shrinks under a
//! flood).

use std::collections::{HashSet, VecDeque};

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the time window (or at or before the eviction floor).
    Stale,
    /// Seen before.
    Replayed,
}

/// The cache.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<(u64, [u8; 16])>,
    capacity: usize,
    window_secs: u64,
    floor: u64,
}

impl ReplayCache {
    /// Holds at most `capacity` nonces; accepts timestamps within
    /// `window_secs` of now, either side.
    pub fn new(capacity: usize, window_secs: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Sized once: no rehash in the middle of a burst of admissions
            // (the memory is only touched as entries arrive).
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
            window_secs,
            floor: 0,
        }
    }

    /// Records `nonce` stamped `stamp` if it is fresh and new.
    pub fn admit(&mut self, now: u64, stamp: u64, nonce: [u8; 16]) -> Result<(), Refusal> {
        self.expire(now);
        if stamp.abs_diff(now) > self.window_secs || stamp <= self.floor {
            return Err(Refusal::Stale);
        }
        if self.seen.contains(&nonce) {
            return Err(Refusal::Replayed);
        }
        if self.order.len() == self.capacity
            && let Some((old_stamp, old)) = self.order.pop_front()
        {
            self.seen.remove(&old);
            self.floor = self.floor.max(old_stamp);
        }
        self.seen.insert(nonce);
        self.order.push_back((stamp, nonce));
        Ok(())
    }

    /// Drops entries that left the window (they would be refused as stale).
    fn expire(&mut self, now: u64) {
        let oldest_valid = now.saturating_sub(self.window_secs);
        while let Some(&(stamp, nonce)) = self.order.front() {
            if stamp >= oldest_valid {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
    }

    /// Nonces held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b
    }

    #[test]
    fn fresh_new_nonces_pass_once() {
        let mut c = ReplayCache::new(10, 120);
        assert_eq!(c.admit(1000, 1000, n(1)), Ok(()));
        assert_eq!(c.admit(1000, 1000, n(1)), Err(Refusal::Replayed));
        assert_eq!(c.admit(1000, 870, n(2)), Err(Refusal::Stale));
        assert_eq!(c.admit(1000, 1130, n(3)), Err(Refusal::Stale));
        assert_eq!(c.admit(1000, 1100, n(4)), Ok(()));
    }

    #[test]
    fn bounded_and_evicted_nonces_cannot_be_replayed() {
        let mut c = ReplayCache::new(100, 120);
        for i in 0..1000u32 {
            let _ = c.admit(5000, 4950 + u64::from(i % 50), n(i));
            assert!(c.len() <= 100);
        }
        // Nonce 0 was evicted; replaying it (same stamp) is refused as stale.
        assert_eq!(c.admit(5000, 4950, n(0)), Err(Refusal::Stale));
    }

    #[test]
    fn old_entries_expire_with_time() {
        let mut c = ReplayCache::new(100, 120);
        for i in 0..50 {
            c.admit(1000, 1000, n(i)).expect("fresh");
        }
        c.admit(1200, 1200, n(999)).expect("fresh");
        assert_eq!(c.len(), 1);
    }
}
