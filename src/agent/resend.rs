//! When each spooled (acked) message is sent again: exponential backoff
//! with jitter, until its `ack` arrives.
//!
//! Pure bookkeeping, owned by the link thread: it says which ids are due,
//! and is told when each was sent, acked, or refused by a router. The
//! jitter spreads resends so that thousands of agents coming back after a
//! router outage do not resend in lockstep.
//!
//! The ids sent at least once are kept ordered by when they are due again,
//! so finding what is due costs only what is due: a full spool holds some
//! 150,000 of them, with jittered times, and scanning them all whenever
//! one came due made every backoff cycle quadratic.

use super::spool::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A place in [`Resend::by_due`]: the due time, then a sequence number that
/// keeps ids due at the same instant apart (and in the order they were sent).
type DueKey = (Instant, u64);

#[derive(Debug)]
struct Pending {
    frame: Vec<u8>,
    attempts: u32,
    /// Its place in `by_due` while it waits for a resend; `None` while it
    /// is fresh, or handed out by [`Resend::due`] and not yet sent.
    due: Option<DueKey>,
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
    /// The ids sent and waiting for their ack, by when they are due again.
    by_due: BTreeMap<DueKey, String>,
    next_seq: u64,
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Resend {
    pub fn new(min: Duration, max: Duration) -> Resend {
        Resend {
            pending: HashMap::new(),
            fresh: VecDeque::new(),
            by_due: BTreeMap::new(),
            next_seq: 0,
            min,
            max,
            jitter: Jitter::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn add(&mut self, entry: Entry) {
        if self.pending.contains_key(&entry.id) {
            return;
        }
        self.fresh.push_back(entry.id.clone());
        self.pending.insert(
            entry.id,
            Pending {
                frame: entry.frame,
                attempts: 0,
                due: None,
            },
        );
    }

    /// Forgets `id`; returns whether it was pending.
    pub fn ack(&mut self, id: &str) -> bool {
        let Some(p) = self.pending.remove(id) else {
            return false;
        };
        if let Some(key) = p.due {
            self.by_due.remove(&key);
        }
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    /// The earliest moment something is due, if anything is pending.
    pub fn next_due(&self) -> Option<Instant> {
        if self.fresh.iter().any(|id| self.pending.contains_key(id)) {
            return Some(Instant::now());
        }
        self.by_due.first_key_value().map(|((at, _), _)| *at)
    }

    /// Ids to send now: fresh ones first, then those whose time came, in
    /// the order they came due. Each is the caller's to pass to
    /// [`Resend::sent`] or [`Resend::unsent`]: until then it is due nowhere.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .fresh
            .drain(..)
            .filter(|id| self.pending.contains_key(id))
            .collect();
        while let Some(first) = self.by_due.first_entry() {
            if first.key().0 > now {
                break;
            }
            let id = first.remove();
            if let Some(p) = self.pending.get_mut(&id) {
                p.due = None;
            }
            out.push(id);
        }
        // An id acked and added again leaves a stale copy in `fresh`, and
        // one put back by `unsent` may also be in `by_due`: send it once.
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
        if let Some(old) = p.due.take() {
            self.by_due.remove(&old);
        }
        let key = (
            now + backoff(p.attempts, self.min, self.max, unit),
            self.next_seq,
        );
        self.next_seq += 1;
        p.due = Some(key);
        self.by_due.insert(key, id.to_string());
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
        r.add(Entry {
            id: "a".into(),
            frame: b"{}".to_vec(),
        });
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

    fn add(r: &mut Resend, id: &str) {
        let frame = b"{}".to_vec();
        let id = id.into();
        r.add(Entry { id, frame });
    }

    #[test]
    fn resends_come_due_in_due_order_and_acks_leave_the_order() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut r = Resend::new(min, max);
        let t0 = Instant::now();
        // Sent 2 s apart, in reverse name order: each first backoff is
        // 0.75-1.25 s, so the due times keep the sending order.
        let ids: Vec<String> = (0..20).rev().map(|i| format!("m{i:02}")).collect();
        for id in &ids {
            add(&mut r, id);
        }
        assert_eq!(r.due(t0), ids);
        for (i, id) in ids.iter().enumerate() {
            r.sent(id, t0 + Duration::from_secs(2 * i as u64));
        }
        assert!(r.ack("m04"));
        let first = r.next_due().unwrap();
        assert_eq!(Some(first), r.pending["m19"].due.map(|(at, _)| at));
        assert!(first >= t0 + Duration::from_millis(750) && first < t0 + min * 5 / 4);
        let half = r.due(t0 + Duration::from_secs(20));
        assert_eq!(half, ids[..10], "only those due, earliest first");
        r.unsent(half.clone());
        let all = r.due(t0 + Duration::from_secs(100));
        let rest: Vec<&String> = ids[10..].iter().filter(|id| *id != "m04").collect();
        assert_eq!(all[..10], half, "put back: first again");
        assert_eq!(all[10..].iter().collect::<Vec<_>>(), rest, "acked: gone");
        assert_eq!(r.next_due(), None, "every id handed out");
    }

    #[test]
    fn unsent_ids_keep_their_order_across_blocked_flushes() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut r = Resend::new(min, max);
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d"] {
            let frame = b"{}".to_vec();
            r.add(Entry {
                id: id.into(),
                frame,
            });
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
        r.add(Entry {
            id: "e".into(),
            frame: b"{}".to_vec(),
        });
        r.unsent(due);
        assert_eq!(r.due(t0), ["b", "c", "d", "e"]);
    }
}
