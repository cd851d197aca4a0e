//! Building the agent's own messages (PROTOCOL.md "Message types clients
//! send") and reading the ones routers send back.

use serde_json::{json, Map, Value};

/// Unix time in seconds, with millisecond precision.
pub use crate::clock::unix_secs_ms as now_secs;

pub fn hello(uuid: &str) -> Vec<u8> {
    to_frame(json!({"uuid": uuid, "type": "hello", "ts": now_secs()}))
}

pub fn heartbeat(uuid: &str, hostname: &str, interval_s: u64) -> Vec<u8> {
    to_frame(json!({
        "uuid": uuid,
        "type": "heartbeat",
        "ts": now_secs(),
        "hostname": hostname,
        "interval_s": interval_s,
    }))
}

/// A message built by a part of the agent: envelope fields added to `body`.
pub fn with_envelope(uuid: &str, kind: &str, mut body: Map<String, Value>) -> Vec<u8> {
    body.insert("uuid".into(), json!(uuid));
    body.insert("type".into(), json!(kind));
    body.entry("ts").or_insert(json!(now_secs()));
    to_frame(Value::Object(body))
}

pub fn to_frame(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// What a router sent this agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Welcome {
        router: String,
    },
    Ack {
        id: String,
    },
    RunPlugin {
        plugin: String,
        run_id: Option<String>,
    },
    Error {
        code: String,
        detail: String,
        id: Option<String>,
    },
    Unknown(String),
}

pub fn parse_inbound(frame: &[u8]) -> Inbound {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(frame) else {
        return Inbound::Unknown("not a JSON object".into());
    };
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
    match obj.get("type").and_then(Value::as_str) {
        Some("welcome") => Inbound::Welcome {
            router: text("router").unwrap_or_default(),
        },
        Some("ack") => match text("id") {
            Some(id) => Inbound::Ack { id },
            None => Inbound::Unknown("ack without a string id".into()),
        },
        Some("run_plugin") => match text("plugin") {
            Some(plugin) => Inbound::RunPlugin {
                plugin,
                run_id: text("run_id"),
            },
            None => Inbound::Unknown("run_plugin without a string plugin".into()),
        },
        Some("error") => Inbound::Error {
            code: text("error").unwrap_or_default(),
            detail: text("detail").unwrap_or_default(),
            id: text("id"),
        },
        Some(other) => Inbound::Unknown(format!("type {other:?}")),
        None => Inbound::Unknown("no type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_kinds() {
        assert_eq!(
            parse_inbound(br#"{"type":"ack","to":"x","id":"m1"}"#),
            Inbound::Ack { id: "m1".into() }
        );
        assert_eq!(
            parse_inbound(br#"{"type":"run_plugin","to":"x","plugin":"load","run_id":"r"}"#),
            Inbound::RunPlugin {
                plugin: "load".into(),
                run_id: Some("r".into())
            }
        );
        assert!(matches!(
            parse_inbound(br#"{"type":"error","error":"overloaded","detail":"d","id":"m"}"#),
            Inbound::Error { id: Some(_), .. }
        ));
        assert!(matches!(parse_inbound(b"[]"), Inbound::Unknown(_)));
        assert!(matches!(
            parse_inbound(br#"{"type":"ack","id":3}"#),
            Inbound::Unknown(_)
        ));
    }

    #[test]
    fn heartbeat_fields() {
        let v: Value = serde_json::from_slice(&heartbeat("u", "h", 30)).unwrap();
        assert_eq!(v["type"], "heartbeat");
        assert_eq!(v["interval_s"], 30);
        assert_eq!(v["hostname"], "h");
        assert!(v["ts"].as_f64().unwrap() > 1e9);
    }
}
