//! The notification sink: client notifications through the handlers, at
//! least once end to end and at most once per handler.
//!
//! For each message: drop it if (uuid, id) was handled already (acking it
//! again: the first ack was lost); otherwise record it (or find the record
//! of an earlier attempt), run the handlers configured for its severity
//! that have not succeeded yet, store which did, and ack only when all
//! have. When one fails nothing is acked and the agent's resend retries
//! later, skipping the handlers already done. A notification sent without
//! `ack` has no resend to count on, so its failures go to the outbox,
//! which retries with backoff.
//!
//! Handlers may take seconds, so they never run inside a store
//! transaction: one short transaction records the message and claims it
//! for this attempt (so a second sink process, or the outbox, given the same
//! notification meanwhile leaves it alone and sends no ack), another
//! records the outcome.

use super::config::SinkType;
use super::handling;
use super::message::{Incoming, Malformed};
use super::metrics::TypeMetrics;
use super::worker::{self, Ctx, Effects, Failure, TypeSink};
use crate::notify::Handlers;
use crate::store::notifications::{self, ClientNotification, Next, Progress};
use crate::store::{dedup, now, Store, Tx};
use std::time::{Duration, Instant};

/// Severities of PROTOCOL.md.
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

pub struct NotificationSink {
    pub handlers: Handlers,
    /// Outbox delay for the first retry of a notification without `ack`.
    pub retry_min: Duration,
    pub dedup_retention: Duration,
    /// How long an attempt holds a notification against other processes.
    pub lease: Duration,
}

/// What the first transaction found.
enum Found {
    /// Handled before: ack again, run nothing.
    Duplicate,
    /// To run: its row, the handlers already done, and the hostname the
    /// store knows for the client.
    Run(Progress, Option<String>),
    /// Another process is running its handlers now: no ack; the agent's
    /// resend finds it handled (or retries it).
    Busy,
}

impl TypeSink for NotificationSink {
    fn kind(&self) -> SinkType {
        SinkType::Notification
    }

    /// Checks the fields only; [`TypeSink::process`] does the work.
    fn handle(&mut self, _: &Tx, msg: &Incoming, _: &mut Effects) -> Result<(), Failure> {
        fields(msg)?;
        Ok(())
    }

    fn process(&mut self, store: &mut Store, msgs: Vec<Incoming>, out: &mut Effects, mut ctx: Ctx) {
        for msg in &msgs {
            match self.one(store, msg, &mut ctx) {
                Ok(true) => {
                    TypeMetrics::add(&ctx.metrics.handled, 1);
                    if msg.ack {
                        out.acks.push(super::acks::Ack::of(msg));
                    }
                }
                Ok(false) => {}
                Err(Failure::Malformed(why)) => {
                    ctx.malformed(msg, &why);
                    if msg.ack {
                        out.acks.push(super::acks::Ack::of(msg));
                    }
                }
                Err(Failure::Store(e)) => ctx.store_error(1, &e),
            }
        }
    }

    /// Forgets handled ids past their retention, hourly.
    fn tick(&mut self, store: &mut Store, _: &mut Effects, mut ctx: Ctx) -> Option<Instant> {
        let before = now() - self.dedup_retention.as_secs_f64();
        match store.in_write(|tx| dedup::prune(tx, before)) {
            Ok(0) => {}
            Ok(n) => log::info!("notification: forgot {n} handled id(s) and notification(s) older than the retention"),
            Err(e) => ctx.store_error(0, &e),
        }
        Some(Instant::now() + Duration::from_secs(3600))
    }
}

