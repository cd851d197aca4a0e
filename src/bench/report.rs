//! What `vigil-bench router` prints: a table for people, notes on anything
//! that looks wrong (lost or rejected messages, warnings in the router's
//! log, a slow shutdown), and one JSON object on the last line of stdout for
//! tools that track the figures over time.

use super::backend::Status;
use super::child::Stopped;
use super::latency::{self, LatencyResult};
use super::load::{LoadResult, Replies};
use super::options::RouterOptions;
use super::scale::ScaleResult;
use serde_json::{json, Value};
use std::fmt::Write;

/// The client count whose row is the headline, as agreed for comparisons.
const HEADLINE_CLIENTS: usize = 100;
/// Cores other processes may keep busy, on average, before a run's
/// figures are flagged.
const BUSY_ELSEWHERE: f64 = 0.1;

/// One client count, both targets.
#[derive(Debug)]
pub struct Row {
    pub clients: usize,
    /// A flood run: clients that never back off nor read replies.
    pub flood: bool,
    /// Both targets with CURVE on (the router authenticating every client
    /// through its ZAP handler, the proxy letting every key in).
    pub curve: bool,
    pub proxy: LoadResult,
    pub vigil: LoadResult,
}

impl Row {
    /// The first column: the client count, and the mode of a flood run.
    fn label(&self) -> String {
        match (self.flood, self.curve) {
            (true, _) => format!("{} flood", self.clients),
            (false, true) => format!("{} curve", self.clients),
            (false, false) => self.clients.to_string(),
        }
    }

    pub fn ratio(&self) -> f64 {
        ratio(self.vigil.msgs_per_s(), self.proxy.msgs_per_s())
    }

    /// vigil's CPU time per message over the proxy's: above 1, vigil costs
    /// more per message.
    pub fn cpu_ratio(&self) -> Option<f64> {
        let (vigil, proxy) = (self.vigil.cpu_us_per_msg()?, self.proxy.cpu_us_per_msg()?);
        (proxy > 0.0).then(|| vigil / proxy)
    }
}

#[derive(Debug)]
pub struct Report {
    pub opts: RouterOptions,
    pub io_threads: i32,
    /// VIGIL_* settings from the environment that reached the router.
    pub vigil_env: Vec<String>,
    pub rows: Vec<Row>,
    pub rss_peak_mib: Option<f64>,
    pub latency: Option<LatencyResult>,
    /// The same with the stream paced at `--latency-rate`.
    pub latency_paced: Option<LatencyResult>,
    pub router_stop: Option<Stopped>,
    pub scale: Option<ScaleResult>,
    pub scale_router_stop: Option<Stopped>,
    /// The 1-minute load average when the run began, and the core count.
    pub loadavg: Option<f64>,
    pub cores: usize,
    /// Problems met along the way that did not stop the run.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(opts: RouterOptions, io_threads: i32, vigil_env: Vec<String>) -> Report {
        Report {
            opts,
            io_threads,
            vigil_env,
            rows: Vec::new(),
            rss_peak_mib: None,
            latency: None,
            latency_paced: None,
            router_stop: None,
            scale: None,
            scale_router_stop: None,
            loadavg: None,
            cores: 0,
            notes: Vec::new(),
        }
    }

    fn headline(&self) -> Option<&Row> {
        self.headline_of(false)
    }

    /// The flood run nearest the headline client count.
    fn flood_headline(&self) -> Option<&Row> {
        self.headline_of(true)
    }

    fn headline_of(&self, flood: bool) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|row| row.flood == flood && !row.curve)
            .min_by_key(|row| row.clients.abs_diff(HEADLINE_CLIENTS))
    }

    /// The CURVE run nearest the headline client count, and the plaintext
    /// run of the same count (what CURVE costs the router).
    fn curve_headline(&self) -> Option<(&Row, Option<&Row>)> {
        let curve = self
            .rows
            .iter()
            .filter(|row| row.curve)
            .min_by_key(|row| row.clients.abs_diff(HEADLINE_CLIENTS))?;
        let plain = self
            .rows
            .iter()
            .find(|row| !row.curve && !row.flood && row.clients == curve.clients);
        Some((curve, plain))
    }
}

pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    throughput_table(&mut out, report);
    accounting(&mut out, report);
    latency_line(&mut out, report);
    memory_lines(&mut out, report);
    let notes = notes(report);
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        for note in notes {
            let _ = writeln!(out, "  - {note}");
        }
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let o = &report.opts;
    let _ = writeln!(
        out,
        "vigil-bench router: {}-byte stats messages over 127.0.0.1 tcp, {} s per run, {} sinks, {} I/O thread(s)",
        o.size,
        o.seconds.as_secs_f64(),
        o.sinks,
        report.io_threads
    );
    if let Some(load) = report.loadavg {
        let _ = writeln!(
            out,
            "load average at start: {load:.2} on {} cores (other work skews the figures)",
            report.cores
        );
    }
    if let Some(core) = report.opts.pin_target {
        let _ = writeln!(
            out,
            "router and proxy pinned to core {core}, the load generator to the others"
        );
    }
    if !report.vigil_env.is_empty() {
        let _ = writeln!(out, "from the environment: {}", report.vigil_env.join(" "));
    }
}

fn throughput_table(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\n{:>8} {:>14} {:>14} {:>12} {:>14} {:>14} {:>10}",
        "clients",
        "proxy msg/s",
        "vigil msg/s",
        "vigil/proxy",
        "proxy cpu µs",
        "vigil cpu µs",
        "cpu v/p"
    );
    for row in &report.rows {
        let _ = writeln!(
            out,
            "{:>8} {:>14} {:>14} {:>12.2} {:>14} {:>14} {:>10}",
            row.label(),
            grouped(row.proxy.msgs_per_s() as u64),
            grouped(row.vigil.msgs_per_s() as u64),
            row.ratio(),
            fixed(row.proxy.cpu_us_per_msg(), 3),
            fixed(row.vigil.cpu_us_per_msg(), 3),
            fixed(row.cpu_ratio(), 2)
        );
    }
    out.push_str(
        "flood: clients that never back off nor read replies (libzmq's queues are the only limit);\n\
         cpu µs: CPU time (user + system, all threads) the target process used in the window, \
         per message that reached a sink;\n        unlike msg/s it leaves out time the target \
         spent waiting for a core, e.g. while the load generator or other processes ran\n",
    );
}

/// A figure with `decimals` places, or "?" when it could not be measured.
fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or("?".into(), |v| format!("{v:.decimals$}"))
}

/// Where every message of each router run went.
fn accounting(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\nvigil runs, message by message (sent → router received → forwarded → reached sinks; rejected):"
    );
    for row in &report.rows {
        let (received, forwarded, rejected) = match &row.vigil.router {
            Some(s) => (
                grouped(s.counters.received),
                grouped(s.counters.forwarded),
                codes(s),
            ),
            None => ("?".into(), "?".into(), "status unavailable".into()),
        };
        let _ = writeln!(
            out,
            "{:>8} {:>12} → {:>12} → {:>12} → {:>12}; {rejected}; clients read {}",
            row.label(),
            grouped(row.vigil.sent),
            received,
            forwarded,
            grouped(row.vigil.total),
            replies(&row.vigil.replies)
        );
    }
}

/// The replies the clients read, by code.
fn replies(replies: &Replies) -> String {
    let mut parts: Vec<String> = replies
        .by_code
        .iter()
        .map(|(code, n)| format!("{code} {}", grouped(*n)))
        .collect();
    if replies.other > 0 {
        parts.push(format!("other {}", grouped(replies.other)));
    }
    if parts.is_empty() {
        "no replies".into()
    } else {
        parts.join(", ")
    }
}

fn latency_line(out: &mut String, report: &Report) {
    let Some(lat) = &report.latency else {
        return;
    };
    out.push_str("\ndelivery latency, back-end run_plugin request to client:\n");
    let _ = writeln!(
        out,
        "  {:<44} {}",
        "router idle:",
        percentile_text(&lat.idle_samples)
    );
    let streaming = format!(
        "while {} stream at {} msg/s:",
        clients(lat.load.clients),
        grouped(lat.load.msgs_per_s() as u64)
    );
    let _ = writeln!(out, "  {streaming:<44} {}", percentile_text(&lat.samples));
    if let Some(paced) = &report.latency_paced {
        let text = format!(
            "while they send {} msg/s (paced):",
            grouped(report.opts.latency_rate)
        );
        let _ = writeln!(out, "  {text:<44} {}", percentile_text(&paced.samples));
    }
}

