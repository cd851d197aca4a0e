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
use crate::protocol::{codes::SEVERITY_TEXTS, Severity};
use crate::store::notifications::{self, ClientNotification, Next, Progress};
use crate::store::{dedup, now, Store, Tx};
use std::time::{Duration, Instant};

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

    /// The batch in two short transactions whatever its size: one records
    /// (and claims) every new notification, the handlers run, one records
    /// every outcome. A copy of a notification met earlier in the same
    /// batch shares its outcome. If the batch's first transaction fails
    /// for a reason other than an outage, each message goes alone.
    fn process(&mut self, store: &mut Store, msgs: Vec<Incoming>, out: &mut Effects, mut ctx: Ctx) {
        let mut valid = Vec::new();
        for msg in &msgs {
            match fields(msg) {
                Ok(f) => valid.push((msg, f)),
                Err(why) => {
                    ctx.malformed(msg, &why);
                    if msg.ack {
                        out.acks.push(super::acks::Ack::of(msg));
                    }
                }
            }
        }
        // The first of each (uuid, id) goes through; later copies follow it.
        let mut first: std::collections::HashMap<(&str, &str), usize> = Default::default();
        let mut copies: Vec<(usize, &Incoming)> = Vec::new();
        let mut unique = Vec::new();
        for (msg, f) in valid {
            if let Some(id) = &msg.id {
                if let Some(&i) = first.get(&(msg.uuid.as_str(), id.as_str())) {
                    copies.push((i, msg));
                    continue;
                }
                first.insert((&msg.uuid, id), unique.len());
            }
            unique.push((msg, f));
        }
        let found = match self.record_batch(store, &unique) {
            Ok(found) => found,
            Err(Failure::Store(e)) if e.is_outage() || e.is_conflict() => {
                return ctx.store_error(msgs.len(), &e)
            }
            Err(_) => return self.one_by_one(store, &unique, &copies, out, &mut ctx),
        };
        let mut outcome = vec![false; unique.len()];
        let mut attempts = Vec::new();
        for (i, ((msg, _), found)) in unique.iter().zip(found).enumerate() {
            match found {
                Found::Duplicate => {
                    TypeMetrics::add(&ctx.metrics.duplicates, 1);
                    outcome[i] = true;
                }
                Found::Busy => log::debug!(
                    "notification {:?} from {} is being handled elsewhere",
                    msg.id,
                    msg.uuid
                ),
                Found::Run(progress, hostname) => {
                    let (attempt, next) = self.run(msg, progress.done, hostname);
                    attempts.push((i, progress.seq, attempt, next));
                }
            }
        }
        if !attempts.is_empty() {
            let stored = store.in_write(|tx| {
                let rows: Vec<(i64, &[String], Next)> = attempts
                    .iter()
                    .map(|(_, seq, a, next)| (*seq, a.done.as_slice(), next.as_next()))
                    .collect();
                let done: Vec<(&str, &str)> = attempts
                    .iter()
                    .filter(|(_, _, a, _)| a.complete())
                    .filter_map(|(i, ..)| {
                        Some((unique[*i].0.uuid.as_str(), unique[*i].0.id.as_deref()?))
                    })
                    .collect();
                notifications::record_outcomes(tx, &rows, &done, now())
            });
            match stored {
                Ok(()) => {
                    for (i, _, attempt, _) in &attempts {
                        if attempt.complete() {
                            outcome[*i] = true;
                        } else {
                            self.failed(unique[*i].0, attempt, &mut ctx);
                        }
                    }
                }
                Err(e) => ctx.store_error(attempts.len(), &e),
            }
        }
        let mut ack = |msg: &Incoming| {
            TypeMetrics::add(&ctx.metrics.handled, 1);
            if msg.ack {
                out.acks.push(super::acks::Ack::of(msg));
            }
        };
        for (i, (msg, _)) in unique.iter().enumerate() {
            if outcome[i] {
                ack(msg);
            }
        }
        for (i, msg) in copies {
            if outcome[i] {
                TypeMetrics::add(&ctx.metrics.duplicates, 1);
                ack(msg);
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
            self.failed(msg, &attempt, ctx);
        }
        Ok(attempt.complete())
    }

    /// Each message alone, in its own transactions (the batch's failed).
    fn one_by_one(
        &mut self,
        store: &mut Store,
        unique: &[(&Incoming, Fields)],
        copies: &[(usize, &Incoming)],
        out: &mut Effects,
        ctx: &mut Ctx,
    ) {
        let mut outcome = vec![false; unique.len()];
        for (i, (msg, _)) in unique.iter().enumerate() {
            match self.one(store, msg, ctx) {
                Ok(true) => {
                    outcome[i] = true;
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
        for (i, msg) in copies {
            if outcome[*i] && msg.ack {
                out.acks.push(super::acks::Ack::of(msg));
            }
        }
    }

    /// Runs the handlers not done yet; what the attempt leads to.
    fn run(
        &self,
        msg: &Incoming,
        done: Vec<String>,
        hostname: Option<String>,
    ) -> (handling::Attempt, NextOwned) {
        let mut body = msg.body.clone();
        // Handlers name the host; fill it in when the client left it out.
        if let (Ok(None), Some(known)) = (msg.hostname(), hostname) {
            body.insert("hostname".into(), serde_json::Value::String(known));
        }
        let body = serde_json::Value::Object(body);
        let attempt = handling::attempt(&self.handlers, &body, done);
        let error = attempt.error();
        let next = if attempt.complete() {
            NextOwned::Handled
        } else if msg.ack {
            NextOwned::AwaitResend(error)
        } else {
            let wait = handling::next_wait(self.retry_min, attempt.retry_after);
            NextOwned::RetryAt(now() + wait.as_secs_f64(), error)
        };
        (attempt, next)
    }

    fn failed(&self, msg: &Incoming, attempt: &handling::Attempt, ctx: &mut Ctx) {
        TypeMetrics::add(&ctx.metrics.handler_failures, 1);
        let what = if msg.ack {
            "no ack; the agent will resend"
        } else {
            "the outbox retries"
        };
        ctx.logs.handlers.warn(format_args!(
            "notification {} from {}: {} ({what})",
            msg.id.as_deref().unwrap_or("(no id)"),
            msg.uuid,
            attempt.error(),
        ));
    }

    /// The batch's first transaction: the clients' rows, the dedup check,
    /// new notifications recorded and claimed in one statement; one that
    /// another process recorded first is found and claimed alone.
    fn record_batch(
        &self,
        store: &mut Store,
        unique: &[(&Incoming, Fields)],
    ) -> Result<Vec<Found>, Failure> {
        let tx = store.write()?;
        let mut seen = crate::store::clients::Sightings::default();
        for (msg, _) in unique {
            seen.add(&crate::store::clients::Sighting {
                uuid: &msg.uuid,
                hostname: msg.hostname()?,
                at: msg.meta.received_at,
                router: &msg.meta.router,
                peer: msg.meta.peer.as_deref(),
            });
        }
        seen.flush(&tx)?;
        let generated: Vec<String> = unique
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let id_of = |i: usize| unique[i].0.id.as_deref().unwrap_or(&generated[i]);
        let mut records = Vec::new();
        for (i, (msg, f)) in unique.iter().enumerate() {
            records.push(client_record(msg, f, id_of(i))?);
        }
        let lease = self.lease.as_secs_f64();
        // New ones are recorded (and claimed) at once; what is left is a
        // duplicate or recorded before, found one by one (a resend).
        let recorded = notifications::record_new_clients(&tx, &records, now() + lease)?;
        let mut found = Vec::with_capacity(unique.len());
        for (i, (msg, _)) in unique.iter().enumerate() {
            let hostname = || -> Result<Option<String>, Failure> {
                Ok(match msg.hostname()? {
                    Some(_) => None,
                    None => crate::store::clients::hostname(&tx, &msg.uuid)?,
                })
            };
            let key = (msg.uuid.clone(), id_of(i).to_string());
            if let Some(&seq) = recorded.get(&key) {
                let progress = Progress {
                    seq,
                    state: "failed".into(),
                    done: vec![],
                };
                found.push(Found::Run(progress, hostname()?));
                continue;
            }
            if msg.id.is_some() && dedup::is_handled(&tx, &msg.uuid, id_of(i))? {
                found.push(Found::Duplicate);
                continue;
            }
            // Recorded before (a resend, or another sink was first).
            let progress = notifications::find_client(&tx, &msg.uuid, id_of(i))?
                .ok_or(crate::store::DbError::NoRow)?;
            found.push(if progress.state == "handled" {
                Found::Duplicate
            } else if notifications::claim(&tx, progress.seq, now(), lease)? {
                Found::Run(progress, hostname()?)
            } else {
                Found::Busy
            });
        }
        tx.commit()?;
        Ok(found)
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
            None => notifications::record_client(&tx, &client_record(msg, f, id)?)?,
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

/// [`Next`] with its error owned, across the handlers' run.
enum NextOwned {
    Handled,
    RetryAt(f64, String),
    AwaitResend(String),
}

impl NextOwned {
    fn as_next(&self) -> Next<'_> {
        match self {
            NextOwned::Handled => Next::Handled,
            NextOwned::RetryAt(at, error) => Next::RetryAt { at: *at, error },
            NextOwned::AwaitResend(error) => Next::AwaitResend { error },
        }
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
    if Severity::from_wire(severity).is_none() {
        return Err(Malformed(format!(
            "severity {:?} is not one of {}",
            super::message::clip(severity),
            SEVERITY_TEXTS.join(", ")
        )));
    }
    Ok(Fields {
        severity,
        source: msg.opt_str("source")?,
        message: msg.req_str("message")?,
    })
}

/// The row a client notification is recorded as, under `id`.
fn client_record<'a>(
    msg: &'a Incoming,
    f: &Fields<'a>,
    id: &'a str,
) -> Result<ClientNotification<'a>, Malformed> {
    Ok(ClientNotification {
        uuid: &msg.uuid,
        id,
        severity: f.severity,
        source: f.source,
        message: f.message,
        hostname: msg.hostname()?,
        body: &msg.text,
        at: msg.meta.received_at,
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

    /// A batch: copies of one notification (two routers) are handled once
    /// and both acked; a resend of a handled one is acked and not recorded
    /// again; one without ack or id is recorded too.
    #[test]
    fn a_batch_handles_each_notification_once() {
        use crate::sink::metrics::Metrics;
        use crate::sink::worker::Logs;
        let mut store = crate::store::test_store();
        let mut sink = NotificationSink {
            handlers: Handlers::from_env(&crate::config::Env::default()).unwrap(),
            retry_min: Duration::from_secs(1),
            dedup_retention: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
        };
        let note = |id: &str, router: &str| {
            let json = format!(
                r#"{{"uuid":"{U}","type":"notification","severity":"info","message":"m"{id}}}"#
            );
            let meta = format!(r#"{{"router":"{router}","received_at":100}}"#);
            crate::sink::message::parse(
                &[json.into_bytes(), meta.into_bytes()],
                SinkType::Notification,
            )
            .unwrap()
        };
        let metrics = Metrics::new(&[SinkType::Notification]);
        let mut logs = Logs::default();
        let mut batch = |store: &mut Store, msgs: Vec<Incoming>| {
            let mut out = Effects::default();
            let ctx = Ctx {
                metrics: metrics.of(SinkType::Notification),
                logs: &mut logs,
            };
            sink.process(store, msgs, &mut out, ctx);
            out.acks.len()
        };
        let acked = batch(
            &mut store,
            vec![
                note(r#","id":"a","ack":true"#, "r1"),
                note(r#","id":"a","ack":true"#, "r2"),
                note(r#","id":"b","ack":true"#, "r1"),
                note("", "r1"),
            ],
        );
        assert_eq!(acked, 3);
        let count = |store: &mut Store, sql: &str| -> i64 {
            crate::store::scratch::rows(store, sql)[0].get(0).unwrap()
        };
        assert_eq!(count(&mut store, "SELECT COUNT(*) FROM notifications"), 3);
        assert_eq!(
            count(
                &mut store,
                "SELECT COUNT(*) FROM notifications WHERE state = 'handled'"
            ),
            3
        );
        assert_eq!(count(&mut store, "SELECT COUNT(*) FROM handled"), 2);
        assert_eq!(
            batch(&mut store, vec![note(r#","id":"a","ack":true"#, "r2")]),
            1
        );
        assert_eq!(count(&mut store, "SELECT COUNT(*) FROM notifications"), 3);
    }
}
