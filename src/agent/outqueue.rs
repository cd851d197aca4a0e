//! The bounded memory queue of unacked traffic (heartbeats, stats,
//! registrations, results) waiting for a router to become reachable, or
//! to be sent again after a router refused it as `overloaded`.
//!
//! Unacked messages are at most once by contract, so when the queue is full
//! something is dropped, and counted: the oldest stats first (a newer
//! sample of the same metrics follows), then the oldest message of any
//! other kind. A heartbeat, or the agent's own stats sample, is superseded
//! by a newer one of its kind: queueing the newer drops the older (counted
//! as `superseded`), since sending it would say nothing the newer does not.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stats from local processes or statsd: dropped first when full.
    Stats,
    /// The agent's heartbeat: a newer one supersedes it.
    Heartbeat,
    /// The agent's own counters (`vigil.agent.*`): a newer sample
    /// supersedes it, and it is dropped first when full, like stats.
    AgentStats,
    Other,
}

impl Kind {
    /// Whether a newer message of this kind makes an older one pointless.
    pub fn supersedable(self) -> bool {
        matches!(self, Kind::Heartbeat | Kind::AgentStats)
    }

    /// Whether this kind is dropped first when a queue is full.
    pub fn drops_first(self) -> bool {
        matches!(self, Kind::Stats | Kind::AgentStats)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: Kind,
    pub frame: Vec<u8>,
    /// The message's `id`, which a router echoes when it refuses it, so a
    /// refused message can be found and sent again.
    pub id: Option<String>,
    /// How often a router refused it so far, for its retry backoff. Kept
    /// here, not in a book by id: a book would have to learn of every way
    /// a message leaves the queue, or grow.
    pub refusals: u32,
}

impl Outgoing {
    /// A message whose `id` (if any) is read from the frame itself.
    pub fn new(kind: Kind, frame: Vec<u8>) -> Outgoing {
        let id = serde_json::from_slice::<serde_json::Value>(&frame)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string));
        Outgoing::with_id(kind, frame, id)
    }

    /// A message whose `id` is known already.
    pub fn with_id(kind: Kind, frame: Vec<u8>, id: Option<String>) -> Outgoing {
        Outgoing {
            kind,
            frame,
            id,
            refusals: 0,
        }
    }
}

#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    pub dropped_stats: u64,
    pub dropped_other: u64,
    /// Heartbeats and own stats samples dropped for a newer one.
    pub superseded: u64,
}

impl OutQueue {
    pub fn new(max_items: usize, max_bytes: usize) -> OutQueue {
        OutQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            dropped_stats: 0,
            dropped_other: 0,
            superseded: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `item`, a new message, dropping what it supersedes and old
    /// ones while over either bound.
    pub fn push(&mut self, item: Outgoing) {
        if item.kind.supersedable() {
            self.remove_kind(item.kind);
        }
        self.push_back(item);
    }

    /// Queues again `item`, sent earlier and refused by a router, unless a
    /// newer message of its kind is queued: everything queued is newer
    /// than it, since it was at the front when it went out.
    pub fn requeue(&mut self, item: Outgoing) {
        if item.kind.supersedable() && self.items.iter().any(|i| i.kind == item.kind) {
            self.superseded += 1;
            return;
        }
        self.push_back(item);
    }

    fn remove_kind(&mut self, kind: Kind) {
        let before = self.items.len();
        let mut freed = 0;
        self.items.retain(|i| {
            let keep = i.kind != kind;
            if !keep {
                freed += i.frame.len();
            }
            keep
        });
        self.bytes -= freed;
        self.superseded += (before - self.items.len()) as u64;
    }

    fn push_back(&mut self, item: Outgoing) {
        self.bytes += item.frame.len();
        self.items.push_back(item);
        while self.items.len() > 1
            && (self.items.len() > self.max_items || self.bytes > self.max_bytes)
        {
            self.drop_one();
        }
    }

    fn drop_one(&mut self) {
        let index = self
            .items
            .iter()
            .position(|i| i.kind.drops_first())
            .unwrap_or(0);
        if let Some(item) = self.items.remove(index) {
            self.bytes -= item.frame.len();
            if item.kind.drops_first() {
                self.dropped_stats += 1;
            } else {
                self.dropped_other += 1;
            }
        }
    }

    /// Puts back at the front the item just popped (it could not be sent).
    pub fn unpop(&mut self, item: Outgoing) {
        self.bytes += item.frame.len();
        self.items.push_front(item);
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        let item = self.items.pop_front()?;
        self.bytes -= item.frame.len();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, text: &str) -> Outgoing {
        Outgoing::with_id(kind, text.as_bytes().to_vec(), None)
    }

    fn texts(q: &mut OutQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop())
            .map(|i| String::from_utf8(i.frame).unwrap())
            .collect()
    }

    #[test]
    fn a_newer_heartbeat_supersedes_the_queued_one() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.push(item(Kind::Heartbeat, "h1"));
        q.push(item(Kind::Other, "r1"));
        q.push(item(Kind::AgentStats, "a1"));
        q.push(item(Kind::Heartbeat, "h2"));
        q.push(item(Kind::AgentStats, "a2"));
        q.push(item(Kind::Stats, "s1"));
        q.push(item(Kind::Stats, "s2"));
        assert_eq!(q.superseded, 2);
        assert_eq!(texts(&mut q), ["r1", "h2", "a2", "s1", "s2"]);
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn a_refused_heartbeat_is_requeued_only_without_a_newer_one() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.requeue(item(Kind::Heartbeat, "h1"));
        q.requeue(item(Kind::Other, "r1"));
        q.push(item(Kind::Heartbeat, "h2"));
        q.requeue(item(Kind::Heartbeat, "h0"));
        q.requeue(item(Kind::Other, "r0"));
        assert_eq!(q.superseded, 2, "h1 by h2, h0 by h2");
        assert_eq!(texts(&mut q), ["r1", "h2", "r0"]);
    }

    #[test]
    fn the_id_is_read_from_the_frame() {
        let o = Outgoing::new(Kind::Other, br#"{"type":"result","id":"r-1"}"#.to_vec());
        assert_eq!(o.id.as_deref(), Some("r-1"));
        assert_eq!(Outgoing::new(Kind::Other, b"{}".to_vec()).id, None);
    }

    #[test]
    fn oldest_stats_go_first_then_oldest_other() {
        let mut q = OutQueue::new(3, 1 << 20);
        q.push(item(Kind::Other, "h1"));
        q.push(item(Kind::Stats, "s1"));
        q.push(item(Kind::Stats, "s2"));
        q.push(item(Kind::Other, "h2"));
        assert_eq!((q.dropped_stats, q.dropped_other), (1, 0));
        q.push(item(Kind::Other, "h3"));
        q.push(item(Kind::Other, "h4"));
        assert_eq!((q.dropped_stats, q.dropped_other), (2, 1));
        let left: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|i| String::from_utf8(i.frame).unwrap())
            .collect();
        assert_eq!(left, ["h2", "h3", "h4"]);
    }

    #[test]
    fn byte_bound_applies() {
        let mut q = OutQueue::new(100, 10);
        q.push(item(Kind::Stats, "123456"));
        q.push(item(Kind::Stats, "123456"));
        assert_eq!((q.len(), q.dropped_stats), (1, 1));
    }
}
