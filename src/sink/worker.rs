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
use super::metrics::{Metrics, RateLimitedLog, TypeMetrics};
use crate::doorbell::Ringer;
use crate::graphite::Graphite;
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
    pub malformed: RateLimitedLog,
    pub store: RateLimitedLog,
    pub handlers: RateLimitedLog,
    /// Set when the store was unreachable: the worker retries the batch.
    pub outage: bool,
}

impl Default for Logs {
    fn default() -> Logs {
        let every = Duration::from_secs(10);
        Logs {
            malformed: RateLimitedLog::new(every),
            store: RateLimitedLog::new(every),
            handlers: RateLimitedLog::new(Duration::from_secs(1)),
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

    /// Handles one message inside the batch's transaction, after its client
    /// row was upserted. `Ok` means durably handled once committed: it is
    /// acked if it asked.
    fn handle(&mut self, tx: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure>;

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
    let tx = store.write()?;
    let mut handled = 0;
    let mut seen = SeenInBatch::default();
    for msg in msgs {
        let mark = out.mark();
        if careful {
            tx.savepoint("msg")?;
        }
        let result = seen
            .only_time_moved(msg)
            .map_err(Failure::from)
            .and_then(|same| {
                if !same {
                    upsert_client(&tx, msg)?;
                }
                sink.handle(&tx, msg, out)
            });
        match result {
            Ok(()) => {
                if careful {
                    tx.release("msg")?;
                }
                seen.committed(msg);
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
                out.rewind(mark);
                ctx.store_error(1, &e);
            }
        }
    }
    seen.flush(&tx)?;
    tx.commit()?;
    Ok(handled)
}

/// The last sighting committed in this batch, so that a run of messages
/// from one client on one connection costs one client upsert, not one each:
/// when only the time moved, the new `last_seen` is written once at the end.
#[derive(Default)]
struct SeenInBatch {
    last: Option<Sighting>,
    /// The latest `received_at` not yet written, per skipped client.
    pending: Vec<(String, f64)>,
}

/// What the client row says after a committed message.
struct Sighting {
    uuid: String,
    hostname: Option<String>,
    router: String,
    peer: Option<String>,
    at: f64,
}

impl SeenInBatch {
    /// Whether `msg` tells nothing about its client but a later time.
    fn only_time_moved(&mut self, msg: &Incoming) -> Result<bool, Malformed> {
        let Some(last) = &self.last else {
            return Ok(false);
        };
        let hostname = msg.hostname()?;
        let same = last.uuid == msg.uuid
            && last.router == msg.meta.router
            && last.peer == msg.meta.peer
            && (hostname.is_none() || hostname == last.hostname.as_deref())
            && msg.meta.received_at >= last.at;
        if same {
            match self.pending.last_mut() {
                Some((uuid, at)) if *uuid == msg.uuid => *at = at.max(msg.meta.received_at),
                _ => self.pending.push((msg.uuid.clone(), msg.meta.received_at)),
            }
        }
        Ok(same)
    }

    /// Remembers a committed message: its client row is current.
    fn committed(&mut self, msg: &Incoming) {
        let given = msg.hostname().ok().flatten().map(str::to_string);
        let hostname = match (&self.last, given) {
            (_, Some(h)) => Some(h),
            (Some(last), None) if last.uuid == msg.uuid => last.hostname.clone(),
            // Unknown here; a later message naming one will upsert.
            (_, None) => None,
        };
        let at = self
            .last
            .as_ref()
            .filter(|l| l.uuid == msg.uuid)
            .map_or(msg.meta.received_at, |l| l.at.max(msg.meta.received_at));
        self.last = Some(Sighting {
            uuid: msg.uuid.clone(),
            hostname,
            router: msg.meta.router.clone(),
            peer: msg.meta.peer.clone(),
            at,
        });
    }

    /// Writes the deferred `last_seen` times.
    fn flush(&mut self, tx: &Tx) -> crate::store::Result<()> {
        for (uuid, at) in self.pending.drain(..) {
            tx.execute(
                "UPDATE clients SET last_seen = ?2 WHERE uuid = ?1 AND last_seen < ?2",
                crate::params![&uuid, at],
            )?;
        }
        Ok(())
    }
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
        let r = tx
            .query_row(
                "SELECT hostname, first_seen, last_seen, last_router FROM clients",
                &[],
            )
            .unwrap();
        let row: (String, f64, f64, String) = (
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            r.get(2).unwrap(),
            r.get(3).unwrap(),
        );
        assert_eq!(row, ("web2".into(), 10.0, 14.0, "r2".into()));
        assert_eq!(out.lines.len(), 5);
        assert!(out.lines[1].starts_with("vigil.web1.a "), "{:?}", out.lines);
        assert!(out.lines[4].starts_with("vigil.web2.a "), "{:?}", out.lines);
    }
}
