//! The stats sink: each metric of a `stats` message becomes a Graphite
//! plaintext line `PREFIX.HOSTNAME.METRIC VALUE TS`, handed to the Graphite
//! writer once the batch is committed.
//!
//! The hostname is the message's, else the one the store knows for the
//! client, else its UUID, so a metric is never filed under nobody. A metric
//! whose value is not a number (or cannot be named) is refused alone and
//! counted; the rest of the message still goes out.

use super::config::SinkType;
use super::message::{Incoming, Malformed};
use super::worker::{Effects, Failure, TypeSink};
use crate::graphite;
use crate::store::clients;
use crate::store::Tx;
use serde_json::Value;

pub struct StatsSink {
    /// `VIGIL_GRAPHITE_PREFIX`.
    pub prefix: String,
}

impl TypeSink for StatsSink {
    fn kind(&self) -> SinkType {
        SinkType::Stats
    }

    fn handle(&mut self, conn: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure> {
        let Some(Value::Object(metrics)) = msg.body.get("metrics") else {
            return Err(Malformed("metrics is missing or not an object".into()).into());
        };
        let host = hostname(conn, msg)?;
        let ts = msg.timestamp() as i64;
        for (name, value) in metrics {
            match metric_line(&self.prefix, &host, name, value, ts) {
                Some(line) => out.lines.push(line),
                None => out.rejected += 1,
            }
        }
        Ok(())
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
pub fn hostname(conn: &Tx, msg: &Incoming) -> Result<String, Failure> {
    if let Some(host) = msg.hostname()? {
        return Ok(host.to_string());
    }
    Ok(clients::hostname(conn, &msg.uuid)?.unwrap_or_else(|| msg.uuid.clone()))
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
        };
        crate::store::scratch::with_tx(&mut store, |tx| sink.handle(tx, &msg, &mut out)).unwrap();
        assert_eq!(out.rejected, 2);
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
