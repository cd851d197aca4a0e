//! Metrics to Graphite: plaintext lines over one persistent TCP connection.
//!
//! `line.rs` builds and sanitises the lines; `writer.rs` is the one thread
//! that owns the connection. [`Graphite`] is the handle the stats and result
//! sinks hold: [`Graphite::send`] never blocks (it queues into a bounded
//! buffer and, when that is full, drops the oldest lines and counts them),
//! so a dead carbon server costs metrics, never the sinks' progress.
//!
//! Delivery is at least once while a line is in the buffer: a batch whose
//! write failed is sent again in full after the reconnect, so carbon may see
//! a point twice (harmless: the later write of the same timestamp wins).
//! A line is lost by overflow (counted and logged), or when carbon dies
//! while it is in the kernel's socket buffer: the plaintext protocol has no
//! acknowledgement to resend on.

mod line;
mod writer;

use crate::config::{ConfigError, Env};
use crate::error::Error;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One plaintext line `PREFIX.PART1.PART2... VALUE TS\n`, or `None` when
/// the value is not finite or there is no metric name. The last part is the
/// metric name and may be dotted (its dots separate path segments); every
/// other part (host name, plugin name) is one segment, its dots becoming
/// `_`. Every segment is sanitised to `[A-Za-z0-9_-]`. See `line.rs`.
pub fn line(prefix: &str, parts: &[&str], value: f64, ts: i64) -> Option<String> {
    line::plaintext(prefix, parts, value, ts)
}

/// How often at most a run of dropped lines is logged.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where and how metrics are written (`VIGIL_GRAPHITE*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphiteConfig {
    /// `host:port` of carbon's plaintext receiver (`VIGIL_GRAPHITE`).
    pub server: String,
    /// The first path segment(s) of every metric (`VIGIL_GRAPHITE_PREFIX`).
    pub prefix: String,
    /// Lines held while carbon is slow or away (`VIGIL_GRAPHITE_BUFFER`).
    pub buffer: usize,
    /// Lines per write (`VIGIL_GRAPHITE_BATCH`).
    pub batch: usize,
    /// First reconnect delay (`VIGIL_GRAPHITE_BACKOFF_MIN_MS`).
    pub backoff_min: Duration,
    /// Longest reconnect delay (`VIGIL_GRAPHITE_BACKOFF_MAX_MS`).
    pub backoff_max: Duration,
    /// Bound on one connect or one write (`VIGIL_GRAPHITE_TIMEOUT_SECS`).
    pub timeout: Duration,
}

impl GraphiteConfig {
    pub fn from_env(env: &Env) -> Result<GraphiteConfig, ConfigError> {
        let server = crate::notify::config::host_port(
            "VIGIL_GRAPHITE",
            &env.string("VIGIL_GRAPHITE", "127.0.0.1:2003"),
            2003,
        )?;
        let prefix = env.string("VIGIL_GRAPHITE_PREFIX", "vigil");
        if !line::is_clean_dotted(&prefix) {
            return Err(ConfigError::new(
                "VIGIL_GRAPHITE_PREFIX",
                &prefix,
                "expected dot-separated names of letters, digits, _ and -",
            ));
        }
        let backoff_min = env.int("VIGIL_GRAPHITE_BACKOFF_MIN_MS", 100u64, 1, 60_000)?;
        let backoff_max = env.int("VIGIL_GRAPHITE_BACKOFF_MAX_MS", 30_000u64, 1, 3_600_000)?;
        if backoff_max < backoff_min {
            return Err(ConfigError::new(
                "VIGIL_GRAPHITE_BACKOFF_MAX_MS",
                &backoff_max.to_string(),
                format!("must be at least VIGIL_GRAPHITE_BACKOFF_MIN_MS ({backoff_min})"),
            ));
        }
        Ok(GraphiteConfig {
            server,
            prefix,
            buffer: env.int("VIGIL_GRAPHITE_BUFFER", 100_000usize, 1, 10_000_000)?,
            batch: env.int("VIGIL_GRAPHITE_BATCH", 500usize, 1, 100_000)?,
            backoff_min: Duration::from_millis(backoff_min),
            backoff_max: Duration::from_millis(backoff_max),
            timeout: Duration::from_secs(env.int("VIGIL_GRAPHITE_TIMEOUT_SECS", 5u64, 1, 600)?),
        })
    }
}

