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
//!
//! The thread only sleeps on the doorbell; one claim–attempt–record round
//! is [`step`], a function over the store and the handlers' outcome, so the
//! retry rules are unit-tested below without threads or handlers.

use super::handling;
use super::metrics::Metrics;
use crate::doorbell::Doorbell;
use crate::notify::Handlers;
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crate::store::notifications::{self, Claimed, Next};
use crate::store::{now, DbError, Store};
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct Outbox {
    pub store: Store,
    pub handlers: Handlers,
    pub bell: Doorbell,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
}

/// The outbox's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub poll: Duration,
    pub lease: Duration,
}

/// What one [`step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Stepped {
    /// A row was attempted (`handled` when every handler is now done):
    /// look for the next one at once.
    Attempted { seq: i64, handled: bool },
    /// Nothing is due: sleep this long (until the next row is due, at most
    /// the poll period), or until the doorbell rings.
    Idle(Duration),
    /// A row was attempted but the store went away before its outcome was
    /// recorded: record it once the store is back, before anything else,
    /// so the handlers that succeeded do not run again when the claim
    /// lapses.
    Unrecorded(Unrecorded),
}

impl Outbox {
    pub fn run(mut self) -> Result<(), String> {
        let mut errors = RateLimit::new(Duration::from_secs(10));
        let mut unrecorded: Option<Unrecorded> = None;
        while !self.shutdown.is_set() {
            if let Some(kept) = &unrecorded {
                match kept.record(&mut self.store) {
                    Ok(()) => unrecorded = None,
                    Err(e) => {
                        if !e.is_outage() {
                            errors.warn(format_args!("outbox: store: {e}"));
                            unrecorded = None;
                        }
                        self.sleep(self.timing.poll)?;
                        continue;
                    }
                }
            }
            let handlers = &self.handlers;
            let run = |body: &Value, done: Vec<String>| handling::attempt(handlers, body, done);
            let wait = match step(&mut self.store, &self.timing, &self.metrics, now(), run) {
                Ok(Stepped::Attempted { .. }) => continue,
                Ok(Stepped::Idle(wait)) => wait,
                Ok(Stepped::Unrecorded(kept)) => {
                    unrecorded = Some(kept);
                    self.timing.poll
                }
                Err(e) => {
                    // An outage is logged once by the store.
                    if !e.is_outage() {
                        errors.warn(format_args!("outbox: store: {e}"));
                    }
                    self.timing.poll
                }
            };
            self.sleep(wait)?;
        }
        if unrecorded.is_some() {
            log::warn!("outbox: one attempt's outcome could not be recorded before the stop; its handlers run again when its claim lapses");
        }
        Ok(())
    }

    /// Sleeps up to `wait`, or until the doorbell rings.
    fn sleep(&mut self, wait: Duration) -> Result<(), String> {
        let mut items = [self.bell.poll_item()];
        match zmq::poll(&mut items, wait.as_millis() as i64) {
            Ok(_) if items[0].is_readable() => self.bell.clear(),
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(format!("outbox: poll: {e}")),
        }
        Ok(())
    }
}

/// An attempt's outcome not yet in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrecorded {
    pub seq: i64,
    pub done: Vec<String>,
    /// When to retry, and why; `None` once handled.
    pub retry: Option<(f64, String)>,
}

impl Unrecorded {
    fn next(&self) -> Next<'_> {
        match &self.retry {
            None => Next::Handled,
            Some((at, error)) => Next::RetryAt { at: *at, error },
        }
    }

    pub fn record(&self, store: &mut Store) -> Result<(), DbError> {
        store.in_write(|tx| {
            notifications::record_claimed_attempt(tx, self.seq, &self.done, &self.next())
        })
    }
}

