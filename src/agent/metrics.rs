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
    /// Heartbeats and own stats samples dropped for a newer one.
    pub superseded: AtomicU64,
    /// Unacked messages refused as `overloaded` and queued again.
    pub refused_retried: AtomicU64,
    /// `overloaded` refusals of messages no longer kept (lost).
    pub refused_lost: AtomicU64,
    /// Refused messages waiting for their retry now.
    pub refused_held: AtomicU64,
    pub router_errors: AtomicU64,
    pub plugin_runs: AtomicU64,
    pub plugin_refused: AtomicU64,
    /// `run_plugin` requests answered by a run already waiting or running.
    pub plugin_shared: AtomicU64,
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

    /// Every counter by name, in the order the log line shows them.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Relaxed);
        vec![
            ("local_accepted", g(&self.local_accepted)),
            ("local_refused", g(&self.local_refused)),
            ("sent", g(&self.sent)),
            ("spooled", g(&self.spooled)),
            ("acked", g(&self.acked)),
            ("resent", g(&self.resent)),
            ("spool_live", g(&self.spool_live)),
            ("queue", g(&self.queue_len)),
            ("dropped_stats", g(&self.dropped_stats)),
            ("dropped_other", g(&self.dropped_other)),
            ("superseded", g(&self.superseded)),
            ("refused_retried", g(&self.refused_retried)),
            ("refused_lost", g(&self.refused_lost)),
            ("refused_held", g(&self.refused_held)),
            ("router_errors", g(&self.router_errors)),
            ("plugin_runs", g(&self.plugin_runs)),
            ("plugin_refused", g(&self.plugin_refused)),
            ("plugin_shared", g(&self.plugin_shared)),
            ("plugin_timeouts", g(&self.plugin_timeouts)),
            ("statsd_lines", g(&self.statsd_lines)),
            ("statsd_bad", g(&self.statsd_bad)),
            ("statsd_dropped", g(&self.statsd_dropped)),
        ]
    }

    pub fn summary_line(&self) -> String {
        let fields: Vec<String> = self
            .values()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("stats: {}", fields.join(" "))
    }
}