/// Counters of the writer, for logs, status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphiteStats {
    /// Lines written to carbon (a batch resent after a failure counts again).
    pub sent: u64,
    /// Lines dropped because the buffer was full (or the writer had stopped).
    pub dropped: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Lines waiting to be written now.
    pub buffered: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// Counters shared by the handle and the writer thread.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    /// Lines the writer holds outside the channel (its current batch).
    in_hand: AtomicU64,
    /// Dropped count at the last drop log, and when that was.
    dropped_logged: AtomicU64,
    last_drop_log_ms: AtomicU64,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct Graphite {
    lines: Sender<String>,
    /// A second receiving end, used only to drop the oldest line on overflow.
    oldest: Receiver<String>,
    stop: Sender<Instant>,
    counters: Arc<Counters>,
    started: Instant,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Graphite {
    /// Starts the writer thread. It connects in the background: carbon need
    /// not be up yet.
    pub fn start(config: GraphiteConfig) -> Result<Graphite, Error> {
        let (lines, rx) = bounded(config.buffer);
        let (stop, stop_rx) = bounded(1);
        let counters = Arc::new(Counters::default());
        let timeout = config.timeout;
        let writer = writer::Writer::new(config, rx.clone(), stop_rx, Arc::clone(&counters));
        let thread = std::thread::Builder::new()
            .name("graphite".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::setup("graphite writer thread", e))?;
        Ok(Graphite {
            lines,
            oldest: rx,
            stop,
            counters,
            started: Instant::now(),
            timeout,
            thread: Some(thread),
        })
    }

    /// Queues lines without blocking; when the bounded buffer is full the oldest are dropped and counted (logged, rate-limited).
    /// A line missing its final newline gets one.
    pub fn send(&self, lines: Vec<String>) {
        for mut l in lines {
            if !l.ends_with('\n') {
                l.push('\n');
            }
            self.push(l);
        }
        self.log_drops();
    }

    fn push(&self, mut l: String) {
        loop {
            match self.lines.try_send(l) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    // Drop the oldest so the newest, most useful point stays.
                    if self.oldest.try_recv().is_ok() {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    l = back;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Logs the lines dropped since the last log, at most every
    /// [`DROP_LOG_EVERY`].
    fn log_drops(&self) {
        let c = &self.counters;
        let dropped = c.dropped.load(Ordering::Relaxed);
        let logged = c.dropped_logged.load(Ordering::Relaxed);
        if dropped == logged {
            return;
        }
        let now_ms = self.started.elapsed().as_millis() as u64 + DROP_LOG_EVERY.as_millis() as u64;
        let last = c.last_drop_log_ms.load(Ordering::Relaxed);
        if now_ms < last + DROP_LOG_EVERY.as_millis() as u64 {
            return;
        }
        // One thread wins the right to log this window.
        if c.last_drop_log_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            c.dropped_logged.store(dropped, Ordering::Relaxed);
            log::warn!(
                "graphite: buffer full, dropped {} oldest line(s) ({dropped} in all); carbon is slow or unreachable",
                dropped - logged
            );
        }
    }

    /// The writer's counters now.
    pub fn stats(&self) -> GraphiteStats {
        let c = &self.counters;
        GraphiteStats {
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            buffered: self.lines.len() as u64 + c.in_hand.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
        }
    }

    /// Flushes what it can within `deadline`, then stops the thread.
    /// Lines still unwritten then are counted as dropped and logged.
    pub fn stop(mut self, deadline: std::time::Duration) {
        self.shut_down(deadline);
    }

    fn shut_down(&mut self, deadline: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.stop.try_send(Instant::now() + deadline);
        if thread.join().is_err() {
            log::error!("graphite: the writer thread panicked");
        }
        let left = self.oldest.try_iter().count() as u64
            + self.counters.in_hand.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.counters.dropped.fetch_add(left, Ordering::Relaxed);
            log::warn!("graphite: stopped with {left} line(s) unwritten");
        }
    }
}

/// A handle dropped without [`Graphite::stop`] (e.g. on an error path)
/// still flushes for at most one write timeout and joins the thread.
impl Drop for Graphite {
    fn drop(&mut self) {
        let timeout = self.timeout;
        self.shut_down(timeout);
    }
}

#[cfg(test)]
mod tests;
