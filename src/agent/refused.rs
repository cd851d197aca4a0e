//! Unacked messages kept after they went out, so that one a router refuses
//! as `overloaded` (its sinks absent or stuck) is sent again rather than
//! lost.
//!
//! A router answers `overloaded` only after holding client input back for
//! up to its `VIGIL_OVERLOAD_WAIT_MS`, echoing the message's `id`. So every
//! unacked message the agent sends carries an id, and stays in this book
//! for [`KEEP_FOR`] after it was handed to the DEALER (long enough for any
//! refusal to come back), bounded in count and bytes like the send queue;
//! past either bound the oldest are forgotten, as delivered. A refused one
//! waits out a backoff with jitter (doubling from [`RETRY_MIN`] to
//! [`RETRY_MAX`], ±25 %), then goes back into the send queue, where a newer
//! heartbeat or own stats sample supersedes it. Pure bookkeeping, owned by
//! the link thread.

use super::outqueue::Outgoing;
use super::resend::{backoff, Jitter};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a sent message is kept in case a router refuses it.
pub const KEEP_FOR: Duration = Duration::from_secs(60);
/// The first retry of a refused message...
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// ...doubling up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct Kept {
    item: Outgoing,
    sent_at: Instant,
}

#[derive(Debug)]
pub struct Refused {
    /// Sent and not yet forgotten, by id.
    kept: HashMap<String, Kept>,
    /// Ids in the order they were sent, with when; may list ids already
    /// refused or sent again (then the time does not match and is skipped).
    order: VecDeque<(String, Instant)>,
    bytes: usize,
    /// Refused, waiting for their retry time.
    held: Vec<(Instant, Outgoing)>,
    /// Refusals so far per id still in play, for the backoff.
    refusals: HashMap<String, u32>,
    max_items: usize,
    max_bytes: usize,
    jitter: Jitter,
    /// Refusals whose message was no longer kept (so it was lost).
    pub unknown: u64,
    /// Refused messages put back into the send queue.
    pub retried: u64,
}

impl Refused {
    pub fn new(max_items: usize, max_bytes: usize) -> Refused {
        Refused {
            kept: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            held: Vec::new(),
            refusals: HashMap::new(),
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            jitter: Jitter::new(),
            unknown: 0,
            retried: 0,
        }
    }

    /// Keeps `item`, just handed to the DEALER. One without an id cannot be
    /// matched to a refusal and is not kept.
    pub fn sent(&mut self, item: Outgoing, now: Instant) {
        let Some(id) = item.id.clone() else {
            return;
        };
        self.bytes += item.frame.len();
        self.order.push_back((id.clone(), now));
        if let Some(old) = self.kept.insert(id, Kept { item, sent_at: now }) {
            self.bytes -= old.item.frame.len();
        }
        self.forget_old(now);
    }

    /// A router refused `id` as `overloaded`. Returns whether it was kept
    /// (it then goes out again after its backoff).
    pub fn refused(&mut self, id: &str, now: Instant) -> bool {
        let Some(kept) = self.kept.remove(id) else {
            self.unknown += 1;
            return false;
        };
        self.bytes -= kept.item.frame.len();
        let n = self.refusals.entry(id.to_string()).or_insert(0);
        *n += 1;
        let delay = backoff(*n, RETRY_MIN, RETRY_MAX, self.jitter.unit());
        self.held.push((now + delay, kept.item));
        true
    }

    /// The refused messages whose retry time has come.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        if !self.held.iter().any(|(at, _)| *at <= now) {
            return Vec::new();
        }
        let (due, later): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(at, _)| *at <= now);
        self.held = later;
        self.retried += due.len() as u64;
        due.into_iter().map(|(_, item)| item).collect()
    }

    /// When the next refused message is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.iter().map(|(at, _)| *at).min()
    }

    /// Messages held for a retry.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Forgets what was sent more than [`KEEP_FOR`] ago, and the oldest
    /// while over either bound.
    pub fn forget_old(&mut self, now: Instant) {
        while let Some((id, at)) = self.order.front() {
            let over = self.kept.len() > self.max_items || self.bytes > self.max_bytes;
            if !over && now.duration_since(*at) < KEEP_FOR {
                break;
            }
            let (id, at) = (id.clone(), *at);
            self.order.pop_front();
            if self.kept.get(&id).is_some_and(|k| k.sent_at == at) {
                let kept = self.kept.remove(&id).expect("just looked");
                self.bytes -= kept.item.frame.len();
                if !self.held.iter().any(|(_, h)| h.id.as_deref() == Some(&id)) {
                    self.refusals.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::outqueue::Kind;

    fn item(id: &str) -> Outgoing {
        Outgoing {
            kind: Kind::Other,
            frame: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            id: Some(id.to_string()),
        }
    }

    #[test]
    fn a_refused_message_comes_back_after_its_backoff() {
        let mut r = Refused::new(100, 1 << 20);
        let t0 = Instant::now();
        r.sent(item("a"), t0);
        r.sent(item("b"), t0);
        assert!(r.refused("a", t0));
        assert!(!r.refused("a", t0), "only once per sending");
        assert_eq!(r.unknown, 1);
        assert!(r.due(t0).is_empty());
        let at = r.next_due().unwrap();
        assert!(at >= t0 + RETRY_MIN.mul_f64(0.75) && at < t0 + RETRY_MIN.mul_f64(1.25));
        let back = r.due(t0 + Duration::from_secs(2));
        assert_eq!(back, [item("a")]);
        assert_eq!((r.retried, r.held()), (1, 0));
        // Sent and refused again: the backoff doubles.
        let t1 = t0 + Duration::from_secs(2);
        r.sent(item("a"), t1);
        assert!(r.refused("a", t1));
        let at = r.next_due().unwrap();
        assert!(at >= t1 + Duration::from_millis(1500), "{:?}", at - t1);
    }

    #[test]
    fn sent_messages_are_forgotten_after_a_while_or_over_the_bound() {
        let mut r = Refused::new(2, 1 << 20);
        let t0 = Instant::now();
        r.sent(item("a"), t0);
        r.sent(item("b"), t0);
        r.sent(item("c"), t0);
        assert!(!r.refused("a", t0), "over the count bound: forgotten");
        assert!(r.refused("b", t0));
        r.forget_old(t0 + KEEP_FOR);
        assert!(!r.refused("c", t0 + KEEP_FOR), "kept long enough");
        assert_eq!(r.bytes, 0);
        let mut none = item("x");
        none.id = None;
        r.sent(none, t0);
        assert_eq!(r.kept.len(), 0, "no id: nothing to match a refusal to");
    }
}
