//! The result sink: the last status per (client, plugin), notifications on
//! a change of state, and perfdata to Graphite.
//!
//! A change (including a plugin's first non-OK result) raises a pending
//! notification for the outbox: CRITICAL → `critical`, WARNING and UNKNOWN
//! → `warning`, back to OK → `info` with `"recovery": true`. Perfdata
//! values go to Graphite as `PREFIX.HOSTNAME.PLUGIN.LABEL`, and into the
//! store's recent metrics as `PLUGIN.LABEL` (for `vigil web`). A result
//! carrying `run_id` completes the scheduler's run.
//!
//! Perfdata is accepted as the agent may send it: an object of
//! `label: number` (or `label: {"value": number, ...}`), an array of
//! `{"label", "value"}`, or the Nagios plugin text
//! `'label'=value[UOM];[warn];[crit];[min];[max] ...`.

use super::config::SinkType;
use super::message::{Incoming, Malformed};
use super::stats::{hostname, MetricKeeper};
use super::worker::{Ctx, Effects, Failure, TypeSink};
use crate::graphite;
use crate::protocol::{PluginState, Severity};
use crate::store::notifications::{self, Raised};
use crate::store::results::{self, PluginResult};
use crate::store::Tx;
use serde_json::Value;

pub struct ResultSink {
    /// `VIGIL_GRAPHITE_PREFIX`.
    pub prefix: String,
    pub keeper: MetricKeeper,
    /// This batch's results, decided on together in [`TypeSink::flush`].
    pub pending: Vec<Pending>,
}

/// A result handled but not yet stored, with the hostname known for it.
#[derive(Debug)]
pub struct Pending {
    result: PluginResult,
    host: String,
}

impl ResultSink {
    pub fn new(prefix: String, keeper: MetricKeeper) -> ResultSink {
        ResultSink {
            prefix,
            keeper,
            pending: Vec::new(),
        }
    }
}

impl TypeSink for ResultSink {
    fn kind(&self) -> SinkType {
        SinkType::Result
    }

    fn handle(&mut self, conn: &Tx, msg: &Incoming, out: &mut Effects) -> Result<(), Failure> {
        let result = parse(msg)?;
        let host = hostname(conn, msg)?;
        let ts = msg.timestamp() as i64;
        let (values, refused) = perf_values(msg.body.get("perfdata"));
        out.rejected += refused;
        for (label, value) in values {
            match graphite::line(&self.prefix, &[&host, &result.plugin, &label], value, ts) {
                Some(line) => {
                    out.lines.push(line);
                    let name = format!("{}.{label}", result.plugin);
                    self.keeper.record(msg, &name, value);
                }
                None => out.rejected += 1,
            }
        }
        self.pending.push(Pending { result, host });
        Ok(())
    }

