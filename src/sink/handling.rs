//! Running a notification's handlers, shared by the notification worker
//! (client notifications) and the outbox (notifications vigil raised).
//!
//! An attempt runs only the handlers not yet done, and adds those that
//! succeed to the done list, which the caller stores: a retry after the
//! webhook failed does not send the email again. The notification is
//! complete when every handler configured for its severity is done.

use crate::notify::{HandlerOutcome, Handlers};
use serde_json::Value;
use std::time::Duration;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Handlers that have succeeded, this time or before.
    pub done: Vec<String>,
    /// `handler: reason` for each that did not.
    pub failures: Vec<String>,
    /// The longest wait a failed handler's receiver asked for (HTTP
    /// `Retry-After`), which the outbox's next try honours.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    pub fn complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failures on one line, for the log and `last_error`.
    pub fn error(&self) -> String {
        self.failures.join("; ")
    }
}

/// Runs the handlers of `notification` not in `done`.
pub fn attempt(handlers: &Handlers, notification: &Value, done: Vec<String>) -> Attempt {
    let severity = notification
        .get("severity")
        .and_then(Value::as_str)
        .unwrap_or("critical");
    let required = handlers.for_severity(severity);
    let outcomes = handlers.run(notification, &done);
    settle(&required, done, outcomes)
}

/// Folds an attempt's outcomes into the done list. A required handler
/// neither done nor reported counts as failed, so a notification is never
/// marked handled on a handler's silence.
pub fn settle(
    required: &[String],
    mut done: Vec<String>,
    outcomes: Vec<HandlerOutcome>,
) -> Attempt {
    let mut failures = Vec::new();
    let mut retry_after: Option<Duration> = None;
    for outcome in outcomes {
        if outcome.result.is_err() {
            retry_after = retry_after.max(outcome.retry_after);
        }
        match outcome.result {
            Ok(()) if !done.contains(&outcome.handler) => done.push(outcome.handler),
            Ok(()) => {}
            Err(reason) => failures.push(format!("{}: {reason}", outcome.handler)),
        }
    }
    for name in required {
        let reported = failures.iter().any(|f| f.starts_with(&format!("{name}: ")));
        if !done.contains(name) && !reported {
            failures.push(format!("{name}: did not run"));
        }
    }
    Attempt {
        done,
        failures,
        retry_after,
    }
}

/// The wait before attempt `attempts + 1`: doubling from `min`, at most `max`.
pub fn backoff(attempts: i64, min: Duration, max: Duration) -> Duration {
    let doublings = attempts.clamp(0, 30) as u32;
    min.saturating_mul(1u32 << doublings).min(max)
}

/// The wait before the next try: the backoff, or longer when a receiver
/// asked for longer (`Retry-After`, itself capped where it is read).
pub fn next_wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(backoff, |r| r.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(handler: &str, result: Result<(), &str>) -> HandlerOutcome {
        HandlerOutcome {
            handler: handler.into(),
            result: result.map_err(str::to_string),
            retry_after: None,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_retry_keeps_what_succeeded_before() {
        let required = names(&["command", "email", "webhook"]);
        let first = settle(
            &required,
            vec![],
            vec![
                outcome("command", Ok(())),
                outcome("email", Ok(())),
                outcome("webhook", Err("503")),
            ],
        );
        assert!(!first.complete());
        assert_eq!(first.done, names(&["command", "email"]));
        assert_eq!(first.error(), "webhook: 503");
        let second = settle(&required, first.done, vec![outcome("webhook", Ok(()))]);
        assert!(second.complete());
        assert_eq!(second.done, names(&["command", "email", "webhook"]));
    }

    #[test]
    fn silence_is_not_success() {
        let attempt = settle(&names(&["command"]), vec![], vec![]);
        assert_eq!(attempt.failures, names(&["command: did not run"]));
        assert!(settle(&[], vec![], vec![]).complete(), "no handlers: done");
    }

    #[test]
    fn retry_after_of_a_failure_lengthens_the_wait() {
        let mut slow = outcome("webhook", Err("503"));
        slow.retry_after = Some(Duration::from_secs(30));
        let mut ignored = outcome("command", Ok(()));
        ignored.retry_after = Some(Duration::from_secs(999));
        let a = settle(&names(&["command", "webhook"]), vec![], vec![ignored, slow]);
        assert_eq!(a.retry_after, Some(Duration::from_secs(30)));
        let b = Duration::from_secs(5);
        assert_eq!(next_wait(b, a.retry_after), Duration::from_secs(30));
        assert_eq!(next_wait(b, Some(Duration::from_secs(1))), b);
        assert_eq!(next_wait(b, None), b);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(backoff(0, min, max), min);
        assert_eq!(backoff(1, min, max), Duration::from_secs(10));
        assert_eq!(backoff(3, min, max), Duration::from_secs(40));
        assert_eq!(backoff(4, min, max), max);
        assert_eq!(backoff(1_000, min, max), max);
    }
}
