//! The router's UUID → routing-id table.
//!
//! Learned from every valid client message, read by back-end deliveries.
//! Owned by the client thread alone (it is the only one that needs it), so
//! it is a plain `HashMap` without a lock. Bounded two ways: entries idle
//! for longer than the TTL expire, and when the table is full a new client
//! evicts the least recently seen one, so no stream of fresh UUIDs can grow
//! memory without bound.
//!
//! Eviction is the CLOCK approximation of LRU, amortised O(1): `order`
//! lists UUIDs oldest first with the `last_seen` they had when queued. The
//! front one is evicted if it has not been seen since; if it has, it goes to
//! the back with its new time. Seeing a client again costs nothing here.

use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

#[derive(Debug)]
struct Route {
    routing_id: Box<[u8]>,
    last_seen: u64,
}

#[derive(Debug)]
pub struct ClientTable {
    routes: HashMap<Uuid, Route>,
    /// Eviction order: (uuid, its last_seen when queued), oldest first.
    /// May hold UUIDs already gone; `expire` prunes them.
    order: VecDeque<(Uuid, u64)>,
    capacity: usize,
    ttl_secs: u64,
}

impl ClientTable {
    pub fn new(capacity: usize, ttl_secs: u64) -> ClientTable {
        ClientTable {
            routes: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            ttl_secs,
        }
    }

    /// Records that `uuid` spoke through `routing_id` at `now` (Unix seconds).
    pub fn learn(&mut self, uuid: Uuid, routing_id: &[u8], now: u64) {
        if let Some(route) = self.routes.get_mut(&uuid) {
            route.last_seen = now;
            if *route.routing_id != *routing_id {
                route.routing_id = routing_id.into();
            }
            return;
        }
        if self.routes.len() >= self.capacity {
            self.evict_one();
        }
        let route = Route {
            routing_id: routing_id.into(),
            last_seen: now,
        };
        self.routes.insert(uuid, route);
        self.order.push_back((uuid, now));
    }

    /// The routing id `uuid` last spoke through, unless it has expired.
    pub fn route(&self, uuid: &Uuid, now: u64) -> Option<&[u8]> {
        self.routes
            .get(uuid)
            .filter(|r| now.saturating_sub(r.last_seen) <= self.ttl_secs)
            .map(|r| &*r.routing_id)
    }

    /// Drops every entry idle for longer than the TTL; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.routes.len();
        let ttl = self.ttl_secs;
        self.routes
            .retain(|_, r| now.saturating_sub(r.last_seen) <= ttl);
        before - self.routes.len()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    fn evict_one(&mut self) {
        while let Some((uuid, queued_seen)) = self.order.pop_front() {
            match self.routes.get(&uuid) {
                // Already expired or evicted: a leftover entry.
                None => {}
                Some(route) if route.last_seen > queued_seen => {
                    self.order.push_back((uuid, route.last_seen));
                }
                Some(_) => {
                    self.routes.remove(&uuid);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn learns_and_relearns_a_route() {
        let mut t = ClientTable::new(10, 60);
        t.learn(id(1), b"a", 100);
        assert_eq!(t.route(&id(1), 100), Some(&b"a"[..]));
        t.learn(id(1), b"b", 101);
        assert_eq!(t.route(&id(1), 101), Some(&b"b"[..]));
        assert_eq!(t.route(&id(2), 101), None);
    }

    #[test]
    fn idle_routes_expire() {
        let mut t = ClientTable::new(10, 60);
        t.learn(id(1), b"a", 100);
        t.learn(id(2), b"b", 150);
        assert_eq!(t.route(&id(1), 161), None);
        assert_eq!(t.expire(161), 1);
        assert_eq!(t.len(), 1);
        assert!(t.route(&id(2), 161).is_some());
    }

    #[test]
    fn evicts_the_least_recently_seen() {
        let mut t = ClientTable::new(3, 1_000);
        t.learn(id(1), b"a", 1);
        t.learn(id(2), b"b", 2);
        t.learn(id(3), b"c", 3);
        t.learn(id(1), b"a", 4);
        t.learn(id(4), b"d", 5);
        assert!(t.route(&id(2), 5).is_none(), "2 was seen least recently");
        assert!(t.route(&id(1), 5).is_some());
        assert!(t.route(&id(3), 5).is_some());
        assert!(t.route(&id(4), 5).is_some());
    }

    #[test]
    fn eviction_order_stays_bounded_under_a_flood() {
        let mut t = ClientTable::new(1_000, 1_000_000);
        for n in 0..200_000 {
            t.learn(id(n), b"x", n as u64);
            t.learn(id(n / 2), b"x", n as u64);
        }
        assert_eq!(t.len(), 1_000);
        assert!(t.order.len() <= 2 * t.len(), "order has {}", t.order.len());
    }

    #[test]
    fn never_grows_past_capacity() {
        let mut t = ClientTable::new(100, 60);
        for n in 0..10_000 {
            t.learn(id(n), b"x", n as u64);
        }
        assert_eq!(t.len(), 100);
        assert!(t.route(&id(9_999), 9_999).is_some());
    }
}
