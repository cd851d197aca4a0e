//! A type's worker thread: takes batches from its PULL thread, parses them,
//! writes them to the store in one transaction per batch, and only then
//! publishes what follows from them (acks, Graphite lines, a ring of the
//! outbox's bell).
//!
//! What differs per type is a [`TypeSink`]. The store is the slow part, so
//! a batch costs one commit, not one per message; each message runs inside
//! its own savepoint when one fails, so it rolls back alone and never
//! poisons the rest of its batch (the batch first runs without savepoints,
//! a round trip each on PostgreSQL, and again with them only if a message
//! failed). A store failure loses the batch's messages (their acks are not
//! sent, so the agent resends those that matter) but never the thread; a
//! store that is unreachable (PostgreSQL restarting) keeps the batch, which
//! is retried with backoff until the store is back, so nothing is dropped
//! meanwhile, and nothing is acked before its transaction commits. Two
//! processes' transactions that deadlock on PostgreSQL (one is aborted)
//! are retried. A message whose envelope is sound but whose fields are not
//! is counted, logged and acked if it asked: resending it cannot help.

use super::acks::Ack;
use super::config::SinkType;
use super::message::{self, Incoming, Malformed};
use super::metrics::{Metrics, TypeMetrics};
use crate::doorbell::Ringer;
use crate::graphite::Graphite;
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crate::store::{clients, DbError, Store, Tx};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One multipart message as read off a PULL socket.
pub type Raw = Vec<Vec<u8>>;
/// What a PULL thread hands its worker at once.
pub type Batch = Vec<Raw>;

/// What handling a batch leads to, published only after it is committed.
#[derive(Debug, Default)]
pub struct Effects {
    pub acks: Vec<Ack>,
    /// Graphite plaintext lines.
    pub lines: Vec<String>,
    /// Notifications inserted as pending for the outbox.
    pub raised: usize,
    /// Parts of messages refused (counted in `rejected_items`).
    pub rejected: usize,
}

impl Effects {
    fn mark(&self) -> (usize, usize, usize) {
        (self.acks.len(), self.lines.len(), self.raised)
    }

    /// Forgets what a rolled-back message led to (its refused parts stay
    /// counted: they were refused either way).
    fn rewind(&mut self, (acks, lines, raised): (usize, usize, usize)) {
        self.acks.truncate(acks);
        self.lines.truncate(lines);
        self.raised = raised;
    }
}

/// Why one message was not handled.
#[derive(Debug)]
pub enum Failure {
    Malformed(Malformed),
    Store(DbError),
}

impl From<Malformed> for Failure {
    fn from(m: Malformed) -> Failure {
        Failure::Malformed(m)
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        Failure::Store(e)
    }
}

/// The logs a worker writes about bad input and store trouble.
#[derive(Debug)]
pub struct Logs {
    pub malformed: RateLimit,
    pub store: RateLimit,
    pub handlers: RateLimit,
    /// Set when the store was unreachable: the worker retries the batch.
    pub outage: bool,
}

impl Default for Logs {
    fn default() -> Logs {
        let every = Duration::from_secs(10);
        Logs {
            malformed: RateLimit::new(every),
            store: RateLimit::new(every),
            handlers: RateLimit::new(Duration::from_secs(1)),
            outage: false,
        }
    }
}

/// A worker's view of its counters and logs, handed to its [`TypeSink`].
pub struct Ctx<'a> {
    pub metrics: &'a TypeMetrics,
    pub logs: &'a mut Logs,
}

impl Ctx<'_> {
    pub fn malformed(&mut self, msg: &Incoming, why: &Malformed) {
        TypeMetrics::add(&self.metrics.malformed, 1);
        let kind = self.metrics.kind;
        self.logs.malformed.warn(format_args!(
            "{kind}: refused a message from {} via {}: {why}",
            msg.uuid, msg.meta.router
        ));
    }

    /// A conflict with another process's transaction (a deadlock, a
    /// serialization failure, SQLite busy) left nothing committed: the
    /// batch is held and tried again, as after an outage.
    pub fn retry_later(&mut self, e: &DbError) {
        log::debug!(
            "{}: store conflict, the batch is tried again: {e}",
            self.metrics.kind
        );
        self.logs.outage = true;
    }

    /// A store failure that lost `messages` messages (0: periodic work).
    pub fn store_error(&mut self, messages: usize, e: &DbError) {
        if e.is_outage() {
            // The store logs an outage once; the batch is retried.
            self.logs.outage = true;
            return;
        }
        TypeMetrics::add(&self.metrics.store_errors, messages.max(1));
        let kind = self.metrics.kind;
        let lost = match messages {
            0 => String::new(),
            n => format!(", {n} message(s) not recorded"),
        };
        self.logs
            .store
            .warn(format_args!("{kind}: store failed{lost}: {e}"));
    }
}

