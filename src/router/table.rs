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
//! nothing behind. Each entry names its route's generation, so the entry
//! left by a route that went with its connection is not mistaken for the
//! entry of the same UUID's next route; `order` holds one live entry per
//! route, and is compacted when its stale ones outnumber them.
//!
//! Under CURVE each route also keeps the key its connection authenticated
//! with, so a new key set can drop the routes of removed keys, and the
//! table knows which UUID each routing id carries, so a route goes with its
//! connection (ROUTER_NOTIFY's disconnect notification). A late message
//! from an older connection of the same UUID does not take the route back
//! from a newer one (see [`older_connection`]): that connection's
//! notification would then drop the route of the live one.

use crate::curve::PublicKey;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

#[derive(Debug)]
struct Route {
    routing_id: Box<[u8]>,
    last_seen: u64,
    /// The connection's key, under CURVE.
    key: Option<PublicKey>,
    /// Which of the table's routes this is, to tell its `order` entry
    /// from one left by an earlier route of the same UUID.
    generation: u64,
}

/// An eviction-order entry: a route, and its `last_seen` when queued.
#[derive(Debug, Clone, Copy)]
struct Queued {
    uuid: Uuid,
    generation: u64,
    seen: u64,
}

#[derive(Debug)]
pub struct ClientTable {
    routes: HashMap<Uuid, Route>,
    /// Eviction order, oldest first: one entry per route, and entries of
    /// routes already gone (`expire` prunes them, `connection_gone` too
    /// when they outnumber the live ones).
    order: VecDeque<Queued>,
    /// The generation of the next route inserted.
    next_generation: u64,
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
            next_generation: 0,
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
            // The common case, the same connection again, decodes nothing.
            let same = *route.routing_id == *routing_id && route.key == key;
            if same || older_connection(routing_id, &route.routing_id) {
                return;
            }
            if route.key.is_some() {
                self.by_routing_id.remove(&route.routing_id);
            }
            route.routing_id = routing_id.into();
            route.key = key;
            if key.is_some() {
                self.by_routing_id.insert(routing_id.into(), uuid);
            }
            return;
        }
        if self.routes.len() >= self.capacity {
            self.evict_one();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let route = Route {
            routing_id: routing_id.into(),
            last_seen: now,
            key,
            generation,
        };
        if key.is_some() {
            self.by_routing_id.insert(routing_id.into(), uuid);
        }
        self.routes.insert(uuid, route);
        self.order.push_back(Queued {
            uuid,
            generation,
            seen: now,
        });
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
    /// was one. Its `order` entry goes at the next sweep, or now if the
    /// stale entries outnumber the live ones: a client that connects, says
    /// one thing and leaves, in a loop, must not grow `order` until then.
    pub fn connection_gone(&mut self, routing_id: &[u8]) -> bool {
        let Some(uuid) = self.by_routing_id.remove(routing_id) else {
            return false;
        };
        let gone = self.routes.remove(&uuid).is_some();
        // One live entry per route, so the rest are stale; compacting only
        // past twice the routes keeps it amortised O(1) per call.
        if self.order.len() > 2 * self.routes.len() {
            self.prune_order();
        }
        gone
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
        self.prune_order();
        before - self.routes.len()
    }

    /// Drops the `order` entries of routes that are gone. One whose route
    /// was seen again since is kept (evict_one re-queues it).
    fn prune_order(&mut self) {
        let routes = &self.routes;
        self.order.retain(|q| is_live(routes, q));
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    fn evict_one(&mut self) {
        while let Some(queued) = self.order.pop_front() {
            match live_route(&self.routes, &queued) {
                // Already gone (maybe followed by another route of the same
                // UUID, with an entry of its own): a leftover entry.
                None => {}
                Some(route) if route.last_seen > queued.seen => {
                    self.order.push_back(Queued {
                        seen: route.last_seen,
                        ..queued
                    });
                }
                Some(_) => {
                    if let Some(route) = self.routes.remove(&queued.uuid) {
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

/// The route `queued` is the entry of, if it is still in `routes`.
fn live_route<'r>(routes: &'r HashMap<Uuid, Route>, queued: &Queued) -> Option<&'r Route> {
    routes
        .get(&queued.uuid)
        .filter(|r| r.generation == queued.generation)
}

/// Whether `queued` is the entry of a route still in `routes`.
fn is_live(routes: &HashMap<Uuid, Route>, queued: &Queued) -> bool {
    live_route(routes, queued).is_some()
}

/// Whether `candidate` names a connection made before `current`'s, as far
/// as that can be told: both are ids libzmq generated (a zero byte, then a
/// big-endian counter the ROUTER raises by one per connection, from a
/// random start), compared with wrap-around. A message read from an older
/// connection after a newer one's is a leftover of a reconnect: its
/// connection's disconnect notification follows it in the same pipe.
/// Announced ids (plaintext agents announce their UUID) are never older.
/// A peer may announce an id of the generated shape; it can then only
/// keep its own UUID's route from moving, which its key allows anyway.
fn older_connection(candidate: &[u8], current: &[u8]) -> bool {
    fn counter(id: &[u8]) -> Option<u32> {
        match id {
            [0, rest @ ..] => Some(u32::from_be_bytes(rest.try_into().ok()?)),
            _ => None,
        }
    }
    match (counter(candidate), counter(current)) {
        (Some(c), Some(r)) => (c.wrapping_sub(r) as i32) < 0,
        _ => false,
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
    fn reconnects_leave_the_eviction_order_bounded() {
        // One client connects, sends one message and disconnects, over and
        // over, with no sweep in between.
        let key = PublicKey([1; 32]);
        let mut t = ClientTable::new(10, 1_000_000);
        t.learn(id(2), b"steady", 0, Some(key));
        for n in 0..100_000u64 {
            let conn = n.to_be_bytes();
            t.learn(id(1), &conn, n, Some(key));
            assert!(t.connection_gone(&conn));
            assert!(
                t.order.len() <= 2 * t.len() + 1,
                "order has {} entries for {} route(s)",
                t.order.len(),
                t.len()
            );
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(0), 0);
        assert_eq!(t.order.len(), 1);
    }

    #[test]
    fn a_stale_entry_does_not_stand_for_the_next_route_of_its_uuid() {
        let key = PublicKey([1; 32]);
        let mut t = ClientTable::new(3, 1_000);
        t.learn(id(1), b"old", 1, Some(key));
        t.learn(id(2), b"b", 1, None);
        assert!(t.connection_gone(b"old"));
        // 1 is back within the same second, after 2, with its old entry
        // still at the front: that entry must not evict the new route.
        t.learn(id(1), b"new", 1, Some(key));
        t.learn(id(3), b"c", 2, None);
        t.learn(id(4), b"d", 3, None);
        assert!(t.route(&id(2), 3).is_none(), "2 was seen least recently");
        assert!(t.route(&id(1), 3).is_some());
        assert!(t.route(&id(3), 3).is_some());
        assert_eq!(t.order.len(), t.len());
    }

    /// A routing id as libzmq generates it, from its counter.
    fn generated(n: u32) -> Vec<u8> {
        let mut id = vec![0];
        id.extend_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn a_late_message_from_an_older_connection_keeps_the_newer_route() {
        let key = PublicKey([1; 32]);
        let (a, b) = (generated(u32::MAX), generated(0));
        let mut t = ClientTable::new(10, 60);
        t.learn(id(1), &a, 1, Some(key));
        // A reconnect (the counter wrapped in between), then a message
        // still queued from the old connection, then its notification.
        t.learn(id(1), &b, 2, Some(key));
        t.learn(id(1), &a, 3, Some(key));
        assert_eq!(t.route(&id(1), 3), Some(&b[..]));
        assert!(!t.connection_gone(&a));
        assert_eq!(t.route(&id(1), 3), Some(&b[..]));
        // Newer connections, and announced ids, still move the route.
        t.learn(id(1), &generated(1), 4, Some(key));
        assert_eq!(t.route(&id(1), 4), Some(&generated(1)[..]));
        t.learn(id(1), b"announced", 5, Some(key));
        assert_eq!(t.route(&id(1), 5), Some(&b"announced"[..]));
        t.learn(id(1), &b, 6, Some(key));
        assert_eq!(t.route(&id(1), 6), Some(&b[..]));
    }

    #[test]
    fn only_generated_ids_are_ordered() {
        assert!(older_connection(&generated(5), &generated(6)));
        assert!(!older_connection(&generated(6), &generated(5)));
        assert!(!older_connection(&generated(6), &generated(6)));
        assert!(older_connection(&generated(u32::MAX), &generated(0)));
        assert!(!older_connection(&generated(0), &generated(u32::MAX)));
        assert!(!older_connection(b"\0abc", &generated(1)), "4 bytes");
        assert!(!older_connection(&generated(1), b"uuid-text"));
        assert!(!older_connection(b"\x01\0\0\0\0", &generated(1)));
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
