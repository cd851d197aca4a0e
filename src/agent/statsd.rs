//! statsd line protocol on a local UDP port, so applications that already
//! emit statsd work unchanged.
//!
//! `name:value|c[|@rate]` counters (summed, scaled by 1/rate),
//! `name:value|g` gauges (`+N`/`-N` are deltas), `name:value|ms` (or `|h`)
//! timers. They are aggregated per `VIGIL_STATSD_FLUSH_SECS` and leave as
//! `stats` messages: counters and gauges under their own name, timers as
//! `name.count`, `.min`, `.max`, `.mean`, `.p90`. Tags (`|#...`) are
//! ignored. Bad lines are counted, never fatal.

use super::link::{LinkTx, ToLink};
use super::message;
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use crate::doorbell::Doorbell;
use crate::signals::ShutdownWatch;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinct names kept per interval, at most; more are counted as bad.
const MAX_NAMES: usize = 10_000;
/// Metrics per stats message, so each stays well under the size limit.
const PER_MESSAGE: usize = 400;

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Counter(f64),
    Gauge { value: f64, delta: bool },
    Timer(f64),
}

/// Parses one statsd line into (name, sample).
pub fn parse_line(line: &str) -> Result<(String, Sample), String> {
    let (name, rest) = line.split_once(':').ok_or("no ':'")?;
    let name = name.trim();
    if name.is_empty() || name.len() > 200 || name.contains(char::is_whitespace) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut parts = rest.split('|');
    let raw = parts.next().unwrap_or("").trim();
    let kind = parts.next().ok_or("no type")?.trim();
    let mut rate = 1.0;
    for extra in parts {
        if let Some(r) = extra.strip_prefix('@') {
            rate = r
                .parse::<f64>()
                .map_err(|_| format!("bad sample rate {r:?}"))?;
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(format!("sample rate {r} is not in (0, 1]"));
            }
        }
    }
    let value: f64 = raw.parse().map_err(|_| format!("bad value {raw:?}"))?;
    if !value.is_finite() {
        return Err("value is not finite".into());
    }
    let sample = match kind {
        "c" => Sample::Counter(value / rate),
        "g" => Sample::Gauge {
            value,
            delta: raw.starts_with('+') || raw.starts_with('-'),
        },
        "ms" | "h" => Sample::Timer(value),
        other => return Err(format!("unsupported type {other:?}")),
    };
    Ok((name.to_string(), sample))
}

#[derive(Debug, Default)]
pub struct Aggregator {
    counters: BTreeMap<String, f64>,
    gauges: HashMap<String, f64>,
    gauges_touched: BTreeMap<String, ()>,
    timers: BTreeMap<String, Vec<f64>>,
}

impl Aggregator {
    fn names(&self) -> usize {
        self.counters.len() + self.gauges_touched.len() + self.timers.len()
    }

    /// Adds a sample; `false` when the interval already has too many names.
    pub fn add(&mut self, name: String, sample: Sample) -> bool {
        let known = self.counters.contains_key(&name)
            || self.gauges_touched.contains_key(&name)
            || self.timers.contains_key(&name);
        if !known && self.names() >= MAX_NAMES {
            return false;
        }
        match sample {
            Sample::Counter(v) => *self.counters.entry(name).or_default() += v,
            Sample::Gauge { value, delta } => {
                let g = self.gauges.entry(name.clone()).or_default();
                *g = if delta { *g + value } else { value };
                self.gauges_touched.insert(name, ());
            }
            Sample::Timer(v) => self.timers.entry(name).or_default().push(v),
        }
        true
    }

    /// The interval's metrics; counters and timers restart, gauges keep
    /// their value (for later deltas) but are reported only when touched.
    pub fn flush(&mut self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, v) in std::mem::take(&mut self.counters) {
            out.insert(name, v);
        }
        for (name, ()) in std::mem::take(&mut self.gauges_touched) {
            out.insert(name.clone(), self.gauges[&name]);
        }
        for (name, mut values) in std::mem::take(&mut self.timers) {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let sum: f64 = values.iter().sum();
            let p90 = values[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1];
            out.insert(format!("{name}.count"), n as f64);
            out.insert(format!("{name}.min"), values[0]);
            out.insert(format!("{name}.max"), values[n - 1]);
            out.insert(format!("{name}.mean"), sum / n as f64);
            out.insert(format!("{name}.p90"), p90);
        }
        out
    }
}

