//! Client transaction timers (RFC 8489 §6.2): over UDP, retransmit with a doubling RTO
//! (500 ms default) up to Rc = 7 sends, then wait Rm = 16 × RTO; over TCP, send once and
//! give up after 39.5 s.

use std::time::{Duration, Instant};

/// Rc: maximum number of sends over UDP.
const MAX_SENDS: u32 = 7;
/// Rm: multiple of the initial RTO waited after the last send.
const LAST_WAIT_FACTOR: u32 = 16;
/// Ti: the timeout for reliable transports.
const RELIABLE_TIMEOUT: Duration = Duration::from_millis(39_500);

/// What the timer says at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerAction {
    /// Nothing due.
    Wait,
    /// Send the request again.
    Retransmit,
    /// Give up.
    TimedOut,
}

/// Retransmission state of one request.
#[derive(Debug, Clone)]
pub(crate) struct RetransmitTimer {
    reliable: bool,
    initial_rto: Duration,
    rto: Duration,
    sends: u32,
    next: Instant,
}

impl RetransmitTimer {
    /// Started at `now`, right after the first send.
    pub(crate) fn new(now: Instant, reliable: bool, rto: Duration) -> RetransmitTimer {
        let next = if reliable {
            now + RELIABLE_TIMEOUT
        } else {
            now + rto
        };
        RetransmitTimer {
            reliable,
            initial_rto: rto,
            rto,
            sends: 1,
            next,
        }
    }

    /// The next deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.next
    }

    /// Advances the timer at `now`.
    pub(crate) fn poll(&mut self, now: Instant) -> TimerAction {
        if now < self.next {
            return TimerAction::Wait;
        }
        if self.reliable || self.sends >= MAX_SENDS {
            return TimerAction::TimedOut;
        }
        self.sends += 1;
        self.rto *= 2;
        self.next = if self.sends >= MAX_SENDS {
            now + self.initial_rto * LAST_WAIT_FACTOR
        } else {
            now + self.rto
        };
        TimerAction::Retransmit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_schedule_matches_rfc() {
        let t0 = Instant::now();
        let mut t = RetransmitTimer::new(t0, false, Duration::from_millis(500));
        let mut sends_at = vec![0u64];
        let mut now;
        loop {
            now = t.deadline();
            match t.poll(now) {
                TimerAction::Retransmit => sends_at.push(now.duration_since(t0).as_millis() as u64),
                TimerAction::TimedOut => break,
                TimerAction::Wait => unreachable!("polled at deadline"),
            }
        }
        assert_eq!(sends_at, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now.duration_since(t0), Duration::from_millis(39_500));
    }

    #[test]
    fn tcp_times_out_once() {
        let t0 = Instant::now();
        let mut t = RetransmitTimer::new(t0, true, Duration::from_millis(500));
        assert_eq!(t.poll(t0 + Duration::from_secs(39)), TimerAction::Wait);
        assert_eq!(t.poll(t0 + RELIABLE_TIMEOUT), TimerAction::TimedOut);
    }
}
