//! `vigil-bench scan`: the router's validating scan (`protocol::validate`
//! over `json_scan`) against serde_json doing the same checks, in-process,
//! on the same frames: serde_json with the envelope borrowed as
//! `&RawValue` (every other field skipped, the closest serde gets to a
//! scan), and serde_json into a `Value` (what a router built on plain
//! serde would do). It reports ns per message, MB/s and heap allocations
//! per message, so the claim "zero allocation, and it pays" is a number.
//!
//! Every method must agree on every frame (accepted, or refused with the
//! same code), or the run stops: a faster check that checks less proves
//! nothing.

use crate::BenchError;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};
use vigil::protocol::{self, RejectCode};

/// Counts this thread's heap allocations (a thread-local add per call, so
/// the other benchmarks of this binary are not slowed measurably).
pub struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

const USAGE: &str = "usage: vigil-bench scan [--seconds S]

Times the router's validating scan against serde_json (the envelope as
borrowed RawValue, and a whole Value) on the same frames, in-process, S
seconds per method and frame [default: 0.5]; prints ns/msg, MB/s and heap
allocations per message, and, as the last line of stdout, one JSON array.";

const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";

/// The sink types of a default router.
fn types() -> Vec<String> {
    [
        "heartbeat",
        "stats",
        "registration",
        "notification",
        "result",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Frames shaped like real traffic, small to large.
fn frames() -> Vec<(&'static str, String)> {
    let metrics: Vec<String> = (0..10)
        .map(|i| format!(r#""app.requests.{i}.count":{}"#, i * 37))
        .collect();
    let perf: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"label":"load{i}","value":0.{i},"unit":null,"warn":"5","crit":"10","min":0.0,"max":null}}"#
            )
        })
        .collect();
    let big: Vec<String> = (0..400)
        .map(|i| format!(r#""host.disk.sda{i}.bytes_written":{}"#, i * 4096))
        .collect();
    vec![
        (
            "heartbeat",
            format!(
                r#"{{"uuid":"{U}","type":"heartbeat","ts":1764072605.5,"hostname":"web1.example.org","interval_s":30}}"#
            ),
        ),
        (
            "stats-10",
            format!(
                r#"{{"uuid":"{U}","type":"stats","ts":1764072605.5,"hostname":"web1","source":"statsd","interval_s":10,"metrics":{{{}}}}}"#,
                metrics.join(",")
            ),
        ),
        (
            "result",
            format!(
                r#"{{"uuid":"{U}","type":"result","ts":1764072605.5,"hostname":"web1","plugin":"check_load","status":1,"output":"WARNING - load average: 5.1, 4.0, 3.2","long_output":"line two\nline \"three\"","perfdata":[{}],"duration_ms":12,"run_id":"r-123"}}"#,
                perf.join(",")
            ),
        ),
        (
            "notification-ack",
            format!(
                r#"{{"uuid":"{U}","type":"notification","id":"n-42","ack":true,"ts":1764072605.5,"severity":"error","source":"backup","message":"disk full on /var \u00e9\u00e8"}}"#
            ),
        ),
        (
            "stats-400",
            format!(
                r#"{{"uuid":"{U}","type":"stats","ts":1764072605.5,"hostname":"db1","metrics":{{{}}}}}"#,
                big.join(",")
            ),
        ),
    ]
}

/// What a check decided: the target type's index, or the refusal code.
type Verdict = Result<Option<usize>, RejectCode>;

fn by_scan(frame: &[u8], types: &[String]) -> Verdict {
    match protocol::validate(frame, types) {
        Ok(a) => Ok(match a.target {
            protocol::Target::Hello => None,
            protocol::Target::Sink(i) => Some(i),
        }),
        Err(r) => Err(r.code),
    }
}

/// The envelope as serde_json sees it, borrowed: other fields are skipped
/// (checked for syntax, not kept). A repeated field is an error, as in the
/// scan.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    ack: Option<&'a RawValue>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
}