fn percentile_text(samples: &[std::time::Duration]) -> String {
    match latency::percentiles_us(samples) {
        Some((p50, p99, max)) => format!(
            "p50 {} µs   p99 {} µs   max {} µs   ({} deliveries)",
            grouped(p50 as u64),
            grouped(p99 as u64),
            grouped(max as u64),
            samples.len()
        ),
        None => "no delivery arrived".to_string(),
    }
}

fn memory_lines(out: &mut String, report: &Report) {
    out.push('\n');
    if let Some(mib) = report.rss_peak_mib {
        let _ = writeln!(
            out,
            "router peak RSS during the throughput runs: {mib:.1} MiB"
        );
    }
    if let Some(scale) = &report.scale {
        let _ = writeln!(
            out,
            "connection scale: {} of {} clients welcomed in {:.1} s; router status says {} clients; \
             router RSS {} (fresh router: {} idle, peak {})",
            scale.welcomed,
            scale.wanted,
            scale.took.as_secs_f64(),
            scale.router_clients.map_or("?".into(), |n| n.to_string()),
            mib(scale.rss_mib),
            mib(scale.idle_rss_mib),
            mib(scale.peak_mib)
        );
    }
    if let Some(stop) = &report.router_stop {
        let _ = writeln!(out, "router shutdown on SIGTERM: {}", describe_stop(stop));
    }
}

fn describe_stop(stop: &Stopped) -> String {
    let status = stop
        .status
        .map_or("status unknown".into(), |s| s.to_string());
    let forced = if stop.forced {
        ", killed after the grace period"
    } else {
        ""
    };
    format!("{status} after {:.2} s{forced}", stop.took.as_secs_f64())
}

/// Anything in the figures that deserves a second look.
pub fn notes(report: &Report) -> Vec<String> {
    let mut notes = report.notes.clone();
    for row in &report.rows {
        row_notes(row, &mut notes);
    }
    for lat in report.latency.iter().chain(&report.latency_paced) {
        latency_notes(lat, &mut notes);
    }
    for (which, stop) in [
        ("router", &report.router_stop),
        ("scale-test router", &report.scale_router_stop),
    ] {
        if let Some(stop) = stop {
            stop_notes(which, stop, &mut notes);
        }
    }
    if let Some(scale) = &report.scale {
        scale_notes(scale, &mut notes);
    }
    notes
}

fn row_notes(row: &Row, notes: &mut Vec<String>) {
    let mut n = clients(row.clients);
    if row.flood {
        n.push_str(" flooding");
    }
    let proxy = &row.proxy;
    if proxy.total != proxy.sent {
        notes.push(format!(
            "proxy, {n}: sinks got {} of {} messages sent",
            grouped(proxy.total),
            grouped(proxy.sent)
        ));
    }
    let vigil = &row.vigil;
    if let Some(status) = &row.vigil.router {
        let c = &status.counters;
        if c.received != vigil.sent {
            notes.push(format!(
                "vigil, {n}: the router counted {} received of {} sent",
                grouped(c.received),
                grouped(vigil.sent)
            ));
        }
        if c.forwarded != vigil.total {
            notes.push(format!(
                "vigil, {n}: sinks got {} of {} messages the router counted as forwarded",
                grouped(vigil.total),
                grouped(c.forwarded)
            ));
        }
        if c.rejected > 0 {
            notes.push(format!(
                "vigil, {n}: the router rejected {} valid messages ({}) instead of applying back-pressure",
                grouped(c.rejected),
                codes(status)
            ));
        }
        let answered = vigil.replies.refused() + c.replies_dropped;
        // Flooding clients read no replies: the router's queues hold them.
        if answered != c.rejected && !row.flood {
            notes.push(format!(
                "vigil, {n}: clients read {} error replies and the router dropped {}, for {} rejected",
                grouped(vigil.replies.refused()),
                grouped(c.replies_dropped),
                grouped(c.rejected)
            ));
        }
    }
    if vigil.replies.other > 0 {
        notes.push(format!(
            "vigil, {n}: clients read {} replies that were not errors",
            grouped(vigil.replies.other)
        ));
    }
    for (who, result) in [("proxy", proxy), ("vigil", vigil)] {
        if !result.drained {
            notes.push(format!(
                "{who}, {n}: the drain after the window stalled or timed out before every message was accounted for"
            ));
        }
        if let Some(note) = imbalance(&result.per_sink) {
            notes.push(format!("{who}, {n}: {note}"));
        }
        if let Some(cores) = result.other_cores().filter(|c| *c >= BUSY_ELSEWHERE) {
            notes.push(format!(
                "{who}, {n}: other processes kept {cores:.2} cores busy during the window, \
                 which lowers its msg/s more than it changes its cpu µs"
            ));
        }
    }
}

