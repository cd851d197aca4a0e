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
//! Expiry prunes `order` too, so a stream of short-lived UUIDs leaves
//! nothing behind.
//!
//! Under CURVE each route also keeps the key its connection authenticated
//! with, so a new key set can drop the routes of removed keys, and the
//! table knows which UUID each routing id carries, so a route goes with its
//! connection (ROUTER_NOTIFY's disconnect notification).

use crate::curve::PublicKey;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

#[derive(Debug)]
struct Route {
    routing_id: Box<[u8]>,
    last_seen: u64,
    /// The connection's key, under CURVE.
    key: Option<PublicKey>,
}

#[derive(Debug)]
pub struct ClientTable {
    routes: HashMap<Uuid, Route>,
    /// Eviction order: (uuid, its last_seen when queued), oldest first.
    /// May hold UUIDs already gone; `expire` prunes them.
    order: VecDeque<(Uuid, u64)>,
    /// Under CURVE: the UUID each routing id carries (routes with a key).
    by_routing_id: HashMap<Box<[u8]>, Uuid>,
    capacity: usize,
    ttl_secs: u64,
}

impl ClientTable {
    pub fn new(capacity: usize, ttl_secs: u64) -> ClientTable {
        ClientTable {
            routes: HashMap::new(),
            order: VecDeque::new(),
            by_routing_id: HashMap::new(),
            capacity,
            ttl_secs,
        }
    }

