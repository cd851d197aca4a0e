//! The router's counters: written by the socket threads, read by the
//! `status` op and the periodic stats log.
//!
//! Plain relaxed atomics: readers only need a recent value, so no lock sits
//! on the hot path. Most counters have one writer; `queued` has two (the
//! client thread adds a batch, its sink thread subtracts it when sent).
//!
//! The counters written per message, and each type's `queued`, sit on cache
//! lines of their own (`CachePadded`). Unpadded, `received` shared a line
//! with the `types` vector that every sink thread reads per message, so
//! both threads missed on it for every message: three quarters of the
//! client and sink loops' own time in `perf annotate` (2-3 % of the
//! router's CPU in a 100-client stream).

use crate::protocol::{RejectCode, RouterStatus, StatusCounters};
use crossbeam_utils::CachePadded;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// One sink type's counters and queue depth.
#[derive(Debug)]
pub struct TypeMetrics {
    pub name: String,
    /// Messages handed to this type's PUSH socket.
    pub forwarded: AtomicU64,
    /// Messages accepted for this type and not yet handed to its PUSH
    /// socket: the depth `VIGIL_QUEUE_CAPACITY` bounds.
    pub queued: CachePadded<AtomicUsize>,
    /// Messages still queued when the drain deadline passed at shutdown.
    pub dropped_at_exit: AtomicU64,
    /// Times the client thread stopped reading input because this type's
    /// queue was full (back-pressure, see `pressure.rs`).
    pub waits: AtomicU64,
}

/// Every counter of one router process.
#[derive(Debug)]
pub struct Metrics {
    pub started: Instant,
    pub received: CachePadded<AtomicU64>,
    pub rejected: [AtomicU64; RejectCode::ALL.len()],
    pub delivered: AtomicU64,
    pub undeliverable: AtomicU64,
    /// Replies (welcome, error) libzmq would not take: the client's queue was
    /// full or it had gone.
    pub replies_dropped: AtomicU64,
    pub clients: CachePadded<AtomicUsize>,
    /// CURVE handshakes the ZAP handler refused.
    pub auth_failures: AtomicU64,
    /// Messages refused for their connection's key: a `uuid` other than
    /// the connection's (answered `forbidden`), or a key removed from the
    /// files since the connection began (dropped without a word).
    pub forbidden: AtomicU64,
    pub types: Vec<CachePadded<TypeMetrics>>,
}

impl Metrics {
    pub fn new(types: Vec<String>) -> Metrics {
        Metrics {
            started: Instant::now(),
            received: CachePadded::new(AtomicU64::new(0)),
            rejected: Default::default(),
            delivered: AtomicU64::new(0),
            undeliverable: AtomicU64::new(0),
            replies_dropped: AtomicU64::new(0),
            clients: CachePadded::new(AtomicUsize::new(0)),
            auth_failures: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            types: types
                .into_iter()
                .map(|name| {
                    CachePadded::new(TypeMetrics {
                        name,
                        forwarded: AtomicU64::new(0),
                        queued: CachePadded::new(AtomicUsize::new(0)),
                        dropped_at_exit: AtomicU64::new(0),
                        waits: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    pub fn reject(&self, code: RejectCode) {
        self.rejected[code as usize].fetch_add(1, Relaxed);
        if code == RejectCode::Forbidden {
            self.forbidden.fetch_add(1, Relaxed);
        }
    }

    fn forwarded_total(&self) -> u64 {
        self.types.iter().map(|t| t.forwarded.load(Relaxed)).sum()
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `status` reply of `PROTOCOL.md`, with per-type and per-code detail.
    pub fn status(&self, router: &str) -> RouterStatus {
        let per_type = |f: &dyn Fn(&TypeMetrics) -> u64| -> BTreeMap<String, u64> {
            self.types.iter().map(|t| (t.name.clone(), f(t))).collect()
        };
        let rejected_by_code = RejectCode::ALL
            .iter()
            .map(|&c| {
                (
                    c.as_str().to_string(),
                    self.rejected[c as usize].load(Relaxed),
                )
            })
            .collect();
        RouterStatus {
            ok: true,
            router: router.to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            clients: self.clients.load(Relaxed) as u64,
            counters: StatusCounters {
                received: self.received.load(Relaxed),
                forwarded: self.forwarded_total(),
                rejected: self.rejected_total(),
                delivered: self.delivered.load(Relaxed),
                undeliverable: self.undeliverable.load(Relaxed),
                replies_dropped: self.replies_dropped.load(Relaxed),
                auth_failures: self.auth_failures.load(Relaxed),
                forbidden: self.forbidden.load(Relaxed),
            },
            forwarded_by_type: per_type(&|t| t.forwarded.load(Relaxed)),
            rejected_by_code,
            queue_depth: per_type(&|t| t.queued.load(Relaxed) as u64),
            backpressure_waits_by_type: per_type(&|t| t.waits.load(Relaxed)),
        }
    }

    /// The periodic one-line summary for the log.
    pub fn summary_line(&self) -> String {
        let list = |f: &dyn Fn(&TypeMetrics) -> u64| {
            let items: Vec<String> = self
                .types
                .iter()
                .map(|t| format!("{}:{}", t.name, f(t)))
                .collect();
            items.join(",")
        };
        let rejected: Vec<String> = RejectCode::ALL
            .iter()
            .map(|&c| (c, self.rejected[c as usize].load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .map(|(c, n)| format!("{}:{n}", c.as_str()))
            .collect();
        format!(
            "stats: received={} forwarded={{{}}} rejected={{{}}} delivered={} undeliverable={} clients={} queues={{{}}}",
            self.received.load(Relaxed),
            list(&|t| t.forwarded.load(Relaxed)),
            rejected.join(","),
            self.delivered.load(Relaxed),
            self.undeliverable.load(Relaxed),
            self.clients.load(Relaxed),
            list(&|t| t.queued.load(Relaxed) as u64),
        )
    }
}