    /// The batch's results in a few statements: the runs they complete,
    /// the stored rows of their (client, plugin) pairs (locked), then, per
    /// pair in the batch's order, each result decided on as if stored one
    /// by one (a result older than the stored one, a copy relayed late by
    /// another router, must not turn the state back; a change raises a
    /// notification), and the last state of each pair stored.
    fn flush(&mut self, tx: &Tx, out: &mut Effects) -> Result<(), Failure> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            let mut runs: Vec<(&str, &str, f64)> = Vec::new();
            let mut run_ids = std::collections::HashSet::new();
            for p in &pending {
                if let Some(run_id) = &p.result.run_id {
                    if run_ids.insert(run_id.as_str()) {
                        runs.push((run_id, &p.result.uuid, p.result.at));
                    }
                }
            }
            if !runs.is_empty() {
                results::complete_runs(tx, &runs)?;
            }
            let mut keys: Vec<(&str, &str)> = pending
                .iter()
                .map(|p| (p.result.uuid.as_str(), p.result.plugin.as_str()))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let mut state = results::lock_many(tx, &keys)?;
            let mut last: std::collections::HashMap<(&str, &str), (&PluginResult, f64)> =
                std::collections::HashMap::new();
            let mut raised = Vec::new();
            for p in &pending {
                let r = &p.result;
                let key = (r.uuid.clone(), r.plugin.clone());
                let before = state.get(&key).copied();
                if before.is_some_and(|b| r.at < b.ts) {
                    continue;
                }
                let changed_at = match before {
                    Some(b) if b.status == r.status => b.changed_at,
                    _ => r.at,
                };
                if let Some((severity, recovery)) = transition(before.map(|b| b.status), r.status) {
                    let known_host = (p.host != r.uuid).then_some(p.host.as_str());
                    raised.push(change(r, known_host, severity, recovery));
                }
                state.insert(
                    key,
                    results::Stored {
                        status: r.status,
                        ts: r.at,
                        changed_at,
                    },
                );
                last.insert((&r.uuid, &r.plugin), (r, changed_at));
            }
            let mut rows: Vec<(&PluginResult, f64)> = last.into_values().collect();
            rows.sort_by(|a, b| (&a.0.uuid, &a.0.plugin).cmp(&(&b.0.uuid, &b.0.plugin)));
            if !rows.is_empty() {
                results::store_many(tx, &rows)?;
            }
            if !raised.is_empty() {
                notifications::raise_many(tx, &raised)?;
                out.raised += raised.len();
            }
        }
        Ok(self.keeper.flush(tx)?)
    }

    fn discard(&mut self) {
        self.pending.clear();
        self.keeper.discard();
    }

    fn tick(
        &mut self,
        store: &mut crate::store::Store,
        _out: &mut Effects,
        mut ctx: Ctx,
    ) -> Option<std::time::Instant> {
        self.keeper.tick(store, &mut ctx)
    }
}

fn parse(msg: &Incoming) -> Result<PluginResult, Malformed> {
    let plugin = msg.req_str("plugin")?;
    if plugin.is_empty() {
        return Err(Malformed("plugin is empty".into()));
    }
    let status = match msg.body.get("status").and_then(Value::as_i64) {
        Some(s) if PluginState::from_code(s).is_some() => s,
        _ => return Err(Malformed("status must be 0, 1, 2 or 3".into())),
    };
    let perfdata = match msg.body.get("perfdata") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.to_string()),
    };
    Ok(PluginResult {
        uuid: msg.uuid.clone(),
        plugin: plugin.to_string(),
        status,
        output: msg.opt_str("output")?.map(str::to_string),
        perfdata,
        duration_ms: msg.opt_num("duration_ms")?.map(|d| d.round() as i64),
        run_id: msg.opt_str("run_id")?.map(str::to_string),
        at: msg.meta.received_at,
    })
}

/// The notification a status change raises: `(severity, recovery)`, or
/// `None` when nothing changed (or a new plugin starts out OK).
pub fn transition(before: Option<i64>, now: i64) -> Option<(Severity, bool)> {
    if before == Some(now) || (before.is_none() && now == PluginState::Ok.code()) {
        return None;
    }
    Some(match PluginState::from_code(now) {
        Some(PluginState::Ok) => (Severity::Info, true),
        Some(PluginState::Critical) => (Severity::Critical, false),
        _ => (Severity::Warning, false),
    })
}

fn status_name(status: i64) -> &'static str {
    PluginState::from_code(status)
        .unwrap_or(PluginState::Unknown)
        .name()
}

fn change<'a>(
    r: &'a PluginResult,
    host: Option<&'a str>,
    severity: Severity,
    recovery: bool,
) -> Raised<'a> {
    let mut message = format!(
        "{} on {} is {}",
        r.plugin,
        host.unwrap_or(&r.uuid),
        status_name(r.status)
    );
    if let Some(output) = r.output.as_deref().filter(|o| !o.is_empty()) {
        let first_line = output.lines().next().unwrap_or_default();
        message.push_str(": ");
        message.extend(first_line.chars().take(300));
    }
    Raised {
        origin: "result",
        uuid: &r.uuid,
        hostname: host,
        severity,
        source: &r.plugin,
        message,
        recovery,
        at: r.at,
    }
}

