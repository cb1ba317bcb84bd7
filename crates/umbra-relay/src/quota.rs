//! Allocation quotas shared by all workers: per credential (username) and in total. Each
//! worker's TURN server enforces the same limits on its own allocations; this is what
//! makes them hold across workers.

use std::collections::HashMap;
use std::sync::Mutex;

use umbra_turn::server::RelayError;

/// Live allocation counts.
#[derive(Debug)]
pub struct Quotas {
    per_user: usize,
    total: usize,
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_user: HashMap<String, usize>,
    total: usize,
}

impl Quotas {
    /// Limits per credential and in total.
    pub fn new(per_user: usize, total: usize) -> Quotas {
        Quotas {
            per_user,
            total,
            inner: Mutex::new(Counts::default()),
        }
    }

    /// Takes one allocation for `user`, or says why not.
    pub fn acquire(&self, user: &str) -> Result<(), RelayError> {
        let mut c = self.inner.lock().map_err(|_| RelayError::Internal)?;
        if c.total >= self.total {
            return Err(RelayError::InsufficientCapacity);
        }
        let n = c.by_user.get(user).copied().unwrap_or(0);
        if n >= self.per_user {
            return Err(RelayError::QuotaReached);
        }
        c.by_user.insert(user.to_owned(), n + 1);
        c.total += 1;
        Ok(())
    }

    /// Gives one allocation of `user` back.
    pub fn release(&self, user: &str) {
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_user.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total() {
        let q = Quotas::new(2, 3);
        assert!(q.acquire("a").is_ok());
        assert!(q.acquire("a").is_ok());
        assert_eq!(q.acquire("a"), Err(RelayError::QuotaReached));
        assert!(q.acquire("b").is_ok());
        assert_eq!(q.acquire("c"), Err(RelayError::InsufficientCapacity));
        q.release("a");
        assert!(q.acquire("c").is_ok());
    }
}
