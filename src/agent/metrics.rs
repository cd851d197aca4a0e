//! The agent's counters: shared atomics written by the threads, read for
//! the periodic stats log line and the final summary.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct AgentMetrics {
    pub local_accepted: AtomicU64,
    pub local_refused: AtomicU64,
    pub spooled: AtomicU64,
    pub acked: AtomicU64,
    pub resent: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_stats: AtomicU64,
    pub dropped_other: AtomicU64,
    pub router_errors: AtomicU64,
    pub plugin_runs: AtomicU64,
    pub plugin_refused: AtomicU64,
    pub plugin_timeouts: AtomicU64,
    pub statsd_lines: AtomicU64,
    pub statsd_bad: AtomicU64,
    pub statsd_dropped: AtomicU64,
    pub spool_live: AtomicU64,
    pub queue_len: AtomicU64,
}

impl AgentMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn summary_line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "stats: local_accepted={} local_refused={} sent={} spooled={} acked={} resent={} \
             spool_live={} queue={} dropped_stats={} dropped_other={} router_errors={} \
             plugin_runs={} plugin_refused={} plugin_timeouts={} statsd_lines={} statsd_bad={} statsd_dropped={}",
            g(&self.local_accepted),
            g(&self.local_refused),
            g(&self.sent),
            g(&self.spooled),
            g(&self.acked),
            g(&self.resent),
            g(&self.spool_live),
            g(&self.queue_len),
            g(&self.dropped_stats),
            g(&self.dropped_other),
            g(&self.router_errors),
            g(&self.plugin_runs),
            g(&self.plugin_refused),
            g(&self.plugin_timeouts),
            g(&self.statsd_lines),
            g(&self.statsd_bad),
            g(&self.statsd_dropped),
        )
    }
}