/// The numeric perfdata values, and how many entries were refused.
pub fn perf_values(perfdata: Option<&Value>) -> (Vec<(String, f64)>, usize) {
    let mut values = Vec::new();
    let mut refused = 0;
    let mut take = |label: Option<&str>, value: Option<f64>| match (label, value) {
        (Some(l), Some(v)) if !l.is_empty() && v.is_finite() => values.push((l.to_string(), v)),
        _ => refused += 1,
    };
    match perfdata {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (label, v) in map {
                take(Some(label), number_or_value(v));
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                let label = item.get("label").and_then(Value::as_str);
                take(label, item.get("value").and_then(number));
            }
        }
        Some(Value::String(text)) => {
            for (label, value) in nagios_perfdata(text) {
                take(Some(&label), value);
            }
        }
        Some(_) => refused += 1,
    }
    (values, refused)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn number_or_value(v: &Value) -> Option<f64> {
    number(v).or_else(|| v.get("value").and_then(number))
}

/// Nagios plugin perfdata: `label=value[UOM];warn;crit;min;max`, space
/// separated; a label with spaces is single-quoted ('' is a quote). A
/// value of `U` (undetermined) or one that does not parse gives `None`.
pub fn nagios_perfdata(text: &str) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (label, after) = match rest.strip_prefix('\'') {
            Some(quoted) => match quoted_label(quoted) {
                Some(parsed) => parsed,
                None => break,
            },
            None => {
                let end = rest.find(['=', ' ']).unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            }
        };
        let Some(after) = after.strip_prefix('=') else {
            out.push((label, None));
            rest = after.trim_start();
            continue;
        };
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let value = after[..end].split(';').next().unwrap_or_default();
        out.push((label, leading_number(value)));
        rest = after[end..].trim_start();
    }
    out
}

/// `label'` (quotes doubled inside) and what follows the closing quote.
fn quoted_label(text: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            label.push(c);
        } else if matches!(chars.peek(), Some((_, '\''))) {
            label.push('\'');
            chars.next();
        } else {
            return Some((label, &text[i + 1..]));
        }
    }
    None
}

