//! The bounded memory queue of unacked traffic (heartbeats, stats,
//! registrations, results) waiting for a router to become reachable.
//!
//! Unacked messages are at most once by contract, so when the queue is full
//! something is dropped, and counted: the oldest stats first (a newer
//! sample of the same metrics follows), then the oldest message of any
//! other kind.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stats,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: Kind,
    pub frame: Vec<u8>,
}

#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    pub dropped_stats: u64,
    pub dropped_other: u64,
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
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `item`, dropping old ones while over either bound.
    pub fn push(&mut self, item: Outgoing) {
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
            .position(|i| i.kind == Kind::Stats)
            .unwrap_or(0);
        if let Some(item) = self.items.remove(index) {
            self.bytes -= item.frame.len();
            match item.kind {
                Kind::Stats => self.dropped_stats += 1,
                Kind::Other => self.dropped_other += 1,
            }
        }
    }

    pub fn front(&self) -> Option<&Outgoing> {
        self.items.front()
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
        Outgoing {
            kind,
            frame: text.as_bytes().to_vec(),
        }
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