impl NotificationSink {
    /// Handles one notification; `Ok(true)` when it is handled (now or
    /// before) and may be acked.
    fn one(&mut self, store: &mut Store, msg: &Incoming, ctx: &mut Ctx) -> Result<bool, Failure> {
        let fields = fields(msg)?;
        let (progress, hostname) = match self.record(store, msg, &fields)? {
            Found::Duplicate => {
                TypeMetrics::add(&ctx.metrics.duplicates, 1);
                return Ok(true);
            }
            Found::Run(progress, hostname) => (progress, hostname),
            Found::Busy => {
                log::debug!(
                    "notification {:?} from {} is being handled elsewhere",
                    msg.id,
                    msg.uuid
                );
                return Ok(false);
            }
        };
        let mut body = msg.body.clone();
        // Handlers name the host; fill it in when the client left it out.
        if let (None, Some(known)) = (msg.hostname()?, hostname) {
            body.insert("hostname".into(), serde_json::Value::String(known));
        }
        let body = serde_json::Value::Object(body);
        let attempt = handling::attempt(&self.handlers, &body, progress.done);
        let error = attempt.error();
        let next = if attempt.complete() {
            Next::Handled
        } else if msg.ack {
            Next::AwaitResend { error: &error }
        } else {
            let wait = handling::next_wait(self.retry_min, attempt.retry_after);
            let at = now() + wait.as_secs_f64();
            Next::RetryAt { at, error: &error }
        };
        let tx = store.write()?;
        notifications::record_attempt(&tx, progress.seq, &attempt.done, &next)?;
        if attempt.complete() {
            if let Some(id) = &msg.id {
                dedup::mark_handled(&tx, &msg.uuid, id, "notification", now())?;
            }
        }
        tx.commit()?;
        if !attempt.complete() {
            TypeMetrics::add(&ctx.metrics.handler_failures, 1);
            let what = if msg.ack {
                "no ack; the agent will resend"
            } else {
                "the outbox retries"
            };
            ctx.logs.handlers.warn(format_args!(
                "notification {} from {}: {error} ({what})",
                msg.id.as_deref().unwrap_or("(no id)"),
                msg.uuid,
            ));
        }
        Ok(attempt.complete())
    }

    /// The first transaction: the client row, the dedup check, the record.
    fn record(&self, store: &mut Store, msg: &Incoming, f: &Fields) -> Result<Found, Failure> {
        let tx = store.write()?;
        worker::upsert_client(&tx, msg)?;
        let generated;
        let id = match &msg.id {
            Some(id) => {
                if dedup::is_handled(&tx, &msg.uuid, id)? {
                    tx.commit()?;
                    return Ok(Found::Duplicate);
                }
                id.as_str()
            }
            None => {
                generated = uuid::Uuid::new_v4().to_string();
                &generated
            }
        };
        let found = match msg.id.as_ref() {
            Some(id) => notifications::find_client(&tx, &msg.uuid, id)?,
            None => None,
        };
        let progress = match found {
            Some(progress) => progress,
            None => {
                let record = ClientNotification {
                    uuid: &msg.uuid,
                    id,
                    severity: f.severity,
                    source: f.source,
                    message: f.message,
                    hostname: msg.hostname()?,
                    body: &msg.text,
                    at: msg.meta.received_at,
                };
                notifications::record_client(&tx, &record)?
            }
        };
        let found = if progress.state == "handled" {
            // Handled by the outbox (it was sent without ack before).
            Found::Duplicate
        } else if notifications::claim(&tx, progress.seq, now(), self.lease.as_secs_f64())? {
            Found::Run(progress, crate::store::clients::hostname(&tx, &msg.uuid)?)
        } else {
            Found::Busy
        };
        tx.commit()?;
        Ok(found)
    }
}

/// The fields a notification must have.
struct Fields<'a> {
    severity: &'a str,
    source: Option<&'a str>,
    message: &'a str,
}

fn fields(msg: &Incoming) -> Result<Fields<'_>, Malformed> {
    let severity = msg.req_str("severity")?;
    if !SEVERITIES.contains(&severity) {
        return Err(Malformed(format!(
            "severity {:?} is not one of {}",
            super::message::clip(severity),
            SEVERITIES.join(", ")
        )));
    }
    Ok(Fields {
        severity,
        source: msg.opt_str("source")?,
        message: msg.req_str("message")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::{incoming, U};

    #[test]
    fn fields_are_checked() {
        let n = |extra: &str| {
            incoming(
                SinkType::Notification,
                &format!(r#"{{"uuid":"{U}","type":"notification"{extra}}}"#),
            )
        };
        assert!(fields(&n(r#","severity":"critical","message":"m""#)).is_ok());
        assert!(fields(&n(r#","severity":"panic","message":"m""#)).is_err());
        assert!(fields(&n(r#","severity":"info""#)).is_err());
        assert!(fields(&n(r#","severity":"info","message":"m","source":1"#)).is_err());
    }
}