/// PUSH round-robins, so sinks that are equally fast should get about the
/// same share.
fn imbalance(per_sink: &[u64]) -> Option<String> {
    let most = *per_sink.iter().max()?;
    let least = *per_sink.iter().min()?;
    if most < 1000 || (least as f64) >= most as f64 * 0.67 {
        return None;
    }
    let shares: Vec<String> = per_sink.iter().map(|n| grouped(*n)).collect();
    Some(format!("uneven sink shares {}", shares.join(" / ")))
}

fn latency_notes(lat: &LatencyResult, notes: &mut Vec<String>) {
    if !lat.refused.is_empty() {
        notes.push(format!(
            "latency: the router refused deliveries: {:?}",
            lat.refused
        ));
    }
    if lat.lost > 0 {
        notes.push(format!(
            "latency: {} deliveries answered ok:true never reached the client within 2 s",
            lat.lost
        ));
    }
    if lat.cut_short {
        notes.push(format!(
            "latency: stopped at the time limit after {} of {} requests",
            lat.samples.len() + lat.lost as usize,
            lat.requested
        ));
    }
}

fn stop_notes(which: &str, stop: &Stopped, notes: &mut Vec<String>) {
    let clean = stop.status.is_some_and(|s| s.success());
    if !clean || stop.forced {
        notes.push(format!("{which} on SIGTERM: {}", describe_stop(stop)));
    }
    let log = &stop.log;
    if log.warnings + log.errors > 0 {
        let mut note = format!(
            "{which} logged {} warnings and {} errors; the first ones:",
            log.warnings, log.errors
        );
        for line in &log.notable {
            note.push_str("\n      | ");
            note.push_str(line);
        }
        notes.push(note);
    }
}

fn scale_notes(scale: &ScaleResult, notes: &mut Vec<String>) {
    if scale.welcomed < scale.wanted {
        notes.push(format!(
            "scale: only {} of {} clients got a welcome",
            scale.welcomed, scale.wanted
        ));
    }
    if scale
        .router_clients
        .is_some_and(|n| n != scale.welcomed as u64)
    {
        notes.push(format!(
            "scale: the router's status counts {:?} clients, {} were welcomed",
            scale.router_clients, scale.welcomed
        ));
    }
    notes.extend(
        scale
            .child_warnings
            .iter()
            .map(|line| format!("scale client: {line}")),
    );
}

/// The last line of stdout.
pub fn render_json(report: &Report) -> Value {
    let mut all = main_json(report);
    if let (Value::Object(all), Value::Object(curve)) = (&mut all, curve_json(report)) {
        all.extend(curve);
    }
    all
}