/// The number at the start of `value`, before its unit (`85%`, `0.2s`).
fn leading_number(value: &str) -> Option<f64> {
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::{incoming, U};
    use crate::store::test_store;
    use serde_json::json;

    #[test]
    fn transitions() {
        assert_eq!(transition(None, 0), None);
        assert_eq!(transition(None, 2), Some((Severity::Critical, false)));
        assert_eq!(transition(Some(0), 1), Some((Severity::Warning, false)));
        assert_eq!(transition(Some(1), 3), Some((Severity::Warning, false)));
        assert_eq!(transition(Some(2), 2), None);
        assert_eq!(transition(Some(2), 0), Some((Severity::Info, true)));
    }

    #[test]
    fn nagios_text() {
        let parsed =
            nagios_perfdata("load1=0.5;1;2;0; 'disk /var'=85%;90;95 'it''s'=3 time=0.2s x=U bare");
        assert_eq!(
            parsed,
            vec![
                ("load1".into(), Some(0.5)),
                ("disk /var".into(), Some(85.0)),
                ("it's".into(), Some(3.0)),
                ("time".into(), Some(0.2)),
                ("x".into(), None),
                ("bare".into(), None),
            ]
        );
        assert!(nagios_perfdata("'unterminated=1").is_empty());
        assert!(nagios_perfdata("").is_empty());
    }

    #[test]
    fn perfdata_shapes() {
        let (v, refused) = perf_values(Some(
            &json!({"a": 1, "b": {"value": 2.5, "uom": "s"}, "c": "x"}),
        ));
        assert_eq!((v.len(), refused), (2, 1));
        let (v, refused) = perf_values(Some(&json!([{"label": "a", "value": 1}, {"label": "b"}])));
        assert_eq!((v, refused), (vec![("a".to_string(), 1.0)], 1));
        // As the agent sends it: every field, `value` null for `U`.
        let agent = json!([
            {"label": "load1", "value": 0.5, "unit": null, "warn": "1", "crit": "2", "min": 0.0, "max": null},
            {"label": "x", "value": null, "unit": null, "warn": null, "crit": null, "min": null, "max": null},
        ]);
        assert_eq!(
            perf_values(Some(&agent)),
            (vec![("load1".to_string(), 0.5)], 1)
        );
        let (v, _) = perf_values(Some(&json!("rta=0.1ms;100;500;0 pl=0%")));
        assert_eq!(v, vec![("rta".into(), 0.1), ("pl".into(), 0.0)]);
        assert_eq!(perf_values(Some(&json!(7))).1, 1);
    }

    /// Handles `msg` as the worker would: its client's row, then the
    /// message and the batch's flush, each in a transaction of its own.
    fn deliver(
        store: &mut crate::store::Store,
        sink: &mut ResultSink,
        msg: &Incoming,
        out: &mut Effects,
    ) {
        crate::store::scratch::with_tx(store, |tx| crate::sink::worker::upsert_client(tx, msg))
            .unwrap();
        crate::store::scratch::with_tx(store, |tx| {
            sink.handle(tx, msg, out)?;
            sink.flush(tx, out)
        })
        .unwrap();
    }

    #[test]
    fn a_change_raises_once_and_perfdata_becomes_lines() {
        let mut store = test_store();
        let mut sink = ResultSink::new("vigil".into(), MetricKeeper::new(None));
        let result = |status: i64| {
            incoming(
                SinkType::Result,
                &format!(
                    r#"{{"uuid":"{U}","type":"result","hostname":"db1","plugin":"load","status":{status},
                        "output":"LOAD {status}\nmore","perfdata":{{"load1":0.5}},"ts":1700000000}}"#
                ),
            )
        };
        let mut out = Effects::default();
        for status in [0, 0, 2, 2, 0] {
            let msg = result(status);
            deliver(&mut store, &mut sink, &msg, &mut out);
        }
        assert_eq!(out.raised, 2);
        assert_eq!(out.lines.len(), 5);
        assert!(out.lines[0].starts_with("vigil.db1.load.load1 0.5 1700000000"));
        let messages: Vec<String> = crate::store::scratch::rows(
            &mut store,
            "SELECT message FROM notifications ORDER BY seq",
        )
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect();
        assert_eq!(
            messages,
            [
                "load on db1 is CRITICAL: LOAD 2",
                "load on db1 is OK: LOAD 0"
            ]
        );
    }

    #[test]
    fn a_late_copy_of_an_older_result_does_not_turn_the_state_back() {
        let mut store = test_store();
        let mut sink = ResultSink::new("vigil".into(), MetricKeeper::new(None));
        let at = |status: i64, received_at: f64| {
            let json =
                format!(r#"{{"uuid":"{U}","type":"result","plugin":"load","status":{status}}}"#);
            let meta = format!(r#"{{"router":"r1","received_at":{received_at}}}"#);
            let frames = vec![json.into_bytes(), meta.into_bytes()];
            crate::sink::message::parse(&frames, SinkType::Result).unwrap()
        };
        let mut out = Effects::default();
        for msg in [at(0, 100.0), at(2, 200.0), at(0, 150.0)] {
            deliver(&mut store, &mut sink, &msg, &mut out);
        }
        assert_eq!(out.raised, 1, "only OK → CRITICAL");
        assert_eq!(
            crate::store::scratch::with_tx(&mut store, |tx| results::last(tx, U, "load")).unwrap(),
            Some((2, 200.0))
        );
    }

    #[test]
    fn status_must_be_a_nagios_code() {
        for status in ["4", "-1", "\"2\"", "1.5"] {
            let msg = incoming(
                SinkType::Result,
                &format!(r#"{{"uuid":"{U}","type":"result","plugin":"p","status":{status}}}"#),
            );
            assert!(parse(&msg).is_err(), "{status}");
        }
    }
}
