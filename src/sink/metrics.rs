//! The sinks' counters, and a log that cannot be flooded.
//!
//! Counters are relaxed atomics: each has one writer (a worker, or the ack
//! thread) and readers only want a recent value for the periodic stats line
//! and the summary at exit.

use super::config::SinkType;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One sink type's counters.
#[derive(Debug)]
pub struct TypeMetrics {
    pub kind: SinkType,
    /// Messages read off the PULL socket.
    pub received: AtomicU64,
    /// Messages handled and committed to the store.
    pub handled: AtomicU64,
    /// Messages refused: wrong frames, bad JSON, missing or mistyped fields.
    pub malformed: AtomicU64,
    /// Parts of otherwise good messages refused: a metric that is not a
    /// number, a plugin entry without a command.
    pub rejected_items: AtomicU64,
    /// Resends of a message already handled.
    pub duplicates: AtomicU64,
    /// Messages lost to a store failure (their acks are not sent).
    pub store_errors: AtomicU64,
    /// Notifications raised (heartbeat loss, result change).
    pub raised: AtomicU64,
    /// Notification handler attempts that failed.
    pub handler_failures: AtomicU64,
    /// Acks handed to the ack thread, and those refused because its queue
    /// was full (the agent resends; the duplicate is acked then).
    pub acks_queued: AtomicU64,
    pub acks_dropped: AtomicU64,
}

impl TypeMetrics {
    fn new(kind: SinkType) -> TypeMetrics {
        TypeMetrics {
            kind,
            received: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            rejected_items: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            raised: AtomicU64::new(0),
            handler_failures: AtomicU64::new(0),
            acks_queued: AtomicU64::new(0),
            acks_dropped: AtomicU64::new(0),
        }
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }

    /// `received=.. handled=.. ...`, nonzero counters only after the first two.
    pub fn line(&self) -> String {
        let mut out = format!(
            "{}: received={} handled={}",
            self.kind,
            self.received.load(Relaxed),
            self.handled.load(Relaxed)
        );
        for (name, counter) in [
            ("malformed", &self.malformed),
            ("rejected_items", &self.rejected_items),
            ("duplicates", &self.duplicates),
            ("store_errors", &self.store_errors),
            ("raised", &self.raised),
            ("handler_failures", &self.handler_failures),
            ("acks_queued", &self.acks_queued),
            ("acks_dropped", &self.acks_dropped),
        ] {
            let n = counter.load(Relaxed);
            if n > 0 {
                let _ = write!(out, " {name}={n}");
            }
        }
        out
    }
}

/// Every counter of one sink process.
#[derive(Debug)]
pub struct Metrics {
    pub types: Vec<TypeMetrics>,
    pub acks_sent: AtomicU64,
    pub acks_failed: AtomicU64,
    /// Outbox attempts (raised notifications), and those fully handled.
    pub outbox_attempts: AtomicU64,
    pub outbox_handled: AtomicU64,
}

impl Metrics {
    pub fn new(types: &[SinkType]) -> Metrics {
        Metrics {
            types: types.iter().map(|t| TypeMetrics::new(*t)).collect(),
            acks_sent: AtomicU64::new(0),
            acks_failed: AtomicU64::new(0),
            outbox_attempts: AtomicU64::new(0),
            outbox_handled: AtomicU64::new(0),
        }
    }

    /// The counters of `kind` (which this process runs).
    pub fn of(&self, kind: SinkType) -> &TypeMetrics {
        self.types
            .iter()
            .find(|t| t.kind == kind)
            .expect("metrics exist for every type this process runs")
    }

    pub fn summary_line(&self) -> String {
        let types: Vec<String> = self.types.iter().map(TypeMetrics::line).collect();
        format!(
            "{}; acks sent={} failed={}; outbox attempts={} handled={}",
            types.join("; "),
            self.acks_sent.load(Relaxed),
            self.acks_failed.load(Relaxed),
            self.outbox_attempts.load(Relaxed),
            self.outbox_handled.load(Relaxed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_nonzero_counters() {
        let m = Metrics::new(&[SinkType::Stats]);
        TypeMetrics::add(&m.of(SinkType::Stats).received, 3);
        TypeMetrics::add(&m.of(SinkType::Stats).malformed, 1);
        assert_eq!(
            m.of(SinkType::Stats).line(),
            "stats: received=3 handled=0 malformed=1"
        );
    }
}
