//! The outbox: runs the handlers of notifications vigil raised itself
//! (heartbeat loss and recovery, result changes, the scheduler's overdue
//! runs) and of client notifications that cannot count on a resend,
//! retrying with exponential backoff until every handler succeeded.
//!
//! Rows come from any process sharing the store, so the outbox claims one
//! due row at a time (a conditional update that pushes its next attempt a
//! lease ahead): two outboxes never run the same notification at once, and
//! one that dies mid-attempt leaves the row to be retried when the lease
//! ends. Between rows it sleeps on its doorbell until the next one is due,
//! at most `VIGIL_OUTBOX_POLL_MS` (rows other processes raise ring no bell
//! here); workers of this process ring it when they raise one, and so does
//! shutdown.

use super::handling;
use super::metrics::{Metrics, RateLimitedLog};
use crate::doorbell::Doorbell;
use crate::notify::Handlers;
use crate::signals::ShutdownWatch;
use crate::store::notifications::{self, Claimed, Next};
use crate::store::{now, DbError, Store};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct Outbox {
    pub store: Store,
    pub handlers: Handlers,
    pub bell: Doorbell,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub poll: Duration,
    pub lease: Duration,
}

impl Outbox {
    pub fn run(mut self) -> Result<(), String> {
        let mut errors = RateLimitedLog::new(Duration::from_secs(10));
        while !self.shutdown.is_set() {
            match self.claim() {
                Ok(Some(claimed)) => {
                    if let Err(e) = self.attempt(claimed) {
                        // An outage is logged once by the store.
                        if !e.is_outage() {
                            errors.warn(format_args!("outbox: store: {e}"));
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) if e.is_outage() => {}
                Err(e) => {
                    errors.warn(format_args!("outbox: store: {e}"));
                }
            }
            let wait = self.until_next_due();
            let mut items = [self.bell.poll_item()];
            match zmq::poll(&mut items, wait.as_millis() as i64) {
                Ok(_) if items[0].is_readable() => self.bell.clear(),
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("outbox: poll: {e}")),
            }
        }
        Ok(())
    }

    fn claim(&mut self) -> Result<Option<Claimed>, DbError> {
        let lease = self.lease.as_secs_f64();
        self.store
            .in_write(|tx| notifications::claim_due(tx, now(), lease))
    }

    /// How long to sleep: until the next row is due, at most `poll`.
    fn until_next_due(&mut self) -> Duration {
        match self
            .store
            .read()
            .and_then(|tx| notifications::next_due(&tx))
        {
            Ok(Some(at)) => {
                Duration::from_secs_f64((at - now()).clamp(0.0, self.poll.as_secs_f64()))
            }
            _ => self.poll,
        }
    }

    fn attempt(&mut self, claimed: Claimed) -> Result<(), DbError> {
        self.metrics.outbox_attempts.fetch_add(1, Relaxed);
        let next_at;
        let mut retry_after = None;
        let (done, error) = match serde_json::from_str::<serde_json::Value>(&claimed.body) {
            Ok(body) => {
                let attempt = handling::attempt(&self.handlers, &body, claimed.done);
                retry_after = attempt.retry_after;
                (
                    attempt.done.clone(),
                    (!attempt.complete()).then(|| attempt.error()),
                )
            }
            // Cannot happen for rows vigil wrote; retrying would not help.
            Err(e) => {
                log::error!(
                    "outbox: notification {} has a body that is not JSON ({e}): dropped",
                    claimed.seq
                );
                (claimed.done, None)
            }
        };
        let next = match &error {
            None => Next::Handled,
            Some(error) => {
                let wait = handling::next_wait(
                    handling::backoff(claimed.attempts, self.retry_min, self.retry_max),
                    retry_after,
                );
                next_at = now() + wait.as_secs_f64();
                log::warn!(
                    "outbox: notification {} failed (attempt {}), next in {:.0} s: {error}",
                    claimed.seq,
                    claimed.attempts + 1,
                    wait.as_secs_f64()
                );
                Next::RetryAt { at: next_at, error }
            }
        };
        self.store
            .in_write(|tx| notifications::record_attempt(tx, claimed.seq, &done, &next))?;
        if next == Next::Handled {
            self.metrics.outbox_handled.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}