/// The CURVE figures (a json! of their own: one macro call for the whole
/// object would pass serde_json's recursion limit).
fn curve_json(report: &Report) -> Value {
    let curve = report.curve_headline();
    let row = curve.map(|(row, _)| row);
    let over_plaintext = curve.and_then(|(row, plain)| {
        let plain = plain?.vigil.msgs_per_s();
        (plain > 0.0).then(|| round(row.vigil.msgs_per_s() / plain, 3))
    });
    json!({
        "curve_clients": row.map(|row| row.clients),
        "curve_vigil_msgs_per_s": row.map(|row| row.vigil.msgs_per_s().round()),
        "curve_proxy_msgs_per_s": row.map(|row| row.proxy.msgs_per_s().round()),
        "curve_ratio": row.map(|row| round(row.ratio(), 3)),
        "curve_vigil_cpu_us_per_msg": row.and_then(|row| row.vigil.cpu_us_per_msg()).map(|us| round(us, 4)),
        "curve_proxy_cpu_us_per_msg": row.and_then(|row| row.proxy.cpu_us_per_msg()).map(|us| round(us, 4)),
        "curve_cpu_ratio": row.and_then(Row::cpu_ratio).map(|r| round(r, 3)),
        "curve_over_plaintext": over_plaintext,
    })
}

fn main_json(report: &Report) -> Value {
    let headline = report.headline();
    let flood = report.flood_headline();
    let percentiles = report
        .latency
        .as_ref()
        .and_then(|lat| latency::percentiles_us(&lat.samples));
    let idle = report
        .latency
        .as_ref()
        .and_then(|lat| latency::percentiles_us(&lat.idle_samples));
    let paced = report
        .latency_paced
        .as_ref()
        .and_then(|lat| latency::percentiles_us(&lat.samples));
    let scale = report.scale.as_ref();
    json!({
        "headline_clients": headline.map(|row| row.clients),
        "vigil_msgs_per_s": headline.map(|row| row.vigil.msgs_per_s().round()),
        "proxy_msgs_per_s": headline.map(|row| row.proxy.msgs_per_s().round()),
        "ratio": headline.map(|row| round(row.ratio(), 3)),
        "vigil_cpu_us_per_msg": headline.and_then(|row| row.vigil.cpu_us_per_msg()).map(|us| round(us, 4)),
        "proxy_cpu_us_per_msg": headline.and_then(|row| row.proxy.cpu_us_per_msg()).map(|us| round(us, 4)),
        "cpu_ratio": headline.and_then(Row::cpu_ratio).map(|r| round(r, 3)),
        "flood_clients": flood.map(|row| row.clients),
        "flood_vigil_msgs_per_s": flood.map(|row| row.vigil.msgs_per_s().round()),
        "flood_proxy_msgs_per_s": flood.map(|row| row.proxy.msgs_per_s().round()),
        "flood_ratio": flood.map(|row| round(row.ratio(), 3)),
        "flood_cpu_ratio": flood.and_then(Row::cpu_ratio).map(|r| round(r, 3)),
        "flood_refused": flood.and_then(|row| row.vigil.router.as_ref()).map(|s| s.counters.rejected),
        "flood_lost": flood.and_then(|row| {
            let s = row.vigil.router.as_ref()?;
            Some(row.vigil.sent.saturating_sub(row.vigil.total + s.counters.rejected))
        }),
        "rows": report.rows.iter().map(row_json).collect::<Vec<_>>(),
        "rss_mib": report.rss_peak_mib.map(|m| round(m, 1)),
        "deliver_p50_us": percentiles.map(|p| round(p.0, 1)),
        "deliver_p99_us": percentiles.map(|p| round(p.1, 1)),
        "deliver_max_us": percentiles.map(|p| round(p.2, 1)),
        "deliver_idle_p50_us": idle.map(|p| round(p.0, 1)),
        "deliver_idle_p99_us": idle.map(|p| round(p.1, 1)),
        "deliver_paced_rate": report.latency_paced.as_ref().map(|_| report.opts.latency_rate),
        "deliver_paced_msgs_per_s": report.latency_paced.as_ref().map(|lat| lat.load.msgs_per_s().round()),
        "deliver_paced_p50_us": paced.map(|p| round(p.0, 1)),
        "deliver_paced_p99_us": paced.map(|p| round(p.1, 1)),
        "deliver_paced_max_us": paced.map(|p| round(p.2, 1)),
        "deliver_samples": report.latency.as_ref().map(|lat| lat.samples.len()),
        "deliver_lost": report.latency.as_ref().map(|lat| lat.lost),
        "scale_clients": scale.map(|s| s.welcomed),
        "scale_router_clients": scale.and_then(|s| s.router_clients),
        "scale_rss_mib": scale.and_then(|s| s.rss_mib).map(|m| round(m, 1)),
        "scale_idle_rss_mib": scale.and_then(|s| s.idle_rss_mib).map(|m| round(m, 1)),
        "size": report.opts.size,
        "seconds": report.opts.seconds.as_secs_f64(),
        "sinks": report.opts.sinks,
        "io_threads": report.io_threads,
        "loadavg_at_start": report.loadavg,
        "cores": report.cores,
        "pin_target": report.opts.pin_target,
        "vigil_env": report.vigil_env,
        "notes": notes(report),
    })
}

