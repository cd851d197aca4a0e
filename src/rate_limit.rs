//! One event per window, the rest counted: how vigil keeps hostile or
//! broken peers from flooding its log.
//!
//! A router refusing a flood of bad frames, an agent refused by its router,
//! a sink fed malformed messages: each logs the first occurrence at once,
//! then at most one line per window saying how many it held back in
//! between. The counters in the metrics keep the full tally; the log only
//! needs to show that something is wrong and how much.

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimit {
    window: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    pub fn new(window: Duration) -> RateLimit {
        RateLimit {
            window,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(events held back since the last one allowed)` when this one
    /// may go through; `None` (and counted) within the window.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`RateLimit::allow`] at a given time (for tests and callers that
    /// already read the clock).
    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.window) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// Logs `args` as a warning now, saying how many similar lines were
    /// held back, or holds it back. Returns whether it logged.
    pub fn warn(&mut self, args: fmt::Arguments) -> bool {
        match self.allow() {
            Some(0) => log::warn!("{args}"),
            Some(held_back) => log::warn!("{args} ({held_back} similar held back)"),
            None => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_window_and_the_rest_counted() {
        let start = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.allow_at(start), Some(0));
        assert_eq!(limit.allow_at(start + Duration::from_secs(1)), None);
        assert_eq!(limit.allow_at(start + Duration::from_secs(9)), None);
        // The window counts from the last event let through.
        assert_eq!(limit.allow_at(start + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.allow_at(start + Duration::from_secs(15)), None);
        assert_eq!(limit.allow_at(start + Duration::from_secs(21)), Some(1));
    }

    #[test]
    fn a_zero_window_lets_everything_through() {
        let mut limit = RateLimit::new(Duration::ZERO);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), Some(0));
    }

    #[test]
    fn warn_holds_back_within_its_window() {
        let mut log = RateLimit::new(Duration::from_secs(3600));
        assert!(log.warn(format_args!("one")));
        assert!(!log.warn(format_args!("two")));
        assert_eq!(log.held_back, 1);
        let mut log = RateLimit::new(Duration::ZERO);
        assert!(log.warn(format_args!("one")));
        assert!(log.warn(format_args!("two")));
    }
}