pub struct StatsdThread {
    pub socket: UdpSocket,
    pub bell: Doorbell,
    pub link: LinkTx,
    pub uuid: String,
    pub hostname: String,
    pub flush_every: Duration,
    pub metrics: Arc<AgentMetrics>,
    pub shutdown: ShutdownWatch,
}

impl StatsdThread {
    pub fn run(mut self) -> Result<(), String> {
        self.socket
            .set_nonblocking(true)
            .map_err(|e| format!("statsd socket: {e}"))?;
        let mut agg = Aggregator::default();
        let mut next_flush = Instant::now() + self.flush_every;
        let mut buf = vec![0u8; 65_536];
        loop {
            let timeout = next_flush
                .saturating_duration_since(Instant::now())
                .as_millis() as i64;
            let mut items = [
                zmq::PollItem::from_fd(self.socket.as_raw_fd(), zmq::POLLIN),
                self.bell.poll_item(),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            if items[1].is_readable() {
                self.bell.clear();
            }
            if items[0].is_readable() {
                self.read_datagrams(&mut buf, &mut agg);
            }
            if self.shutdown.is_set() {
                self.emit(agg.flush());
                return Ok(());
            }
            if Instant::now() >= next_flush {
                self.emit(agg.flush());
                next_flush = Instant::now() + self.flush_every;
            }
        }
    }

    fn read_datagrams(&self, buf: &mut [u8], agg: &mut Aggregator) {
        for _ in 0..1024 {
            let n = match self.socket.recv(buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                AgentMetrics::add(&self.metrics.statsd_lines, 1);
                let added = parse_line(line).map(|(name, sample)| agg.add(name, sample));
                if !matches!(added, Ok(true)) {
                    AgentMetrics::add(&self.metrics.statsd_bad, 1);
                }
            }
        }
    }

    fn emit(&self, metrics: BTreeMap<String, f64>) {
        let all: Vec<(String, f64)> = metrics.into_iter().collect();
        for chunk in all.chunks(PER_MESSAGE) {
            let mut body = Map::new();
            body.insert("hostname".into(), json!(self.hostname));
            body.insert("source".into(), json!("statsd"));
            body.insert("interval_s".into(), json!(self.flush_every.as_secs()));
            let m: Map<String, Value> = chunk.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            body.insert("metrics".into(), Value::Object(m));
            let frame = message::with_envelope(&self.uuid, "stats", body);
            let item = ToLink::Send(Outgoing {
                kind: Kind::Stats,
                frame,
            });
            if self.link.try_send(item).is_err() {
                AgentMetrics::add(&self.metrics.statsd_dropped, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_line("a.b:3|c").unwrap(),
            ("a.b".into(), Sample::Counter(3.0))
        );
        assert_eq!(parse_line("a:1|c|@0.1").unwrap().1, Sample::Counter(10.0));
        assert_eq!(
            parse_line("g:-4|g").unwrap().1,
            Sample::Gauge {
                value: -4.0,
                delta: true
            }
        );
        assert_eq!(
            parse_line("g:4|g|#tag:x").unwrap().1,
            Sample::Gauge {
                value: 4.0,
                delta: false
            }
        );
        assert_eq!(parse_line("t:12.5|ms").unwrap().1, Sample::Timer(12.5));
        for bad in [
            "", "a", "a:1", "a:x|c", "a:1|s", "a:1|c|@2", ":1|c", "a b:1|c", "a:nan|c",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aggregates_per_interval() {
        let mut agg = Aggregator::default();
        for line in [
            "c:1|c",
            "c:2|c|@0.5",
            "g:10|g",
            "g:+5|g",
            "g:-1|g",
            "t:3|ms",
            "t:1|ms",
            "t:2|ms",
        ] {
            let (n, s) = parse_line(line).unwrap();
            assert!(agg.add(n, s));
        }
        let m = agg.flush();
        assert_eq!(m["c"], 5.0);
        assert_eq!(m["g"], 14.0);
        assert_eq!(
            (
                m["t.count"],
                m["t.min"],
                m["t.max"],
                m["t.mean"],
                m["t.p90"]
            ),
            (3.0, 1.0, 3.0, 2.0, 3.0)
        );
        assert!(agg.flush().is_empty());
        let (n, s) = parse_line("g:+1|g").unwrap();
        agg.add(n, s);
        assert_eq!(agg.flush()["g"], 15.0);
    }
}