/// Claims the most overdue row at `now`, runs its handlers not yet done
/// through `run`, and records the outcome: handled, or retried after a
/// backoff that doubles per attempt from `retry_min` up to `retry_max` (or
/// later, when a receiver asked for it with `Retry-After`).
pub fn step(
    store: &mut Store,
    timing: &Timing,
    metrics: &Metrics,
    now: f64,
    run: impl FnOnce(&Value, Vec<String>) -> handling::Attempt,
) -> Result<Stepped, DbError> {
    let lease = timing.lease.as_secs_f64();
    let Some(claimed) = store.in_write(|tx| notifications::claim_due(tx, now, lease))? else {
        return Ok(Stepped::Idle(until_next_due(store, now, timing.poll)));
    };
    metrics.outbox_attempts.fetch_add(1, Relaxed);
    let seq = claimed.seq;
    let (done, retry) = outcome(claimed, timing, now, run);
    let unrecorded = Unrecorded { seq, done, retry };
    match unrecorded.record(store) {
        Ok(()) => {}
        Err(e) if e.is_outage() => return Ok(Stepped::Unrecorded(unrecorded)),
        Err(e) => return Err(e),
    }
    let handled = unrecorded.retry.is_none();
    if handled {
        metrics.outbox_handled.fetch_add(1, Relaxed);
    }
    Ok(Stepped::Attempted { seq, handled })
}

/// How long to sleep: until the next row is due, at most `poll`.
fn until_next_due(store: &mut Store, now: f64, poll: Duration) -> Duration {
    match store.read().and_then(|tx| notifications::next_due(&tx)) {
        Ok(Some(at)) => Duration::from_secs_f64((at - now).clamp(0.0, poll.as_secs_f64())),
        _ => poll,
    }
}

