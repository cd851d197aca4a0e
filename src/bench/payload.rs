//! The bytes the benchmark puts on the wire: `stats` messages that are valid
//! under PROTOCOL.md and exactly `--size` bytes long, so the router does its
//! real work (parse, validate, route) and both targets move the same bytes;
//! and the back end's `run_plugin` request for the latency phase.

use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

/// The characters `,"pad":""` add around the padding.
const PAD_OVERHEAD: usize = 9;

/// A `stats` message from client `uuid` (the `index`th of its fleet),
/// padded to exactly `size` bytes with a `pad` field, which the router
/// carries through untouched like any unknown field.
pub fn stats_body(uuid: &str, index: usize, size: usize) -> Result<Vec<u8>, String> {
    let mut text = stats_object(uuid, index).to_string();
    let needed = text.len() + PAD_OVERHEAD;
    if size < needed {
        return Err(format!(
            "--size {size} is too small: a stats message needs at least {needed} bytes"
        ));
    }
    text.pop(); // the closing brace, put back after the pad
    text.push_str(",\"pad\":\"");
    text.extend(std::iter::repeat_n('x', size - needed));
    text.push_str("\"}");
    Ok(text.into_bytes())
}

/// What the scheduler sends to make a client run a plugin; `run_id` lets the
/// receiving side match a delivery to its request.
pub fn run_plugin(uuid: &str, run_id: u64) -> Vec<u8> {
    json!({"to": uuid, "type": "run_plugin", "plugin": "bench", "run_id": run_id.to_string()})
        .to_string()
        .into_bytes()
}

/// The `run_id` of a delivered `run_plugin` frame.
pub fn run_id(frame: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(frame).ok()?;
    value.get("run_id")?.as_str()?.parse().ok()
}

/// Metric values vary by client but keep a fixed width, so every client's
/// message needs the same room before padding.
fn stats_object(uuid: &str, index: usize) -> serde_json::Value {
    let spread = (index % 90) as f64;
    json!({
        "uuid": uuid,
        "type": "stats",
        "hostname": format!("bench-{:05}", index % 100_000),
        "ts": unix_millis() as f64 / 1000.0,
        "metrics": {
            "cpu.user": 10.5 + spread,
            "cpu.system": 3.25,
            "mem.used_pct": 41.5,
            "load.1m": 0.75,
        },
    })
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b9d6a8e-3f3a-4c0e-9a57-1c1b2f7d9e10";

    #[test]
    fn stats_body_has_the_exact_size_and_is_valid() {
        for index in [0, 7, 89, 99_999, 123_456] {
            let body = stats_body(UUID, index, 200).unwrap();
            assert_eq!(body.len(), 200);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["uuid"], UUID);
            assert_eq!(value["type"], "stats");
            assert!(value["ts"].as_f64().unwrap() > 1.0e9);
            assert!(value["metrics"]["cpu.user"].is_number());
        }
    }

    #[test]
    fn too_small_a_size_is_refused() {
        let err = stats_body(UUID, 0, 100).unwrap_err();
        assert!(err.contains("too small"), "{err}");
    }

    #[test]
    fn run_plugin_round_trips_its_run_id() {
        let body = run_plugin(UUID, 42);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["to"], UUID);
        assert_eq!(value["run_id"], "42");
        assert_eq!(run_id(&body), Some(42));
        assert_eq!(run_id(b"{\"type\":\"welcome\"}"), None);
    }
}
