//! The stats sink: each metric of a `stats` message becomes a Graphite
//! plaintext line `PREFIX.HOSTNAME.METRIC VALUE TS`, handed to the Graphite
//! writer once the batch is committed.
//!
//! The hostname is the message's, else the one the store knows for the
//! client, else its UUID, so a metric is never filed under nobody. A metric
//! whose value is not a number (or cannot be named) is refused alone and
//! counted; the rest of the message still goes out.
//!
//! The same numbers are kept in the store for a while (`store::metrics`,
//! by a [`MetricKeeper`]) so `vigil web` plots them without Graphite; the
//! samples go in inside the batch's transaction, and the keeper's tick
//! folds and expires old ones.

use super::config::{MetricsRetention, SinkType};
use super::message::{Incoming, Malformed};
use super::worker::{Ctx, Effects, Failure, TypeSink};
use crate::graphite;
use crate::store::{clients, metrics, Store, Tx};
use serde_json::Value;
use std::time::Instant;

pub struct StatsSink {
    /// `VIGIL_GRAPHITE_PREFIX`.
    pub prefix: String,
    pub keeper: MetricKeeper,
}

/// Keeps metric samples in the store for the web view, within the
/// configured retention; does nothing when that is off.
#[derive(Debug)]
pub struct MetricKeeper {
    retention: Option<MetricsRetention>,
    next_rollup: Instant,
    /// This batch's samples, not yet written.
    pending: Vec<metrics::Sample>,
}

impl MetricKeeper {
    pub fn new(retention: Option<MetricsRetention>) -> MetricKeeper {
        MetricKeeper {
            retention,
            next_rollup: Instant::now(),
            pending: Vec::new(),
        }
    }

    /// Keeps one sample of `msg`'s client for the batch's [`MetricKeeper::flush`].
    /// A timestamp ahead of the router's clock is taken as received now
    /// (it would never expire).
    pub fn record(&mut self, msg: &Incoming, name: &str, value: f64) {
        if self.retention.is_some() {
            self.pending.push(metrics::Sample {
                uuid: msg.uuid.clone(),
                name: name.to_string(),
                ts: msg.timestamp().min(msg.meta.received_at),
                value,
            });
        }
    }

    /// Stores the batch's samples (one statement on PostgreSQL).
    pub fn flush(&mut self, tx: &Tx) -> crate::store::Result<()> {
        if !self.pending.is_empty() {
            metrics::record_many(tx, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Folds and expires old samples when due; returns when next due.
    pub fn tick(&mut self, store: &mut Store, ctx: &mut Ctx) -> Option<Instant> {
        let retention = self.retention?;
        if Instant::now() >= self.next_rollup {
            let now = crate::store::now();
            match metrics::roll_up(
                store,
                now,
                retention.raw.as_secs_f64(),
                retention.minute.as_secs_f64(),
            ) {
                Ok(done) if done.folded + done.dropped > 0 => log::debug!(
                    "metrics: folded {} raw samples, dropped {} minutes",
                    done.folded,
                    done.dropped
                ),
                Ok(_) => {}
                Err(e) => ctx.store_error(0, &e),
            }
            self.next_rollup = Instant::now() + retention.rollup_every;
        }
        Some(self.next_rollup)
    }
}

impl TypeSink for StatsSink {
    fn kind(&self) -> SinkType {
        SinkType::Stats
    }

    fn handle(&mut self, tx: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure> {
        let Some(Value::Object(metrics)) = msg.body.get("metrics") else {
            return Err(Malformed("metrics is missing or not an object".into()).into());
        };
        let host = hostname(tx, msg)?;
        let ts = msg.timestamp() as i64;
        for (name, value) in metrics {
            match metric_line(&self.prefix, &host, name, value, ts) {
                Some(line) => {
                    out.lines.push(line);
                    if let Some(v) = value.as_f64() {
                        self.keeper.record(msg, name, v);
                    }
                }
                None => out.rejected += 1,
            }
        }
        Ok(())
    }

    fn flush(&mut self, tx: &Tx, _out: &mut Effects) -> Result<(), Failure> {
        Ok(self.keeper.flush(tx)?)
    }

    fn discard(&mut self) {
        self.keeper.discard();
    }

    fn tick(&mut self, store: &mut Store, _out: &mut Effects, mut ctx: Ctx) -> Option<Instant> {
        self.keeper.tick(store, &mut ctx)
    }
}

/// The line for one metric; `None` when the value is not a finite number
/// (a boolean is not a number here) or the name sanitises to nothing.
pub fn metric_line(prefix: &str, host: &str, name: &str, value: &Value, ts: i64) -> Option<String> {
    let Value::Number(n) = value else {
        return None;
    };
    graphite::line(prefix, &[host, name], n.as_f64()?, ts)
}

/// The client's hostname: the message's, the store's, or its UUID.
pub fn hostname(tx: &Tx, msg: &Incoming) -> Result<String, Failure> {
    if let Some(host) = msg.hostname()? {
        return Ok(host.to_string());
    }
    Ok(clients::hostname(tx, &msg.uuid)?.unwrap_or_else(|| msg.uuid.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::{incoming, U};
    use crate::store::test_store;
    use serde_json::json;

    #[test]
    fn numbers_become_lines_and_the_rest_is_counted() {
        let mut store = test_store();
        let msg = incoming(
            SinkType::Stats,
            &format!(
                r#"{{"uuid":"{U}","type":"stats","hostname":"web1","ts":1700000000,
                    "metrics":{{"load.1m":0.5,"up":true,"name":"x","mem.free":1024}}}}"#
            ),
        );
        let mut out = Effects::default();
        let mut sink = StatsSink {
            prefix: "vigil".into(),
            keeper: MetricKeeper::new(MetricsRetention::from_env(&Default::default()).unwrap()),
        };
        crate::store::scratch::with_tx(&mut store, |tx| {
            sink.handle(tx, &msg, &mut out)?;
            sink.flush(tx, &mut out)
        })
        .unwrap();
        assert_eq!(out.rejected, 2);
        // Kept for the web view too, under the client and the metric name,
        // at the router's time (the message's is in the past, so it stays).
        let tx = store.read().unwrap();
        let names = metrics::names(&tx, U, 0.0).unwrap();
        assert_eq!(names, ["load.1m", "mem.free"]);
        let points = metrics::series(&tx, U, "load.1m", 0.0, 10).unwrap();
        assert_eq!(points, [(1_700_000_000.0, 0.5)]);
        let mut lines = out.lines.clone();
        lines.sort();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("vigil.web1.load.1m 0.5 1700000000"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("vigil.web1.mem.free 1024 1700000000"),
            "{lines:?}"
        );
    }

    #[test]
    fn metrics_must_be_an_object() {
        let mut store = test_store();
        let msg = incoming(
            SinkType::Stats,
            &format!(r#"{{"uuid":"{U}","type":"stats","metrics":[1]}}"#),
        );
        let mut sink = StatsSink {
            prefix: "vigil".into(),
            keeper: MetricKeeper::new(None),
        };
        assert!(matches!(
            crate::store::scratch::with_tx(&mut store, |tx| sink.handle(
                tx,
                &msg,
                &mut Effects::default()
            )),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn hostname_falls_back_to_the_uuid() {
        let mut store = test_store();
        let msg = incoming(
            SinkType::Stats,
            &format!(r#"{{"uuid":"{U}","type":"stats"}}"#),
        );
        assert_eq!(
            crate::store::scratch::with_tx(&mut store, |tx| hostname(tx, &msg)).unwrap(),
            U
        );
        assert_eq!(metric_line("p", "h", "m", &json!(null), 1), None);
    }
}
