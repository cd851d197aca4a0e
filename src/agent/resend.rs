//! When each spooled (acked) message is sent again: exponential backoff
//! with jitter, until its `ack` arrives.
//!
//! Pure bookkeeping, owned by the link thread: it says which ids are due,
//! and is told when each was sent, acked, or refused by a router. The
//! jitter spreads resends so that thousands of agents coming back after a
//! router outage do not resend in lockstep.

use super::spool::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    attempts: u32,
    due: Instant,
}

/// A small xorshift generator for jitter; seeded from a random UUID.
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Jitter {
        Jitter((uuid::Uuid::new_v4().as_u128() as u64) | 1)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The delay before attempt `attempts + 1`: `min * 2^(attempts-1)`, capped
/// at `max`, scaled by a factor in [0.75, 1.25).
pub fn backoff(attempts: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp).min(max);
    base.mul_f64(0.75 + unit * 0.5)
}

#[derive(Debug)]
pub struct Resend {
    pending: HashMap<String, Pending>,
    /// Ids never sent yet, in arrival order: sent before any resend.
    fresh: VecDeque<String>,
    /// No pending id is due before this.
    next_due: Option<Instant>,
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Resend {
    pub fn new(min: Duration, max: Duration) -> Resend {
        Resend {
            pending: HashMap::new(),
            fresh: VecDeque::new(),
            next_due: None,
            min,
            max,
            jitter: Jitter::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn add(&mut self, entry: Entry, now: Instant) {
        if self.pending.contains_key(&entry.id) {
            return;
        }
        self.fresh.push_back(entry.id.clone());
        self.pending.insert(
            entry.id,
            Pending {
                frame: entry.frame,
                attempts: 0,
                due: now,
            },
        );
    }

    /// Forgets `id`; returns whether it was pending.
    pub fn ack(&mut self, id: &str) -> bool {
        self.pending.remove(id).is_some()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    /// The earliest moment something is due, if anything is pending.
    pub fn next_due(&self) -> Option<Instant> {
        if self.fresh.iter().any(|id| self.pending.contains_key(id)) {
            return Some(Instant::now());
        }
        self.next_due
    }

    /// Ids to send now: fresh ones first, then those whose time came.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .fresh
            .drain(..)
            .filter(|id| self.pending.contains_key(id))
            .collect();
        if self.next_due.is_some_and(|t| t <= now) {
            let mut next = None::<Instant>;
            for (id, p) in &self.pending {
                if p.attempts > 0 && p.due <= now {
                    out.push(id.clone());
                } else if p.attempts > 0 {
                    next = Some(next.map_or(p.due, |n| n.min(p.due)));
                }
            }
            self.next_due = next;
        }
        // An id put back by `unsent` may also have come due: send it once.
        let mut seen = std::collections::HashSet::new();
        out.retain(|id| seen.insert(id.clone()));
        out
    }

    pub fn frame(&self, id: &str) -> Option<&[u8]> {
        self.pending.get(id).map(|p| p.frame.as_slice())
    }

    /// Records that `id` went out: it is due again after the backoff.
    /// Returns whether this was a resend (not its first send).
    pub fn sent(&mut self, id: &str, now: Instant) -> bool {
        let unit = self.jitter.unit();
        let Some(p) = self.pending.get_mut(id) else {
            return false;
        };
        p.attempts += 1;
        p.due = now + backoff(p.attempts, self.min, self.max, unit);
        self.next_due = Some(self.next_due.map_or(p.due, |n| n.min(p.due)));
        p.attempts > 1
    }

    /// Puts back ids that could not be sent (no router reachable), in the
    /// order given: they go out first, in that order, once one is. One
    /// call for the whole remainder: putting them back one at a time at
    /// the front would reverse them on every blocked flush.
    pub fn unsent(&mut self, ids: Vec<String>) {
        for id in ids.into_iter().rev() {
            if self.pending.contains_key(&id) {
                self.fresh.push_front(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff(1, min, max, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(2, min, max, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(4, min, max, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(9, min, max, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(1, min, max, 0.0), Duration::from_millis(750));
        assert!(backoff(1, min, max, 0.999) < Duration::from_millis(1250));
        let mut j = Jitter::new();
        assert!((0..1000).map(|_| j.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn fresh_then_due_after_backoff_until_acked() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut r = Resend::new(min, max);
        let t0 = Instant::now();
        r.add(
            Entry {
                id: "a".into(),
                frame: b"{}".to_vec(),
            },
            t0,
        );
        assert_eq!(r.due(t0), ["a"]);
        assert!(!r.sent("a", t0));
        assert!(r.due(t0).is_empty());
        assert!(r.due(t0 + Duration::from_millis(700)).is_empty());
        assert_eq!(r.due(t0 + Duration::from_millis(1300)), ["a"]);
        assert!(r.sent("a", t0 + Duration::from_millis(1300)));
        assert!(r.due(t0 + Duration::from_millis(2000)).is_empty());
        assert!(r.ack("a"));
        assert!(r.due(t0 + Duration::from_secs(100)).is_empty());
        assert!(!r.ack("a"));
    }

    #[test]
    fn unsent_ids_keep_their_order_across_blocked_flushes() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut r = Resend::new(min, max);
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d"] {
            let frame = b"{}".to_vec();
            r.add(
                Entry {
                    id: id.into(),
                    frame,
                },
                t0,
            );
        }
        // Blocked at the first id, twice over: nothing may be reordered.
        for _ in 0..2 {
            let due = r.due(t0);
            assert_eq!(due, ["a", "b", "c", "d"]);
            r.unsent(due);
        }
        // Blocked after "a": the rest, still in order, ahead of a new id.
        let mut due = r.due(t0);
        assert!(!r.sent(&due.remove(0), t0));
        r.add(
            Entry {
                id: "e".into(),
                frame: b"{}".to_vec(),
            },
            t0,
        );
        r.unsent(due);
        assert_eq!(r.due(t0), ["b", "c", "d", "e"]);
    }
}
