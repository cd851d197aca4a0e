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
//! [`RETRY_MAX`], ±25 %; the count of refusals travels with the message),
//! then goes back into the send queue. A newer
//! heartbeat or own stats sample supersedes a held one of its kind (here
//! and in the send queue). The held ones are bounded like the send queue
//! (`VIGIL_QUEUE_MAX` messages and bytes): past either bound stats go
//! first, oldest first, then the oldest of the rest, each counted. Pure
//! bookkeeping, owned by the link thread.

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

/// A refused message waiting for its retry.
#[derive(Debug)]
struct Held {
    due: Instant,
    sent_at: Instant,
    item: Outgoing,
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
    held: Vec<Held>,
    held_bytes: usize,
    max_items: usize,
    max_bytes: usize,
    jitter: Jitter,
    /// Refusals whose message was no longer kept (so it was lost).
    pub unknown: u64,
    /// Refused messages put back into the send queue.
    pub retried: u64,
    /// Held messages dropped because a newer one of their kind came.
    pub superseded: u64,
    /// Held messages dropped over the bound: stats, then the others.
    pub dropped_stats: u64,
    pub dropped_other: u64,
}

impl Refused {
    pub fn new(max_items: usize, max_bytes: usize) -> Refused {
        Refused {
            kept: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            held: Vec::new(),
            held_bytes: 0,
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            jitter: Jitter::new(),
            unknown: 0,
            retried: 0,
            superseded: 0,
            dropped_stats: 0,
            dropped_other: 0,
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
        let Some(mut kept) = self.kept.remove(id) else {
            self.unknown += 1;
            return false;
        };
        self.bytes -= kept.item.frame.len();
        kept.item.refusals += 1;
        let delay = backoff(kept.item.refusals, RETRY_MIN, RETRY_MAX, self.jitter.unit());
        let held = Held {
            due: now + delay,
            sent_at: kept.sent_at,
            item: kept.item,
        };
        self.hold(held);
        true
    }

    /// Holds a refused message, unless a newer one of its kind is held
    /// (refusals need not come back in the order things were sent).
    fn hold(&mut self, held: Held) {
        let kind = held.item.kind;
        if kind.supersedable() {
            if let Some(i) = self.held.iter().position(|h| h.item.kind == kind) {
                self.superseded += 1;
                if self.held[i].sent_at >= held.sent_at {
                    return;
                }
                self.remove_held(i);
            }
        }
        self.held_bytes += held.item.frame.len();
        self.held.push(held);
        while self.held.len() > 1
            && (self.held.len() > self.max_items || self.held_bytes > self.max_bytes)
        {
            self.drop_one_held();
        }
    }

    /// Over the bound: the oldest stats sample, else the oldest message.
    fn drop_one_held(&mut self) {
        let oldest = |stats: bool| {
            (self.held.iter().enumerate())
                .filter(|(_, h)| !stats || h.item.kind.drops_first())
                .min_by_key(|(_, h)| h.sent_at)
                .map(|(i, _)| i)
        };
        let Some(i) = oldest(true).or_else(|| oldest(false)) else {
            return;
        };
        let held = self.remove_held(i);
        match held.item.kind.drops_first() {
            true => self.dropped_stats += 1,
            false => self.dropped_other += 1,
        }
    }

    fn remove_held(&mut self, index: usize) -> Held {
        let held = self.held.swap_remove(index);
        self.held_bytes -= held.item.frame.len();
        held
    }

    /// A new message of `kind` is queued: a held one of that kind is older
    /// and pointless now. Returns how many were dropped.
    pub fn supersede(&mut self, kind: super::outqueue::Kind) -> usize {
        if !kind.supersedable() {
            return 0;
        }
        let mut dropped = 0;
        while let Some(i) = self.held.iter().position(|h| h.item.kind == kind) {
            self.remove_held(i);
            dropped += 1;
        }
        self.superseded += dropped as u64;
        dropped
    }

    /// The refused messages whose retry time has come, oldest sent first.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        if !self.held.iter().any(|h| h.due <= now) {
            return Vec::new();
        }
        let (due, later): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.due <= now);
        self.held = later;
        self.release(due)
    }

    /// Every held message, oldest sent first, whatever its retry time (at
    /// shutdown: one last try).
    pub fn take_all(&mut self) -> Vec<Outgoing> {
        let all = std::mem::take(&mut self.held);
        self.release(all)
    }

    /// Messages just taken out of `held`, to be sent again: oldest sent
    /// first, counted as retried.
    fn release(&mut self, mut out: Vec<Held>) -> Vec<Outgoing> {
        out.sort_by_key(|h| h.sent_at);
        self.retried += out.len() as u64;
        self.held_bytes -= out.iter().map(|h| h.item.frame.len()).sum::<usize>();
        out.into_iter().map(|h| h.item).collect()
    }

    /// When the next refused message is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.due).min()
    }

    /// The oldest queue `seq` among the messages kept or held: none older
    /// can come back to the queue (see `OutQueue::prune`).
    pub fn oldest_seq(&self) -> Option<u64> {
        let kept = self.kept.values().map(|k| k.item.seq);
        kept.chain(self.held.iter().map(|h| h.item.seq)).min()
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
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::outqueue::Kind;

    fn item(id: &str) -> Outgoing {
        let frame = format!("{{\"id\":\"{id}\"}}").into_bytes();
        Outgoing::with_id(Kind::Other, frame, Some(id.to_string()))
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
        let mut back = r.due(t0 + Duration::from_secs(2));
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].id.as_deref(), back[0].refusals), (Some("a"), 1));
        assert_eq!((r.retried, r.held()), (1, 0));
        // Sent and refused again: the backoff doubles.
        let t1 = t0 + Duration::from_secs(2);
        r.sent(back.remove(0), t1);
        assert!(r.refused("a", t1));
        let at = r.next_due().unwrap();
        assert!(at >= t1 + Duration::from_millis(1500), "{:?}", at - t1);
    }

    #[test]
    fn a_released_message_takes_its_count_along_and_leaves_nothing_behind() {
        let mut r = Refused::new(100, 1 << 20);
        let t0 = Instant::now();
        r.sent(item("a"), t0);
        assert!(r.refused("a", t0));
        let back = r.due(t0 + RETRY_MAX * 2);
        assert_eq!(back[0].refusals, 1);
        // Dropped from the send queue before it went again (superseded,
        // over the bound): nothing in the book still speaks of it.
        drop(back);
        assert_eq!(
            (r.kept.len(), r.held(), r.bytes, r.held_bytes),
            (0, 0, 0, 0)
        );
        // The same id sent anew starts its backoff from the beginning.
        let t1 = t0 + RETRY_MAX * 2;
        r.sent(item("a"), t1);
        assert!(r.refused("a", t1));
        assert!(r.next_due().unwrap() < t1 + RETRY_MIN.mul_f64(1.25));
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

    fn of(kind: Kind, id: &str) -> Outgoing {
        Outgoing { kind, ..item(id) }
    }

    #[test]
    fn held_messages_are_bounded_stats_first_then_the_oldest() {
        let mut r = Refused::new(3, 1 << 20);
        let t0 = Instant::now();
        let sent = [
            of(Kind::Other, "r1"),
            of(Kind::Stats, "s1"),
            of(Kind::Other, "r2"),
            of(Kind::Stats, "s2"),
            of(Kind::Other, "r3"),
        ];
        for (n, item) in sent.iter().enumerate() {
            let at = t0 + Duration::from_millis(n as u64);
            r.sent(item.clone(), at);
            assert!(r.refused(item.id.as_deref().unwrap(), at));
        }
        assert_eq!(r.held(), 3, "held to the bound");
        assert_eq!((r.dropped_stats, r.dropped_other), (2, 0), "stats first");
        let t1 = t0 + Duration::from_millis(10);
        r.sent(of(Kind::Other, "r4"), t1);
        assert!(r.refused("r4", t1));
        assert_eq!((r.held(), r.dropped_other), (3, 1));
        let back = r.due(t0 + RETRY_MAX * 2);
        let ids: Vec<_> = back.iter().map(|i| i.id.clone().unwrap()).collect();
        assert_eq!(
            ids,
            ["r2", "r3", "r4"],
            "the oldest went; the rest in sending order"
        );
        assert_eq!(r.held_bytes, 0);
    }

    #[test]
    fn held_messages_are_bounded_in_bytes() {
        let mut r = Refused::new(100, 30);
        let t0 = Instant::now();
        for id in ["aaaaaa", "bbbbbb", "cccccc"] {
            r.sent(item(id), t0);
            assert!(r.refused(id, t0));
        }
        assert!(r.held_bytes <= 30, "{}", r.held_bytes);
        assert_eq!(r.held() as u64 + r.dropped_other, 3);
    }

    #[test]
    fn a_newer_heartbeat_supersedes_a_held_one() {
        let mut r = Refused::new(100, 1 << 20);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        r.sent(of(Kind::Heartbeat, "h1"), t0);
        r.sent(of(Kind::Heartbeat, "h2"), t1);
        // The newer one's refusal may come back first.
        assert!(r.refused("h2", t1));
        assert!(r.refused("h1", t1));
        assert_eq!((r.held(), r.superseded), (1, 1));
        let back = r.due(t1 + RETRY_MAX * 2);
        assert_eq!(back[0].id.as_deref(), Some("h2"), "the newer one stays");
        // A new heartbeat queued makes a held one pointless.
        r.sent(of(Kind::Heartbeat, "h3"), t1);
        assert!(r.refused("h3", t1));
        r.sent(of(Kind::Other, "x"), t1);
        assert!(r.refused("x", t1));
        assert_eq!(r.supersede(Kind::Heartbeat), 1);
        assert_eq!(r.supersede(Kind::Other), 0, "only heartbeats and own stats");
        assert_eq!(r.held(), 1);
    }
}
