//! statsd line protocol on a local UDP port, so applications that already
//! emit statsd work unchanged.
//!
//! `name:value|c[|@rate]` counters (summed, scaled by 1/rate),
//! `name:value|g` gauges (`+N`/`-N` are deltas), `name:value|ms` (or `|h`)
//! timers. They are aggregated per `VIGIL_STATSD_FLUSH_SECS` and leave as
//! `stats` messages: counters and gauges under their own name, timers as
//! `name.count`, `.min`, `.max`, `.mean`, `.p90`. Tags (`|#...`) are
//! ignored. Bad lines are counted, never fatal.

use super::channels::{LinkTx, ToLink};
use super::message;
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use crate::doorbell::Doorbell;
use crate::protocol::Stats;
use crate::signals::ShutdownWatch;
use std::collections::{BTreeMap, HashMap};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinct names kept per interval, at most; more are counted as bad.
const MAX_NAMES: usize = 10_000;
/// Metrics per stats message, so each stays well under the size limit.
const PER_MESSAGE: usize = 400;
/// Samples a timer keeps per interval for its p90 (a uniform reservoir);
/// count, min, max and mean stay exact however many arrive.
const TIMER_SAMPLES: usize = 1_000;
/// A gauge not set for this many intervals is forgotten (its name no
/// longer counts against `MAX_NAMES`; a later delta starts from 0).
const GAUGE_KEEP_INTERVALS: u64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Counter(f64),
    Gauge { value: f64, delta: bool },
    Timer(f64),
}

/// Why a statsd line was not taken; it is only counted (`statsd_bad`),
/// so a flood of bad lines allocates nothing for its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    NoColon,
    /// Empty, over 200 bytes, or with whitespace.
    BadName,
    NoType,
    /// Not a number in (0, 1].
    BadRate,
    /// Not a finite number.
    BadValue,
    /// Not `c`, `g`, `ms` or `h`.
    UnsupportedType,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadLine::NoColon => "no ':'",
            BadLine::BadName => "bad metric name",
            BadLine::NoType => "no type",
            BadLine::BadRate => "sample rate not in (0, 1]",
            BadLine::BadValue => "value is not a finite number",
            BadLine::UnsupportedType => "unsupported type",
        })
    }
}

/// Parses one statsd line into (name, sample).
pub fn parse_line(line: &str) -> Result<(String, Sample), BadLine> {
    let (name, rest) = line.split_once(':').ok_or(BadLine::NoColon)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 200 || name.contains(char::is_whitespace) {
        return Err(BadLine::BadName);
    }
    let mut parts = rest.split('|');
    let raw = parts.next().unwrap_or("").trim();
    let kind = parts.next().ok_or(BadLine::NoType)?.trim();
    let mut rate = 1.0;
    for extra in parts {
        if let Some(r) = extra.strip_prefix('@') {
            rate = r.parse::<f64>().map_err(|_| BadLine::BadRate)?;
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(BadLine::BadRate);
            }
        }
    }
    let value: f64 = raw.parse().map_err(|_| BadLine::BadValue)?;
    if !value.is_finite() {
        return Err(BadLine::BadValue);
    }
    let sample = match kind {
        "c" => Sample::Counter(value / rate),
        "g" => Sample::Gauge {
            value,
            delta: raw.starts_with('+') || raw.starts_with('-'),
        },
        "ms" | "h" => Sample::Timer(value),
        _ => return Err(BadLine::UnsupportedType),
    };
    Ok((name.to_string(), sample))
}

/// One timer's interval: exact count/sum/min/max, and a bounded uniform
/// sample for the percentile, so a flood of one name costs fixed memory.
#[derive(Debug)]
struct Timer {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    reservoir: Vec<f64>,
    /// xorshift state for the reservoir's choices.
    rng: u64,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            reservoir: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.reservoir.len() < TIMER_SAMPLES {
            self.reservoir.push(v);
            return;
        }
        // Algorithm R: keep the new sample with probability k / count.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let slot = self.rng % self.count;
        if let Some(kept) = self.reservoir.get_mut(slot as usize) {
            *kept = v;
        }
    }

    fn p90(mut self) -> f64 {
        self.reservoir.sort_by(f64::total_cmp);
        let n = self.reservoir.len();
        self.reservoir[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1]
    }
}