/// Runs one attempt: the handlers now done, and when to retry (with the
/// error) unless it is handled.
fn outcome(
    claimed: Claimed,
    timing: &Timing,
    now: f64,
    run: impl FnOnce(&Value, Vec<String>) -> handling::Attempt,
) -> (Vec<String>, Option<(f64, String)>) {
    let body = match serde_json::from_str::<Value>(&claimed.body) {
        Ok(body) => body,
        // Cannot happen for rows vigil wrote; retrying would not help.
        Err(e) => {
            log::error!(
                "outbox: notification {} has a body that is not JSON ({e}): dropped",
                claimed.seq
            );
            return (claimed.done, None);
        }
    };
    let attempt = run(&body, claimed.done);
    if attempt.complete() {
        return (attempt.done, None);
    }
    let error = attempt.error();
    let wait = handling::next_wait(
        handling::backoff(claimed.attempts, timing.retry_min, timing.retry_max),
        attempt.retry_after,
    );
    log::warn!(
        "outbox: notification {} failed (attempt {}), next in {:.0} s: {error}",
        claimed.seq,
        claimed.attempts + 1,
        wait.as_secs_f64()
    );
    (attempt.done, Some((now + wait.as_secs_f64(), error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::config::SinkType;
    use crate::store::{scratch, test_store};

    const T0: f64 = 1_000.0;

    fn timing() -> Timing {
        Timing {
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(35),
            poll: Duration::from_secs(60),
            lease: Duration::from_secs(30),
        }
    }

    fn raise(store: &mut Store, at: f64) -> i64 {
        let raised = notifications::raised_for_tests(at);
        scratch::with_tx(store, |tx| notifications::raise(tx, &raised)).unwrap()
    }

    /// A handler run that reports `failing` as failed and the rest done.
    fn outcome(done: Vec<String>, ok: &[&str], failing: &[&str]) -> handling::Attempt {
        let mut done = done;
        for h in ok {
            if !done.iter().any(|d| d == h) {
                done.push(h.to_string());
            }
        }
        handling::Attempt {
            done,
            failures: failing.iter().map(|h| format!("{h}: refused")).collect(),
            retry_after: None,
        }
    }

    /// (state, attempts, next_attempt_at, handlers_done) of row `seq`.
    fn row(store: &mut Store, seq: i64) -> (String, i64, Option<f64>, String) {
        let rows = scratch::rows(
            store,
            &format!(
                "SELECT state, attempts, next_attempt_at, handlers_done FROM notifications \
                 WHERE seq = {seq}"
            ),
        );
        let r = &rows[0];
        (
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            r.get(2).unwrap(),
            r.get(3).unwrap(),
        )
    }

    #[test]
    fn a_failing_handler_is_retried_with_doubling_backoff_and_the_done_one_is_not_rerun() {
        let mut store = test_store();
        let metrics = Metrics::new(&[SinkType::Notification]);
        let seq = raise(&mut store, T0);
        let t = timing();
        // First attempt: email works, webhook fails.
        let stepped = step(&mut store, &t, &metrics, T0, |body, done| {
            assert_eq!(body["severity"], "critical");
            assert!(done.is_empty());
            outcome(done, &["email"], &["webhook"])
        });
        assert_eq!(
            stepped.unwrap(),
            Stepped::Attempted {
                seq,
                handled: false
            }
        );
        let (state, attempts, next, done) = row(&mut store, seq);
        assert_eq!((state.as_str(), attempts), ("pending", 1));
        assert_eq!(next, Some(T0 + 10.0), "first retry after retry_min");
        assert_eq!(done, r#"["email"]"#);
        // Not due before then.
        let idle = step(&mut store, &t, &metrics, T0 + 5.0, |_, _| unreachable!());
        assert_eq!(idle.unwrap(), Stepped::Idle(Duration::from_secs(5)));
        // Second attempt fails again: the wait doubles.
        step(&mut store, &t, &metrics, T0 + 10.0, |_, done| {
            assert_eq!(done, ["email"], "a handler that succeeded is not run again");
            outcome(done, &[], &["webhook"])
        })
        .unwrap();
        assert_eq!(row(&mut store, seq).2, Some(T0 + 10.0 + 20.0));
        // Third: the wait is capped at retry_max.
        step(&mut store, &t, &metrics, T0 + 30.0, |_, done| {
            outcome(done, &[], &["webhook"])
        })
        .unwrap();
        assert_eq!(row(&mut store, seq).2, Some(T0 + 30.0 + 35.0));
        // Then it works.
        let stepped = step(&mut store, &t, &metrics, T0 + 65.0, |_, done| {
            outcome(done, &["webhook"], &[])
        });
        assert_eq!(stepped.unwrap(), Stepped::Attempted { seq, handled: true });
        let (state, attempts, next, done) = row(&mut store, seq);
        assert_eq!((state.as_str(), attempts, next), ("handled", 4, None));
        assert_eq!(done, r#"["email","webhook"]"#);
        assert_eq!(metrics.outbox_attempts.load(Relaxed), 4);
        assert_eq!(metrics.outbox_handled.load(Relaxed), 1);
        // Nothing left: sleep the poll period.
        let idle = step(&mut store, &t, &metrics, T0 + 70.0, |_, _| unreachable!());
        assert_eq!(idle.unwrap(), Stepped::Idle(t.poll));
    }

    #[test]
    fn a_retry_after_longer_than_the_backoff_is_honoured() {
        let mut store = test_store();
        let metrics = Metrics::new(&[SinkType::Notification]);
        let seq = raise(&mut store, T0);
        step(&mut store, &timing(), &metrics, T0, |_, done| {
            handling::Attempt {
                retry_after: Some(Duration::from_secs(120)),
                ..outcome(done, &[], &["webhook"])
            }
        })
        .unwrap();
        assert_eq!(row(&mut store, seq).2, Some(T0 + 120.0));
    }

    #[test]
    fn a_claimed_row_is_left_alone_until_its_lease_ends() {
        let mut store = test_store();
        let metrics = Metrics::new(&[SinkType::Notification]);
        let seq = raise(&mut store, T0);
        let t = timing();
        // An outbox claims it and dies before recording anything.
        let lease = t.lease.as_secs_f64();
        let claimed = store
            .in_write(|tx| notifications::claim_due(tx, T0, lease))
            .unwrap()
            .unwrap();
        assert_eq!(claimed.seq, seq);
        let idle = step(&mut store, &t, &metrics, T0 + 1.0, |_, _| unreachable!());
        assert!(
            matches!(idle.unwrap(), Stepped::Idle(_)),
            "leased to the other"
        );
        let stepped = step(&mut store, &t, &metrics, T0 + 30.0, |_, done| {
            outcome(done, &["command"], &[])
        });
        assert_eq!(stepped.unwrap(), Stepped::Attempted { seq, handled: true });
    }

    #[test]
    fn the_most_overdue_row_goes_first() {
        let mut store = test_store();
        let metrics = Metrics::new(&[SinkType::Notification]);
        let later = raise(&mut store, T0 + 5.0);
        let earlier = raise(&mut store, T0);
        let mut order = Vec::new();
        for _ in 0..2 {
            if let Stepped::Attempted { seq, .. } =
                step(&mut store, &timing(), &metrics, T0 + 10.0, |_, done| {
                    outcome(done, &["command"], &[])
                })
                .unwrap()
            {
                order.push(seq);
            }
        }
        assert_eq!(order, [earlier, later]);
    }
}
