//! The router's UUID → routing-id table.
//!
//! Learned from every valid client message, read by back-end deliveries.
//! Owned by the client thread alone (it is the only one that needs it), so
//! it is a plain `HashMap` without a lock. Bounded two ways: entries idle
//! for longer than the TTL expire, and when the table is full a new client
//! evicts the stalest of a small sample, so no stream of fresh UUIDs can grow
//! memory without bound.

use std::collections::HashMap;
use uuid::Uuid;

/// How many entries are looked at to pick one to evict when full. A sample
/// keeps eviction O(1) under a flood of new UUIDs, at the price of evicting
/// a stale entry rather than always the stalest.
const EVICTION_SAMPLE: usize = 8;

#[derive(Debug)]
struct Route {
    routing_id: Box<[u8]>,
    last_seen: u64,
}

#[derive(Debug)]
pub struct ClientTable {
    routes: HashMap<Uuid, Route>,
    capacity: usize,
    ttl_secs: u64,
}

impl ClientTable {
    pub fn new(capacity: usize, ttl_secs: u64) -> ClientTable {
        ClientTable {
            routes: HashMap::new(),
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
        let victim = self
            .routes
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(uuid, _)| *uuid);
        if let Some(uuid) = victim {
            self.routes.remove(&uuid);
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
    fn never_grows_past_capacity() {
        let mut t = ClientTable::new(100, 60);
        for n in 0..10_000 {
            t.learn(id(n), b"x", n as u64);
        }
        assert_eq!(t.len(), 100);
        assert!(t.route(&id(9_999), 9_999).is_some());
    }
}