    /// Records that `uuid` spoke through `routing_id` at `now` (Unix
    /// seconds), over a connection authenticated with `key` under CURVE.
    pub fn learn(&mut self, uuid: Uuid, routing_id: &[u8], now: u64, key: Option<PublicKey>) {
        if let Some(route) = self.routes.get_mut(&uuid) {
            route.last_seen = now;
            if *route.routing_id != *routing_id || route.key != key {
                if route.key.is_some() {
                    self.by_routing_id.remove(&route.routing_id);
                }
                route.routing_id = routing_id.into();
                route.key = key;
                if key.is_some() {
                    self.by_routing_id.insert(routing_id.into(), uuid);
                }
            }
            return;
        }
        if self.routes.len() >= self.capacity {
            self.evict_one();
        }
        let route = Route {
            routing_id: routing_id.into(),
            last_seen: now,
            key,
        };
        if key.is_some() {
            self.by_routing_id.insert(routing_id.into(), uuid);
        }
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

    /// Drops every entry idle for longer than the TTL, and the eviction
    /// order's entries of routes that are gone; returns how many routes.
    pub fn expire(&mut self, now: u64) -> usize {
        let ttl = self.ttl_secs;
        self.retain(|_, r| now.saturating_sub(r.last_seen) <= ttl)
    }

    /// Drops the route carried by `routing_id`, whose connection has gone
    /// (under CURVE a routing id carries one UUID); returns whether there
    /// was one. Its `order` entry goes at the next sweep.
    pub fn connection_gone(&mut self, routing_id: &[u8]) -> bool {
        let Some(uuid) = self.by_routing_id.remove(routing_id) else {
            return false;
        };
        self.routes.remove(&uuid).is_some()
    }

    /// Keeps only the routes whose (UUID, key) `allowed` accepts: after a
    /// key set changed, the routes of removed keys go at once.
    pub fn retain_keys(&mut self, allowed: impl Fn(&Uuid, &PublicKey) -> bool) -> usize {
        self.retain(|uuid, r| r.key.is_none_or(|key| allowed(uuid, &key)))
    }

    fn retain(&mut self, mut keep: impl FnMut(&Uuid, &Route) -> bool) -> usize {
        let before = self.routes.len();
        let by_routing_id = &mut self.by_routing_id;
        self.routes.retain(|uuid, r| {
            let kept = keep(uuid, r);
            if !kept && r.key.is_some() {
                by_routing_id.remove(&r.routing_id);
            }
            kept
        });
        let routes = &self.routes;
        // An entry is stale once its route is gone; one whose route was
        // seen again since is kept (evict_one re-queues it).
        self.order.retain(|(uuid, _)| routes.contains_key(uuid));
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
                    if let Some(route) = self.routes.remove(&uuid) {
                        if route.key.is_some() {
                            self.by_routing_id.remove(&route.routing_id);
                        }
                    }
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
        t.learn(id(1), b"a", 100, None);
        assert_eq!(t.route(&id(1), 100), Some(&b"a"[..]));
        t.learn(id(1), b"b", 101, None);
        assert_eq!(t.route(&id(1), 101), Some(&b"b"[..]));
        assert_eq!(t.route(&id(2), 101), None);
    }

    #[test]
    fn idle_routes_expire() {
        let mut t = ClientTable::new(10, 60);
        t.learn(id(1), b"a", 100, None);
        t.learn(id(2), b"b", 150, None);
        assert_eq!(t.route(&id(1), 161), None);
        assert_eq!(t.expire(161), 1);
        assert_eq!(t.len(), 1);
        assert!(t.route(&id(2), 161).is_some());
    }

    #[test]
    fn evicts_the_least_recently_seen() {
        let mut t = ClientTable::new(3, 1_000);
        t.learn(id(1), b"a", 1, None);
        t.learn(id(2), b"b", 2, None);
        t.learn(id(3), b"c", 3, None);
        t.learn(id(1), b"a", 4, None);
        t.learn(id(4), b"d", 5, None);
        assert!(t.route(&id(2), 5).is_none(), "2 was seen least recently");
        assert!(t.route(&id(1), 5).is_some());
        assert!(t.route(&id(3), 5).is_some());
        assert!(t.route(&id(4), 5).is_some());
    }

    #[test]
    fn eviction_order_stays_bounded_under_a_flood() {
        let mut t = ClientTable::new(1_000, 1_000_000);
        for n in 0..200_000 {
            t.learn(id(n), b"x", n as u64, None);
            t.learn(id(n / 2), b"x", n as u64, None);
        }
        assert_eq!(t.len(), 1_000);
        assert!(t.order.len() <= 2 * t.len(), "order has {}", t.order.len());
    }

    #[test]
    fn expiry_prunes_the_eviction_order() {
        // 200,000 one-message clients with a 1 s TTL: nothing may stay.
        let mut t = ClientTable::new(1_000_000, 1);
        for n in 0..200_000u64 {
            t.learn(id(n as u128), b"x", n / 5_000, None);
            if n % 5_000 == 0 {
                t.expire(n / 5_000);
            }
        }
        t.expire(1_000);
        assert_eq!(t.len(), 0);
        assert_eq!(t.order.len(), 0, "order kept entries of expired routes");
    }

    #[test]
    fn curve_routes_go_with_their_connection_and_key() {
        let (ka, kb) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let mut t = ClientTable::new(10, 60);
        t.learn(id(1), b"conn-a", 1, Some(ka));
        t.learn(id(2), b"conn-b", 1, Some(kb));
        assert!(!t.connection_gone(b"conn-x"));
        assert!(t.connection_gone(b"conn-a"));
        assert_eq!(t.route(&id(1), 1), None);
        // A reconnect under the same UUID moves the route to the new id;
        // the old connection's notification must not drop it.
        t.learn(id(2), b"conn-b2", 2, Some(kb));
        assert!(!t.connection_gone(b"conn-b"));
        assert_eq!(t.route(&id(2), 2), Some(&b"conn-b2"[..]));
        assert_eq!(t.retain_keys(|_, k| *k != kb), 1);
        assert_eq!(t.route(&id(2), 2), None);
        assert!(t.by_routing_id.is_empty());
    }

    #[test]
    fn never_grows_past_capacity() {
        let mut t = ClientTable::new(100, 60);
        for n in 0..10_000 {
            t.learn(id(n), b"x", n as u64, None);
        }
        assert_eq!(t.len(), 100);
        assert!(t.route(&id(9_999), 9_999).is_some());
    }
}