fn row_json(row: &Row) -> Value {
    let router = row.vigil.router.as_ref();
    json!({
        "clients": row.clients,
        "flood": row.flood,
        "curve": row.curve,
        "proxy_msgs_per_s": row.proxy.msgs_per_s().round(),
        "vigil_msgs_per_s": row.vigil.msgs_per_s().round(),
        "ratio": round(row.ratio(), 3),
        "proxy_sent": row.proxy.sent,
        "proxy_sink_total": row.proxy.total,
        "proxy_sender_waits": row.proxy.waits,
        "vigil_sent": row.vigil.sent,
        "vigil_sink_total": row.vigil.total,
        "vigil_sender_waits": row.vigil.waits,
        "vigil_sender_backoffs": row.vigil.backoffs,
        "router_received": router.map(|s| s.counters.received),
        "router_forwarded": router.map(|s| s.counters.forwarded),
        "router_rejected": router.map(|s| s.counters.rejected),
        "rejected_by_code": router.map(|s| &s.rejected_by_code),
        "proxy_cpu_us_per_msg": row.proxy.cpu_us_per_msg().map(|us| round(us, 4)),
        "vigil_cpu_us_per_msg": row.vigil.cpu_us_per_msg().map(|us| round(us, 4)),
        "cpu_ratio": row.cpu_ratio().map(|r| round(r, 3)),
        "proxy_loadgen_cpu_us_per_msg": row.proxy.loadgen_cpu_us_per_msg().map(|us| round(us, 4)),
        "vigil_loadgen_cpu_us_per_msg": row.vigil.loadgen_cpu_us_per_msg().map(|us| round(us, 4)),
        "proxy_other_cores": row.proxy.other_cores().map(|c| round(c, 2)),
        "vigil_other_cores": row.vigil.other_cores().map(|c| round(c, 2)),
        "vigil_replies_by_code": &row.vigil.replies.by_code,
        "router_replies_dropped": router.map(|s| s.counters.replies_dropped),
        "router_forwarded_in_window": row.vigil.router_window.as_ref().map(|s| s.counters.forwarded),
    })
}

fn codes(status: &Status) -> String {
    if status.rejected_by_code.is_empty() {
        return if status.counters.rejected == 0 {
            "none".into()
        } else {
            grouped(status.counters.rejected)
        };
    }
    let parts: Vec<String> = status
        .rejected_by_code
        .iter()
        .map(|(code, n)| format!("{code} {}", grouped(*n)))
        .collect();
    parts.join(", ")
}

fn ratio(vigil: f64, proxy: f64) -> f64 {
    if proxy > 0.0 {
        vigil / proxy
    } else {
        0.0
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn mib(value: Option<f64>) -> String {
    value.map_or("?".into(), |m| format!("{m:.1} MiB"))
}

/// "1 client", "100 clients".
pub fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".to_string()
    } else {
        format!("{n} clients")
    }
}