/// The router's checks, in the protocol's order, over serde's result.
fn envelope_checks(
    uuid: Option<&str>,
    kind: Option<&str>,
    id_is_string: bool,
    ack: Option<&str>,
    ts: Option<&str>,
    types: &[String],
) -> Verdict {
    if !matches!(ack, None | Some("true") | Some("false")) {
        return Err(RejectCode::BadJson);
    }
    if ts.is_some_and(|t| !t.starts_with(|c: char| c == '-' || c.is_ascii_digit())) {
        return Err(RejectCode::BadJson);
    }
    let uuid = uuid.ok_or(RejectCode::BadUuid)?;
    let text = json_str(uuid).ok_or(RejectCode::BadUuid)?;
    protocol::parse_uuid(&text).ok_or(RejectCode::BadUuid)?;
    let kind = kind.ok_or(RejectCode::UnknownType)?;
    let kind = json_str(kind).ok_or(RejectCode::UnknownType)?;
    let target = if kind == protocol::HELLO {
        None
    } else {
        Some(
            types
                .iter()
                .position(|t| *t == kind)
                .ok_or(RejectCode::UnknownType)?,
        )
    };
    if ack == Some("true") && !id_is_string {
        return Err(RejectCode::MissingId);
    }
    Ok(target)
}

/// The string a raw JSON value holds, borrowed unless it has escapes, as
/// the scan decodes it (serde's own `Cow<str>` always copies), so the
/// methods differ in their parsers, not in how they read two strings.
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// The raw JSON text of a borrowed field.
fn raw(v: Option<&RawValue>) -> Option<&str> {
    v.map(RawValue::get)
}

fn by_raw_value(frame: &[u8], types: &[String]) -> Verdict {
    let text = std::str::from_utf8(frame).map_err(|_| RejectCode::BadJson)?;
    let env: RawEnvelope = serde_json::from_str(text).map_err(|_| RejectCode::BadJson)?;
    envelope_checks(
        raw(env.uuid),
        raw(env.kind),
        env.id.is_some_and(|v| v.get().starts_with('"')),
        raw(env.ack),
        raw(env.ts),
        types,
    )
}

/// A top-level object as its (key, value) pairs in order, repeats kept:
/// what a router on `Value` needs to see a repeated envelope field (a
/// `Map` keeps only the last).
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(Entries)
    }
}

const ENVELOPE: [&str; 5] = ["uuid", "type", "id", "ack", "ts"];

fn by_value(frame: &[u8], types: &[String]) -> Verdict {
    let Pairs(pairs) = serde_json::from_slice(frame).map_err(|_| RejectCode::BadJson)?;
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let repeated = ENVELOPE
        .iter()
        .any(|k| pairs.iter().filter(|(key, _)| key == k).count() > 1);
    if repeated {
        return Err(RejectCode::BadJson);
    }
    let text = |k: &str| get(k).map(Value::to_string);
    envelope_checks(
        text("uuid").as_deref(),
        text("type").as_deref(),
        get("id").is_some_and(Value::is_string),
        text("ack").as_deref(),
        text("ts").as_deref(),
        types,
    )
}

struct Figure {
    ns_per_msg: f64,
    mb_per_s: f64,
    allocs_per_msg: f64,
}