/// What one message type's sink does with its messages.
pub trait TypeSink {
    fn kind(&self) -> SinkType;

    /// Handles one message inside the batch's transaction. Its client's
    /// row is written with the batch's (see `clients::Sightings`), and
    /// writes may be left for [`TypeSink::flush`]. `Ok` means durably
    /// handled once committed: it is acked if it asked.
    fn handle(&mut self, tx: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure>;

    /// Writes what `handle` left for the end of the batch (after the
    /// clients' rows): a few multi-row statements for the whole batch
    /// rather than several per message, which on PostgreSQL are round
    /// trips.
    fn flush(&mut self, _tx: &Tx, _out: &mut Effects) -> Result<(), Failure> {
        Ok(())
    }

    /// Forgets what `handle` left: its transaction is given up.
    fn discard(&mut self) {}

    /// Handles a batch. The default is one transaction for the batch.
    fn process(&mut self, store: &mut Store, msgs: Vec<Incoming>, out: &mut Effects, ctx: Ctx) {
        one_transaction(self, store, &msgs, out, ctx);
    }

    /// The store is reachable again after an outage.
    fn store_back(&mut self) {}

    /// Periodic work; returns when it is next due (`None`: never).
    fn tick(&mut self, _store: &mut Store, _out: &mut Effects, _ctx: Ctx) -> Option<Instant> {
        None
    }
}

/// Handles `msgs` in one write transaction. It runs first without
/// savepoints; if a message fails, the transaction is rolled back and run
/// again with each message in its own savepoint, so the failing one rolls
/// back alone.
pub fn one_transaction<S: TypeSink + ?Sized>(
    sink: &mut S,
    store: &mut Store,
    msgs: &[Incoming],
    out: &mut Effects,
    mut ctx: Ctx,
) {
    let (start, rejected) = (out.mark(), out.rejected);
    let mut careful = false;
    let mut conflicts = 0;
    loop {
        match attempt(sink, store, msgs, out, &mut ctx, careful) {
            Ok(handled) => return TypeMetrics::add(&ctx.metrics.handled, handled),
            Err(again) => {
                out.rewind(start);
                out.rejected = rejected;
                match again {
                    Again::Careful => careful = true,
                    Again::Store(e) if e.is_conflict() && conflicts < 3 => conflicts += 1,
                    Again::Store(e) => return ctx.store_error(msgs.len(), &e),
                }
            }
        }
    }
}

/// Why a batch's transaction runs again (or is given up).
enum Again {
    /// A message failed: again, with savepoints.
    Careful,
    Store(DbError),
}

impl From<DbError> for Again {
    fn from(e: DbError) -> Again {
        Again::Store(e)
    }
}

fn attempt<S: TypeSink + ?Sized>(
    sink: &mut S,
    store: &mut Store,
    msgs: &[Incoming],
    out: &mut Effects,
    ctx: &mut Ctx,
    careful: bool,
) -> Result<usize, Again> {
    let mut seen = clients::Sightings::default();
    sink.discard();
    let tx = store.write()?;
    let result = attempt_in(sink, &tx, msgs, out, ctx, careful, &mut seen);
    if result.is_err() {
        sink.discard();
        return result;
    }
    tx.commit()?;
    result
}

/// The messages in `tx`: each handled (its writes left for the end of the
/// batch, so the batch costs a few multi-row statements), then the clients'
/// sightings and the sink's writes flushed. Careful, each message is
/// handled and flushed in its own savepoint.
fn attempt_in<S: TypeSink + ?Sized>(
    sink: &mut S,
    tx: &Tx,
    msgs: &[Incoming],
    out: &mut Effects,
    ctx: &mut Ctx,
    careful: bool,
    seen: &mut clients::Sightings,
) -> Result<usize, Again> {
    let mut handled = 0;
    for msg in msgs {
        let mark = out.mark();
        if careful {
            tx.savepoint("msg")?;
        }
        let result = sight(tx, msg, seen).and_then(|()| {
            sink.handle(tx, msg, out)?;
            if careful {
                seen.flush(tx)?;
                sink.flush(tx, out)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                if careful {
                    tx.release("msg")?;
                }
                handled += 1;
                if msg.ack {
                    out.acks.push(Ack::of(msg));
                }
            }
            Err(Failure::Store(e)) if e.is_outage() || e.is_conflict() => {
                return Err(Again::Store(e))
            }
            Err(_) if !careful => return Err(Again::Careful),
            Err(Failure::Malformed(why)) => {
                tx.rollback_to("msg")?;
                seen.clear();
                sink.discard();
                out.rewind(mark);
                ctx.malformed(msg, &why);
                // A resend would be refused the same way: ack it so the
                // agent stops resending what can never be handled.
                if msg.ack {
                    out.acks.push(Ack::of(msg));
                }
            }
            Err(Failure::Store(e)) => {
                tx.rollback_to("msg")?;
                seen.clear();
                sink.discard();
                out.rewind(mark);
                ctx.store_error(1, &e);
            }
        }
    }
    if !careful {
        let flushed = seen
            .flush(tx)
            .map_err(Failure::from)
            .and_then(|()| sink.flush(tx, out));
        match flushed {
            Ok(()) => {}
            Err(Failure::Store(e)) if e.is_outage() || e.is_conflict() => {
                return Err(Again::Store(e))
            }
            // Which message it was is found one by one.
            Err(_) => return Err(Again::Careful),
        }
    }
    Ok(handled)
}

/// Adds `msg`'s sighting of its client to the batch's. A message without a
/// hostname whose client gave one earlier in the batch has the sightings
/// written first, so a sink reading the stored hostname finds it.
fn sight(tx: &Tx, msg: &Incoming, seen: &mut clients::Sightings) -> Result<(), Failure> {
    let hostname = msg.hostname()?;
    if hostname.is_none() && seen.hostname(&msg.uuid).is_some() {
        seen.flush(tx)?;
    }
    seen.add(&clients::Sighting {
        uuid: &msg.uuid,
        hostname,
        at: msg.meta.received_at,
        router: &msg.meta.router,
        peer: msg.meta.peer.as_deref(),
    });
    Ok(())
}

/// Every sink keeps the sender's client row current.
pub fn upsert_client(tx: &Tx, msg: &Incoming) -> Result<(), Failure> {
    let sighting = clients::Sighting {
        uuid: &msg.uuid,
        hostname: msg.hostname()?,
        at: msg.meta.received_at,
        router: &msg.meta.router,
        peer: msg.meta.peer.as_deref(),
    };
    clients::upsert(tx, &sighting)?;
    Ok(())
}

/// The worker thread of one type.
pub struct Worker<S: TypeSink> {
    pub sink: S,
    pub store: Store,
    pub batches: Receiver<Batch>,
    pub acks: Sender<Ack>,
    pub graphite: Option<Arc<Graphite>>,
    /// Rung when notifications were raised, if the outbox runs here.
    pub outbox: Option<Ringer>,
    pub metrics: Arc<Metrics>,
    pub stats_interval: Option<Duration>,
    pub shutdown: ShutdownWatch,
}

/// The longest wait between retries of a batch while the store is down.
const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

impl<S: TypeSink> Worker<S> {
    /// Runs until its PULL thread has gone and every batch it sent is done.
    pub fn run(mut self) -> Result<(), String> {
        let kind = self.sink.kind();
        let mut logs = Logs::default();
        let mut next_tick = self.tick(&mut logs);
        let mut next_stats = self.stats_interval.map(|i| Instant::now() + i);
        loop {
            let wake = [next_tick, next_stats].into_iter().flatten().min();
            let got = match wake {
                Some(at) => self.batches.recv_deadline(at),
                None => self
                    .batches
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(batch) => self.batch(batch, &mut logs),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if next_tick.is_some_and(|t| t <= now) {
                next_tick = self.tick(&mut logs);
            }
            if let (Some(at), Some(every)) = (next_stats, self.stats_interval) {
                if at <= now {
                    let graphite = match &self.graphite {
                        Some(g) => {
                            let s = g.stats();
                            format!(
                                "; graphite sent={} dropped={} buffered={} reconnects={}",
                                s.sent, s.dropped, s.buffered, s.reconnects
                            )
                        }
                        None => String::new(),
                    };
                    log::info!("stats {}{graphite}", self.metrics.of(kind).line());
                    next_stats = Some(now + every);
                }
            }
        }
        Ok(())
    }

    fn batch(&mut self, batch: Batch, logs: &mut Logs) {
        let kind = self.sink.kind();
        let metrics = Arc::clone(&self.metrics);
        let m = metrics.of(kind);
        TypeMetrics::add(&m.received, batch.len());
        let mut msgs = Vec::with_capacity(batch.len());
        for raw in batch {
            match message::parse(&raw, kind) {
                Ok(msg) => msgs.push(msg),
                Err(why) => {
                    TypeMetrics::add(&m.malformed, 1);
                    logs.malformed
                        .warn(format_args!("{kind}: refused a message: {why}"));
                }
            }
        }
        if msgs.is_empty() {
            return;
        }
        let mut wait = Duration::from_millis(100);
        let mut waited = false;
        loop {
            let mut out = Effects::default();
            logs.outage = false;
            let ctx = Ctx {
                metrics: m,
                logs: &mut *logs,
            };
            self.sink
                .process(&mut self.store, msgs.clone(), &mut out, ctx);
            // What committed is published even when the rest waits.
            self.publish(out);
            if !logs.outage {
                if waited {
                    self.sink.store_back();
                }
                return;
            }
            waited = true;
            // The store is unreachable: hold the batch (the PULL queue and
            // the routers hold what follows) and try again; at shutdown the
            // agents' resends carry what needs an ack.
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.shutdown.is_set() {
                    TypeMetrics::add(&m.store_errors, msgs.len());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(OUTAGE_RETRY_MAX);
        }
    }

    fn tick(&mut self, logs: &mut Logs) -> Option<Instant> {
        let metrics = Arc::clone(&self.metrics);
        let ctx = Ctx {
            metrics: metrics.of(self.sink.kind()),
            logs,
        };
        let mut out = Effects::default();
        let next = self.sink.tick(&mut self.store, &mut out, ctx);
        self.publish(out);
        next
    }

    /// Hands on what a committed batch led to.
    fn publish(&self, out: Effects) {
        let m = self.metrics.of(self.sink.kind());
        for ack in out.acks {
            match self.acks.try_send(ack) {
                Ok(()) => TypeMetrics::add(&m.acks_queued, 1),
                // The agent resends; its duplicate is acked then.
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    TypeMetrics::add(&m.acks_dropped, 1)
                }
            }
        }
        if !out.lines.is_empty() {
            if let Some(graphite) = &self.graphite {
                graphite.send(out.lines);
            }
        }
        TypeMetrics::add(&m.rejected_items, out.rejected);
        if out.raised > 0 {
            TypeMetrics::add(&m.raised, out.raised);
            if let Some(bell) = &self.outbox {
                bell.ring();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::U;
    use crate::sink::stats::StatsSink;
    use crate::store::test_store;

    fn stats(hostname: Option<&str>, router: &str, at: f64) -> Incoming {
        let host = hostname.map_or(String::new(), |h| format!(r#","hostname":"{h}""#));
        let json = format!(r#"{{"uuid":"{U}","type":"stats","metrics":{{"a":1}}{host}}}"#);
        let meta = format!(r#"{{"router":"{router}","received_at":{at}}}"#);
        message::parse(&[json.into_bytes(), meta.into_bytes()], SinkType::Stats).unwrap()
    }

    #[test]
    fn a_batch_keeps_the_client_row_exact_with_fewer_writes() {
        let mut store = test_store();
        let metrics = Metrics::new(&[SinkType::Stats]);
        let mut logs = Logs::default();
        let batch = [
            stats(Some("web1"), "r1", 10.0),
            stats(None, "r1", 11.0),
            stats(Some("web2"), "r1", 12.0),
            stats(None, "r2", 13.0),
            stats(None, "r2", 14.0),
        ];
        let mut out = Effects::default();
        let ctx = Ctx {
            metrics: metrics.of(SinkType::Stats),
            logs: &mut logs,
        };
        let mut sink = StatsSink {
            prefix: "vigil".into(),
            keeper: crate::sink::stats::MetricKeeper::new(None),
        };
        one_transaction(&mut sink, &mut store, &batch, &mut out, ctx);
        let tx = store.read().unwrap();
        let row = crate::store::clients::only_row(&tx);
        assert_eq!(row, ("web2".into(), 10.0, 14.0, "r2".into()));
        assert_eq!(out.lines.len(), 5);
        assert!(out.lines[1].starts_with("vigil.web1.a "), "{:?}", out.lines);
        assert!(out.lines[4].starts_with("vigil.web2.a "), "{:?}", out.lines);
    }

    /// `json` from `uuid` received at `at` through `router`.
    fn msg(kind: SinkType, json: &str, at: f64, router: &str) -> Incoming {
        let meta = format!(r#"{{"router":"{router}","received_at":{at},"peer":"10.0.0.1"}}"#);
        message::parse(&[json.as_bytes().to_vec(), meta.into_bytes()], kind).unwrap()
    }

    /// Runs `msgs` through `sink` in one batch, or one batch per message;
    /// returns how many notifications were raised.
    fn run<S: TypeSink>(
        store: &mut Store,
        sink: &mut S,
        msgs: &[Incoming],
        one_batch: bool,
    ) -> usize {
        let metrics = Metrics::new(&[sink.kind()]);
        let mut logs = Logs::default();
        let mut out = Effects::default();
        let batches: Vec<&[Incoming]> = if one_batch {
            vec![msgs]
        } else {
            msgs.chunks(1).collect()
        };
        for batch in batches {
            let ctx = Ctx {
                metrics: metrics.of(sink.kind()),
                logs: &mut logs,
            };
            one_transaction(sink, store, batch, &mut out, ctx);
        }
        assert_eq!(out.acks.len(), msgs.iter().filter(|m| m.ack).count());
        out.raised
    }

    fn dump(store: &mut Store, sql: &str) -> Vec<crate::store::Row> {
        crate::store::scratch::rows(store, sql)
    }

    /// A batch's multi-row writes leave what its messages stored one by one
    /// leave: results (a late copy, changes, a run completed), the
    /// notifications raised, client rows.
    #[test]
    fn a_batch_of_results_stores_what_they_store_one_by_one() {
        let r = |status: i64, at: f64, host: &str, run: &str| {
            let run = if run.is_empty() {
                String::new()
            } else {
                format!(r#","run_id":"{run}""#)
            };
            msg(
                SinkType::Result,
                &format!(
                    r#"{{"uuid":"{U}","type":"result","hostname":"{host}","plugin":"load","status":{status},"output":"s{status}"{run},"ack":true,"id":"{at}"}}"#
                ),
                at,
                "r1",
            )
        };
        let other = msg(
            SinkType::Result,
            r#"{"uuid":"22222222-2222-4222-8222-222222222222","type":"result","plugin":"disk","status":2}"#,
            105.0,
            "r2",
        );
        let msgs = [
            r(0, 100.0, "a", ""),
            other,
            r(0, 110.0, "b", "run-1"),
            r(2, 120.0, "b", ""),
            r(0, 115.0, "c", "run-1"),
            r(2, 130.0, "b", ""),
            r(0, 140.0, "b", ""),
        ];
        let mut seen = Vec::new();
        for one_batch in [true, false] {
            let mut store = test_store();
            store
                .in_write(|tx| {
                    tx.execute(
                        &format!("INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES ('run-1', '{U}', 'load', 1, 2)"),
                        &[],
                    )
                })
                .unwrap();
            let mut sink = crate::sink::result::ResultSink::new(
                "vigil".into(),
                crate::sink::stats::MetricKeeper::new(None),
            );
            let raised = run(&mut store, &mut sink, &msgs, one_batch);
            seen.push((
                raised,
                dump(&mut store, "SELECT uuid, plugin, status, output, run_id, ts, changed_at FROM results ORDER BY uuid, plugin"),
                dump(&mut store, "SELECT uuid, severity, message, origin, state FROM notifications ORDER BY seq"),
                dump(&mut store, "SELECT run_id, completed_at FROM runs"),
                dump(&mut store, "SELECT uuid, hostname, first_seen, last_seen, last_router, peer FROM clients ORDER BY uuid"),
            ));
        }
        assert_eq!(seen[0], seen[1]);
        let (raised, results, notes, runs, clients) = &seen[0];
        assert_eq!(*raised, 3, "{notes:?}");
        assert_eq!(
            results[0].get::<f64>(6).unwrap(),
            140.0,
            "changed at the return to OK"
        );
        assert_eq!(runs[0].get::<f64>(1).unwrap(), 110.0, "completed once");
        assert_eq!(
            clients[0].get::<String>(1).unwrap(),
            "b",
            "the last hostname given"
        );
    }

    /// Registrations in one batch: each replaces its process's set in
    /// order, takeovers included, as one by one.
    #[test]
    fn a_batch_of_registrations_stores_what_they_store_one_by_one() {
        let reg = |process: &str, plugins: &[&str], at: f64| {
            let list: Vec<String> = plugins
                .iter()
                .map(|p| {
                    format!(
                        r#"{{"name":"{p}","command":"/bin/{p}","interval_s":60,"timeout_s":5}}"#
                    )
                })
                .collect();
            msg(
                SinkType::Registration,
                &format!(
                    r#"{{"uuid":"{U}","type":"registration","process":{{"name":"{process}","pid":{}}},"plugins":[{}]}}"#,
                    at as i64,
                    list.join(",")
                ),
                at,
                "r1",
            )
        };
        let msgs = [
            reg("q", &["x", "y"], 1.0),
            reg("p", &["x"], 2.0),
            reg("q", &["y", "z"], 3.0),
            reg("p", &[], 4.0),
            reg("r", &["w"], 5.0),
        ];
        let mut seen = Vec::new();
        for one_batch in [true, false] {
            let mut store = test_store();
            let mut sink = crate::sink::registration::RegistrationSink::default();
            run(&mut store, &mut sink, &msgs, one_batch);
            seen.push((
                dump(&mut store, "SELECT uuid, name, process, command, interval_s, timeout_s, registered_at FROM plugins ORDER BY name"),
                dump(&mut store, "SELECT uuid, name, pid, registered_at FROM processes ORDER BY name"),
            ));
        }
        assert_eq!(seen[0], seen[1]);
        let names: Vec<String> = seen[0].0.iter().map(|r| r.get(1).unwrap()).collect();
        assert_eq!(names, ["w", "y", "z"], "x went with p's empty set");
    }

    /// Heartbeats in one batch: the newest time and the last interval; a
    /// client that was down recovers once.
    #[test]
    fn a_batch_of_heartbeats_records_what_they_record_one_by_one() {
        let beat = |uuid: &str, interval: f64, at: f64| {
            msg(
                SinkType::Heartbeat,
                &format!(
                    r#"{{"uuid":"{uuid}","type":"heartbeat","hostname":"h","interval_s":{interval}}}"#
                ),
                at,
                "r1",
            )
        };
        const V: &str = "33333333-3333-4333-8333-333333333333";
        let msgs = [
            beat(U, 10.0, 100.0),
            beat(V, 5.0, 101.0),
            beat(U, 20.0, 130.0),
            beat(U, 30.0, 120.0),
        ];
        let mut seen = Vec::new();
        for one_batch in [true, false] {
            let mut store = test_store();
            let mut sink =
                crate::sink::heartbeat::HeartbeatSink::new(0.0, 3.0, Duration::from_secs(1));
            run(&mut store, &mut sink, &msgs[..1], true);
            store
                .in_write(|tx| tx.execute("UPDATE clients SET liveness = 'down'", &[]))
                .unwrap();
            let raised = run(&mut store, &mut sink, &msgs[1..], one_batch);
            seen.push((
                raised,
                dump(&mut store, "SELECT uuid, last_heartbeat, heartbeat_interval_s, liveness FROM clients ORDER BY uuid"),
            ));
        }
        assert_eq!(seen[0].1, seen[1].1);
        assert_eq!((seen[0].0, seen[1].0), (1, 1), "one recovery");
        assert_eq!(seen[0].1[0].get::<f64>(1).unwrap(), 130.0);
        assert_eq!(
            seen[0].1[0].get::<f64>(2).unwrap(),
            30.0,
            "the last interval given"
        );
    }
}