/// 1234567 → "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::CpuUse;
    use std::time::Duration;

    fn result(clients: usize, in_window: u64, sent: u64, total: u64) -> LoadResult {
        LoadResult {
            clients,
            sent,
            window: Duration::from_secs(1),
            in_window,
            total,
            per_sink: vec![total / 2, total - total / 2],
            drained: true,
            // 1 ms of CPU per 1000 messages: 1 µs per message.
            cpu: CpuUse {
                target: Some(Duration::from_micros(in_window)),
                ..CpuUse::default()
            },
            ..LoadResult::default()
        }
    }

    fn report_with_rows() -> Report {
        let mut report = Report::new(RouterOptions::default(), 1, vec![]);
        for (clients, proxy, vigil) in [(1, 1000, 500), (100, 2000, 1000), (1000, 3000, 900)] {
            report.rows.push(Row {
                clients,
                flood: false,
                curve: false,
                proxy: result(clients, proxy, proxy, proxy),
                vigil: result(clients, vigil, vigil, vigil),
            });
        }
        report
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn json_headline_is_the_100_client_row() {
        let json = render_json(&report_with_rows());
        assert_eq!(json["headline_clients"], 100);
        assert_eq!(json["vigil_msgs_per_s"], 1000.0);
        assert_eq!(json["proxy_msgs_per_s"], 2000.0);
        assert_eq!(json["ratio"], 0.5);
        assert_eq!(json["vigil_cpu_us_per_msg"], 1.0);
        assert_eq!(json["proxy_cpu_us_per_msg"], 1.0);
        assert_eq!(json["cpu_ratio"], 1.0);
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        assert_eq!(json["rows"][2]["vigil_cpu_us_per_msg"], 1.0);
        assert!(json["deliver_p50_us"].is_null());
        assert!(!json.to_string().contains('\n'));
    }

    #[test]
    fn lost_and_rejected_messages_are_noted() {
        let mut report = report_with_rows();
        let status: Status = serde_json::from_value(json!({
            "clients": 100,
            "counters": {"received": 1000, "forwarded": 900, "rejected": 100},
            "rejected_by_code": {"overloaded": 100}
        }))
        .unwrap();
        report.rows[1].vigil.router = Some(status);
        let notes = notes(&report).join("\n");
        assert!(notes.contains("overloaded 100"), "{notes}");
        assert!(notes.contains("sinks got 1,000 of 900"), "{notes}");
    }

    #[test]
    fn cpu_per_message_is_compared_and_reported() {
        let mut report = report_with_rows();
        // vigil: 2.5 ms for 1000 messages, 2.5 µs each; proxy: 1 µs each.
        report.rows[1].vigil.cpu.target = Some(Duration::from_micros(2500));
        assert_eq!(report.rows[1].cpu_ratio(), Some(2.5));
        report.rows[0].proxy.cpu.target = None;
        assert_eq!(report.rows[0].cpu_ratio(), None);
        let json = render_json(&report);
        assert_eq!(json["vigil_cpu_us_per_msg"], 2.5);
        assert_eq!(json["proxy_cpu_us_per_msg"], 1.0);
        assert_eq!(json["cpu_ratio"], 2.5);
        assert!(json["rows"][0]["proxy_cpu_us_per_msg"].is_null());
        let text = render_text(&report);
        assert!(text.contains("vigil cpu µs"), "{text}");
        assert!(text.contains("2.500"), "{text}");
    }

    #[test]
    fn other_processes_and_unread_replies_are_noted() {
        let mut report = report_with_rows();
        report.rows[2].proxy.cpu = CpuUse {
            target: Some(Duration::from_millis(900)),
            loadgen: Some(Duration::from_millis(800)),
            machine: Some(Duration::from_millis(2000)),
        };
        let status: Status = serde_json::from_value(json!({
            "counters": {"received": 900, "forwarded": 890, "rejected": 10, "replies_dropped": 2},
            "rejected_by_code": {"overloaded": 10}
        }))
        .unwrap();
        report.rows[2].vigil.router = Some(status);
        report.rows[2].vigil.sent = 900;
        report.rows[2].vigil.total = 890;
        let notes = notes(&report).join("\n");
        assert!(
            notes.contains("proxy, 1000 clients: other processes kept 0.30 cores"),
            "{notes}"
        );
        assert!(
            notes
                .contains("clients read 0 error replies and the router dropped 2, for 10 rejected"),
            "{notes}"
        );
        assert!(!notes.contains("proxy, 100 clients: other"), "{notes}");
    }

    #[test]
    fn uneven_sinks_are_noted_only_when_clearly_uneven() {
        assert!(imbalance(&[5000, 5100]).is_none());
        assert!(imbalance(&[10, 0]).is_none());
        assert!(imbalance(&[9000, 1000]).is_some());
    }
}