#[derive(Debug, Default)]
pub struct Aggregator {
    counters: BTreeMap<String, f64>,
    /// Value and the interval it was last set in.
    gauges: HashMap<String, (f64, u64)>,
    gauges_touched: BTreeMap<String, ()>,
    timers: BTreeMap<String, Timer>,
    /// Intervals flushed so far.
    interval: u64,
}

impl Aggregator {
    fn names(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.timers.len()
    }

    /// Adds a sample; `false` when the interval already has too many names.
    pub fn add(&mut self, name: String, sample: Sample) -> bool {
        let known = self.counters.contains_key(&name)
            || self.gauges.contains_key(&name)
            || self.timers.contains_key(&name);
        if !known && self.names() >= MAX_NAMES {
            return false;
        }
        match sample {
            Sample::Counter(v) => *self.counters.entry(name).or_default() += v,
            Sample::Gauge { value, delta } => {
                let g = self.gauges.entry(name.clone()).or_default();
                g.0 = if delta { g.0 + value } else { value };
                g.1 = self.interval;
                self.gauges_touched.insert(name, ());
            }
            Sample::Timer(v) => self.timers.entry(name).or_insert_with(Timer::new).add(v),
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
            out.insert(name.clone(), self.gauges[&name].0);
        }
        let now = self.interval;
        self.gauges
            .retain(|_, (_, set_in)| now - *set_in < GAUGE_KEEP_INTERVALS);
        self.interval += 1;
        for (name, timer) in std::mem::take(&mut self.timers) {
            out.insert(format!("{name}.count"), timer.count as f64);
            out.insert(format!("{name}.min"), timer.min);
            out.insert(format!("{name}.max"), timer.max);
            out.insert(format!("{name}.mean"), timer.sum / timer.count as f64);
            out.insert(format!("{name}.p90"), timer.p90());
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
            let body = Stats {
                hostname: self.hostname.clone(),
                source: Some("statsd".into()),
                interval_s: Some(self.flush_every.as_secs()),
                metrics: chunk
                    .iter()
                    .map(|(k, v)| (k.clone(), (*v).into()))
                    .collect(),
            };
            let frame = message::frame(&self.uuid, &body);
            let item = ToLink::Send(Outgoing::new(Kind::Stats, frame));
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

    #[test]
    fn a_flooded_timer_keeps_exact_summaries_in_fixed_memory() {
        let mut agg = Aggregator::default();
        for i in 0..100_000 {
            assert!(agg.add("t".into(), Sample::Timer(f64::from(i % 100))));
        }
        assert_eq!(agg.timers["t"].reservoir.len(), TIMER_SAMPLES);
        let out = agg.flush();
        assert_eq!(out["t.count"], 100_000.0);
        assert_eq!(out["t.min"], 0.0);
        assert_eq!(out["t.max"], 99.0);
        assert_eq!(out["t.mean"], 49.5);
        assert!((80.0..=99.0).contains(&out["t.p90"]), "{}", out["t.p90"]);
    }

    #[test]
    fn gauges_not_set_for_long_are_forgotten() {
        let mut agg = Aggregator::default();
        agg.add(
            "pid.1".into(),
            Sample::Gauge {
                value: 1.0,
                delta: false,
            },
        );
        // Reported by the flush of the interval it was set in, then kept
        // through GAUGE_KEEP_INTERVALS intervals without a new value.
        for _ in 0..=GAUGE_KEEP_INTERVALS {
            assert_eq!(agg.gauges.len(), 1);
            agg.flush();
        }
        assert!(agg.gauges.is_empty(), "an abandoned gauge name is dropped");
    }
}
