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
use crate::protocol::Severity;
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
    /// Outcomes whose handlers ran but whose write met a store outage:
    /// written first when the batch is tried again, so the handlers that
    /// succeeded are not run a second time.
    pub unwritten: Vec<Settled>,
}

impl NotificationSink {
    pub fn new(
        handlers: Handlers,
        retry_min: Duration,
        dedup_retention: Duration,
        lease: Duration,
    ) -> NotificationSink {
        NotificationSink {
            handlers,
            retry_min,
            dedup_retention,
            lease,
            unwritten: Vec::new(),
        }
    }
}

/// What the first transaction found.
enum Found {
    /// Handled before: ack again, run nothing.
    Duplicate,
    /// To run, under the claim this process took.
    Run(Claim),
    /// Another process is running its handlers now: no ack; the agent's
    /// resend finds it handled (or retries it).
    Busy,
}

/// A notification this process claimed for one attempt.
struct Claim {
    /// Its row and the handlers already done.
    progress: Progress,
    /// The hostname the store knows for the client.
    hostname: Option<String>,
    /// The claim's token: the row's `next_attempt_at` while it is ours.
    token: f64,
}

/// An attempt's outcome, owned, until it is written.
#[derive(Clone)]
pub struct Settled {
    seq: i64,
    token: f64,
    done: Vec<String>,
    next: NextOwned,
    /// (uuid, id) of a client notification now handled.
    handled: Option<(String, String)>,
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
    /// for a reason other than an outage or a conflict, each message goes
    /// alone.
    fn process(&mut self, store: &mut Store, msgs: Vec<Incoming>, out: &mut Effects, mut ctx: Ctx) {
        if let Err(e) = self.write_unwritten(store) {
            return ctx.store_error(msgs.len(), &e);
        }
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
            Err(Failure::Store(e)) if e.is_outage() => return ctx.store_error(msgs.len(), &e),
            // Nothing was committed: the whole batch is tried again.
            Err(Failure::Store(e)) if e.is_conflict() => return ctx.retry_later(&e),
            Err(_) => return self.one_by_one(store, &unique, &copies, out, &mut ctx),
        };
        let mut outcome = vec![false; unique.len()];
        let (mut ran, mut settled_all) = (Vec::new(), Vec::new());
        for (i, ((msg, _), found)) in unique.iter().zip(found).enumerate() {
            match found {
                Found::Duplicate => {
                    TypeMetrics::add(&ctx.metrics.duplicates, 1);
                    outcome[i] = true;
                }
                Found::Busy => busy(msg),
                Found::Run(claim) => match self.keep_claim(store, claim) {
                    Some(claim) => {
                        let (attempt, settled) = self.run(msg, claim);
                        ran.push((i, attempt));
                        settled_all.push(settled);
                    }
                    None => busy(msg),
                },
            }
        }
        if !ran.is_empty() {
            match self.settle(store, &settled_all) {
                Ok(()) => {
                    for (i, attempt) in &ran {
                        if attempt.complete() {
                            outcome[*i] = true;
                        } else {
                            self.failed(unique[*i].0, attempt, &mut ctx);
                        }
                    }
                }
                Err(e) => ctx.store_error(ran.len(), &e),
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

fn busy(msg: &Incoming) {
    log::debug!(
        "notification {:?} from {} is being handled elsewhere",
        msg.id,
        msg.uuid
    );
}

impl NotificationSink {
    /// Handles one notification; `Ok(true)` when it is handled (now or
    /// before) and may be acked.
    fn one(&mut self, store: &mut Store, msg: &Incoming, ctx: &mut Ctx) -> Result<bool, Failure> {
        let fields = fields(msg)?;
        let claim = match self.record(store, msg, &fields)? {
            Found::Duplicate => {
                TypeMetrics::add(&ctx.metrics.duplicates, 1);
                return Ok(true);
            }
            Found::Run(claim) => claim,
            Found::Busy => {
                busy(msg);
                return Ok(false);
            }
        };
        let (attempt, settled) = self.run(msg, claim);
        self.settle(store, std::slice::from_ref(&settled))?;
        if !attempt.complete() {
            self.failed(msg, &attempt, ctx);
        }
        Ok(attempt.complete())
    }

    /// The claim if this process may run the handlers now: as taken while
    /// it is fresh, else extended (a new token), since the handlers of the
    /// batch's earlier notifications may have run for most of it. `None`
    /// when it lapsed and another process took it over (or the store
    /// cannot say): the notification is then left to that process, the
    /// client's resend or the outbox.
    fn keep_claim(&self, store: &mut Store, mut claim: Claim) -> Option<Claim> {
        let lease = self.lease.as_secs_f64();
        let at = now();
        if at < claim.token - lease / 2.0 {
            return Some(claim);
        }
        let renewed = at + lease;
        match store
            .in_write(|tx| notifications::renew(tx, claim.progress.seq, claim.token, renewed))
        {
            Ok(true) => {
                claim.token = renewed;
                Some(claim)
            }
            Ok(false) => None,
            Err(e) => {
                store.log_error("extending a notification's claim", e);
                None
            }
        }
    }

    /// Writes `settled` in one transaction. On a store outage they are kept
    /// for the batch's next try ([`Self::write_unwritten`]).
    fn settle(
        &mut self,
        store: &mut Store,
        settled: &[Settled],
    ) -> Result<(), crate::store::DbError> {
        let written = store.in_write(|tx| {
            let rows: Vec<notifications::Outcome> = settled
                .iter()
                .map(|s| notifications::Outcome {
                    seq: s.seq,
                    token: s.token,
                    done: &s.done,
                    next: s.next.as_next(),
                })
                .collect();
            let handled: Vec<(&str, &str)> = settled
                .iter()
                .filter_map(|s| s.handled.as_ref())
                .map(|(uuid, id)| (uuid.as_str(), id.as_str()))
                .collect();
            notifications::record_outcomes(tx, &rows, &handled, now())
        });
        if let Err(e) = &written {
            if e.is_outage() {
                self.unwritten.extend_from_slice(settled);
            }
        }
        written
    }

    /// The outcomes an outage kept from the store, before anything else.
    fn write_unwritten(&mut self, store: &mut Store) -> Result<(), crate::store::DbError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let kept = std::mem::take(&mut self.unwritten);
        let count = kept.len();
        self.settle(store, &kept)?;
        log::info!("notification: wrote {count} outcome(s) held over a store outage");
        Ok(())
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

    /// Runs the handlers not done yet under `claim`; the attempt and what
    /// to record of it.
    fn run(&self, msg: &Incoming, claim: Claim) -> (handling::Attempt, Settled) {
        let mut body = msg.body.clone();
        // Handlers name the host; fill it in when the client left it out.
        if let (Ok(None), Some(known)) = (msg.hostname(), claim.hostname) {
            body.insert("hostname".into(), serde_json::Value::String(known));
        }
        let body = serde_json::Value::Object(body);
        let attempt = handling::attempt(&self.handlers, &body, claim.progress.done);
        let error = attempt.error();
        let next = if attempt.complete() {
            NextOwned::Handled
        } else if msg.ack {
            NextOwned::AwaitResend(error)
        } else {
            let wait = handling::next_wait(self.retry_min, attempt.retry_after);
            NextOwned::RetryAt(now() + wait.as_secs_f64(), error)
        };
        let handled = match (&msg.id, attempt.complete()) {
            (Some(id), true) => Some((msg.uuid.clone(), id.clone())),
            _ => None,
        };
        let settled = Settled {
            seq: claim.progress.seq,
            token: claim.token,
            done: attempt.done.clone(),
            next,
            handled,
        };
        (attempt, settled)
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
        let token = now() + lease;
        let recorded = notifications::record_new_clients(&tx, &records, token)?;
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
                    state: String::new(),
                    done: vec![],
                };
                found.push(Found::Run(Claim {
                    progress,
                    hostname: hostname()?,
                    token,
                }));
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
            } else if let Some(token) = notifications::claim(&tx, progress.seq, now(), lease)? {
                Found::Run(Claim {
                    progress,
                    hostname: hostname()?,
                    token,
                })
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
        } else if let Some(token) =
            notifications::claim(&tx, progress.seq, now(), self.lease.as_secs_f64())?
        {
            Found::Run(Claim {
                progress,
                hostname: crate::store::clients::hostname(&tx, &msg.uuid)?,
                token,
            })
        } else {
            Found::Busy
        };
        tx.commit()?;
        Ok(found)
    }
}

/// [`Next`] with its error owned, across the handlers' run.
#[derive(Clone)]
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

/// A severity that is missing, not a string or none of the four counts
/// as `critical`: a client's mistake is paged rather than lost (the
/// handlers read it the same way, and the body keeps what was sent).
fn fields(msg: &Incoming) -> Result<Fields<'_>, Malformed> {
    let sent = msg.body.get("severity").and_then(serde_json::Value::as_str);
    let severity = crate::notify::config::normalise_severity(sent.unwrap_or("critical"));
    if sent.and_then(Severity::from_wire).is_none() {
        log::debug!(
            "notification from {} with severity {:?} counts as critical",
            msg.uuid,
            sent.map(super::message::clip)
        );
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
        ack: msg.ack,
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
        for odd in [
            r#","severity":"panic""#,
            r#","severity":7"#,
            "",
            r#","severity":"WARNING ""#,
        ] {
            let msg = n(&format!(r#"{odd},"message":"m""#));
            let expected = if odd.contains("WARNING") {
                "warning"
            } else {
                "critical"
            };
            assert_eq!(fields(&msg).unwrap().severity, expected, "{odd}");
        }
        assert!(fields(&n(r#","severity":"info""#)).is_err());
        assert!(fields(&n(r#","severity":"info","message":"m","source":1"#)).is_err());
    }

    fn sink(lease_s: u64) -> NotificationSink {
        NotificationSink::new(
            Handlers::from_env(&crate::config::Env::default()).unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
            Duration::from_secs(lease_s),
        )
    }

    /// A client row recorded by "another attempt", claimed until `token`.
    fn claimed_row(store: &mut Store, id: &str, now_s: f64, lease_s: f64) -> (i64, f64) {
        store
            .in_write(|tx| {
                let n = ClientNotification {
                    uuid: U,
                    id,
                    severity: "critical",
                    source: None,
                    message: "m",
                    hostname: None,
                    body: "{}",
                    at: 1.0,
                    ack: true,
                };
                let seq = notifications::record_client(tx, &n)?.seq;
                let token = notifications::claim(tx, seq, now_s, lease_s)?.unwrap();
                Ok((seq, token))
            })
            .unwrap()
    }

    fn claim_of(seq: i64, token: f64) -> Claim {
        Claim {
            progress: Progress {
                seq,
                state: "failed".into(),
                done: vec![],
            },
            hostname: None,
            token,
        }
    }

    /// Before a batch's later notification runs, its claim is kept while
    /// fresh, extended once half of it is gone, and given up once another
    /// process took the row over (so its handlers do not run twice).
    #[test]
    fn a_claim_is_kept_extended_or_given_up_before_the_handlers_run() {
        let mut store = crate::store::test_store();
        let sink = sink(60);
        let (seq, token) = claimed_row(&mut store, "fresh", now(), 60.0);
        assert_eq!(
            sink.keep_claim(&mut store, claim_of(seq, token))
                .map(|c| c.token),
            Some(token)
        );

        // Claimed 40 s ago for 60 s: extended to a full lease from now.
        let (seq, token) = claimed_row(&mut store, "old", now() - 40.0, 60.0);
        let kept = sink
            .keep_claim(&mut store, claim_of(seq, token))
            .unwrap()
            .token;
        assert!(kept > token + 30.0, "{kept} against {token}");

        // Claimed 70 s ago: it lapsed, and another process claimed it.
        let (seq, token) = claimed_row(&mut store, "lapsed", now() - 70.0, 60.0);
        let theirs = store
            .in_write(|tx| notifications::claim(tx, seq, now(), 60.0))
            .unwrap();
        assert!(theirs.is_some());
        assert!(sink.keep_claim(&mut store, claim_of(seq, token)).is_none());
    }

    /// An outcome kept over a store outage is written before the batch is
    /// tried again, so the retry finds the notification handled (and acks
    /// it) instead of running its handlers again.
    #[test]
    fn an_outcome_kept_over_an_outage_is_written_first() {
        use crate::sink::metrics::Metrics;
        use crate::sink::worker::Logs;
        let mut store = crate::store::test_store();
        let mut sink = sink(60);
        let (seq, token) = claimed_row(&mut store, "kept", now(), 60.0);
        sink.unwritten.push(Settled {
            seq,
            token,
            done: vec!["webhook".into()],
            next: NextOwned::Handled,
            handled: Some((U.to_string(), "kept".to_string())),
        });
        let json = format!(
            r#"{{"uuid":"{U}","type":"notification","severity":"critical","message":"m","id":"kept","ack":true}}"#
        );
        let meta = r#"{"router":"r1","received_at":100}"#;
        let msg = crate::sink::message::parse(
            &[json.into_bytes(), meta.as_bytes().to_vec()],
            SinkType::Notification,
        )
        .unwrap();
        let metrics = Metrics::new(&[SinkType::Notification]);
        let mut logs = Logs::default();
        let mut out = Effects::default();
        let ctx = Ctx {
            metrics: metrics.of(SinkType::Notification),
            logs: &mut logs,
        };
        sink.process(&mut store, vec![msg], &mut out, ctx);
        assert!(sink.unwritten.is_empty());
        assert_eq!(out.acks.len(), 1, "acked as handled, not left busy");
        let rows = crate::store::scratch::rows(
            &mut store,
            "SELECT state, handlers_done FROM notifications WHERE id = 'kept'",
        );
        let state: String = rows[0].get(0).unwrap();
        let done: String = rows[0].get(1).unwrap();
        assert_eq!(
            (state.as_str(), done.as_str()),
            ("handled", r#"["webhook"]"#)
        );
    }

    /// A batch: copies of one notification (two routers) are handled once
    /// and both acked; a resend of a handled one is acked and not recorded
    /// again; one without ack or id is recorded too.
    #[test]
    fn a_batch_handles_each_notification_once() {
        use crate::sink::metrics::Metrics;
        use crate::sink::worker::Logs;
        let mut store = crate::store::test_store();
        let mut sink = NotificationSink::new(
            Handlers::from_env(&crate::config::Env::default()).unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(3600),
            Duration::from_secs(30),
        );
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