fn measure(
    f: fn(&[u8], &[String]) -> Verdict,
    frame: &[u8],
    types: &[String],
    d: Duration,
) -> Figure {
    // Warm up, then count rounds of 256 until the time is spent.
    for _ in 0..1_000 {
        black_box(f(black_box(frame), types)).ok();
    }
    let before = allocs();
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < d {
        for _ in 0..256 {
            black_box(f(black_box(frame), types)).ok();
        }
        n += 256;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allocated = allocs() - before;
    Figure {
        ns_per_msg: elapsed * 1e9 / n as f64,
        mb_per_s: (n as f64 * frame.len() as f64) / elapsed / 1e6,
        allocs_per_msg: allocated as f64 / n as f64,
    }
}

type Method = (&'static str, fn(&[u8], &[String]) -> Verdict);

const METHODS: [Method; 3] = [
    ("scan", by_scan),
    ("serde RawValue", by_raw_value),
    ("serde Value", by_value),
];

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some(d) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let types = types();
    check_agreement(&types)?;
    println!(
        "{:<18} {:>7} {:<16} {:>10} {:>9} {:>11} {:>8}",
        "frame", "bytes", "method", "ns/msg", "MB/s", "allocs/msg", "x scan"
    );
    let mut json = Vec::new();
    for (name, frame) in frames() {
        let mut scan_ns = 0.0;
        for (method, f) in METHODS {
            let fig = measure(f, frame.as_bytes(), &types, d);
            if method == "scan" {
                scan_ns = fig.ns_per_msg;
            }
            println!(
                "{:<18} {:>7} {:<16} {:>10.0} {:>9.0} {:>11.1} {:>8.2}",
                name,
                frame.len(),
                method,
                fig.ns_per_msg,
                fig.mb_per_s,
                fig.allocs_per_msg,
                fig.ns_per_msg / scan_ns
            );
            json.push(serde_json::json!({
                "frame": name, "bytes": frame.len(), "method": method,
                "ns_per_msg": fig.ns_per_msg.round(), "mb_per_s": fig.mb_per_s.round(),
                "allocs_per_msg": fig.allocs_per_msg,
            }));
        }
    }
    // The last line of stdout is the machine-readable result, as for the
    // other benchmarks.
    println!("{}", serde_json::Value::Array(json));
    Ok(())
}

/// The time per method and frame; `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Duration>, BenchError> {
    let seconds = match args {
        [] => 0.5,
        [flag] if flag == "-h" || flag == "--help" => return Ok(None),
        [flag, value] if flag == "--seconds" => value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                BenchError::usage(format!("--seconds {value:?}: a positive number\n{USAGE}"))
            })?,
        _ => return Err(BenchError::usage(USAGE)),
    };
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// Frames every method must judge alike: the benchmark's own and one of
/// each refusal the envelope checks can give.
fn agreement_frames() -> Vec<String> {
    let mut checks: Vec<String> = frames().into_iter().map(|(_, f)| f).collect();
    checks.extend([
        r#"{"uuid":"nope","type":"stats"}"#.to_string(),
        format!(r#"{{"uuid":"{U}","type":"email"}}"#),
        format!(r#"{{"uuid":"{U}","type":"stats","ack":true}}"#),
        format!(r#"{{"uuid":"{U}","type":"stats","ack":"yes","id":"1"}}"#),
        format!(r#"{{"uuid":"{U}","type":"stats","ts":"now"}}"#),
        format!(r#"{{"uuid":"{U}","uuid":"{U}","type":"stats"}}"#),
        format!(r#"{{"uuid":"{U}","type":"hello"}}"#),
        r#"{"uuid":1} trailing"#.to_string(),
        "[1]".to_string(),
    ]);
    checks
}

/// Stops the run unless every method gives every frame the same verdict:
/// a faster check that checks less proves nothing.
fn check_agreement(types: &[String]) -> Result<(), BenchError> {
    for frame in agreement_frames() {
        let verdicts: Vec<Verdict> = METHODS
            .iter()
            .map(|(_, f)| f(frame.as_bytes(), types))
            .collect();
        if verdicts.iter().any(|v| *v != verdicts[0]) {
            return Err(BenchError::protocol(
                "checking that the methods agree",
                format!("{frame}: {verdicts:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_methods_agree_and_the_scan_does_not_allocate() {
        check_agreement(&types()).unwrap();
        let types = types();
        for (name, frame) in frames() {
            let fig = measure(by_scan, frame.as_bytes(), &types, Duration::from_millis(1));
            assert_eq!(fig.allocs_per_msg, 0.0, "{name}");
        }
    }

    /// Where the methods part: serde skips a field's number without
    /// reading its value, so only the scan refuses a number past an IEEE
    /// double in a field the router does not read (PROTOCOL.md: bad_json).
    #[test]
    fn only_the_scan_refuses_a_huge_number_outside_the_envelope() {
        let frame = format!(r#"{{"uuid":"{U}","type":"stats","metrics":{{"a":1e400}}}}"#);
        let types = types();
        assert_eq!(by_scan(frame.as_bytes(), &types), Err(RejectCode::BadJson));
        assert_eq!(by_raw_value(frame.as_bytes(), &types), Ok(Some(1)));
    }
}
