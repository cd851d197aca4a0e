//! The agent's own messages (PROTOCOL.md "Message types clients send"),
//! written through the protocol's types with the envelope the agent gives
//! each one: its UUID, a fresh `id`, and `ts`.

use crate::clock::unix_secs_ms;
use crate::protocol::{ClientMessage, Framed, Heartbeat, Hello};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// A fresh `id` for one of the agent's own unacked messages: unique within
/// this agent's run (a random prefix per process, then a counter), so that
/// a router's `overloaded` reply, which echoes it, says which message to
/// send again.
pub fn next_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let random = uuid::Uuid::new_v4().as_u128() as u32;
        format!("a{random:08x}")
    });
    format!("{prefix}-{}", COUNTER.fetch_add(1, Relaxed))
}

/// `hello`: the only message without an `id` (a router answers it itself).
pub fn hello(uuid: &str) -> Vec<u8> {
    Framed::new(uuid, unix_secs_ms(), &Hello {}).to_frame()
}

/// A heartbeat with the given `id` (see [`next_id`]).
pub fn heartbeat(uuid: &str, hostname: &str, interval_s: u64, id: &str) -> Vec<u8> {
    let body = Heartbeat {
        hostname: hostname.to_string(),
        interval_s,
    };
    Framed::new(uuid, unix_secs_ms(), &body)
        .with_id(id, false)
        .to_frame()
}

/// One of the agent's messages (stats, registration, result), unacked,
/// with a fresh `id` and the time now.
pub fn frame<M: ClientMessage>(uuid: &str, body: &M) -> Vec<u8> {
    let id = next_id();
    Framed::new(uuid, unix_secs_ms(), body)
        .with_id(&id, false)
        .to_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RejectCode, Stats, ToClient};
    use serde_json::Value;

    #[test]
    fn inbound_kinds() {
        let parse = |f: &[u8]| ToClient::parse(f);
        assert_eq!(
            parse(br#"{"type":"ack","to":"x","id":"m1"}"#).unwrap(),
            ToClient::Ack {
                to: "x".into(),
                id: "m1".into()
            }
        );
        assert_eq!(
            parse(br#"{"type":"run_plugin","to":"x","plugin":"load","run_id":"r"}"#).unwrap(),
            ToClient::RunPlugin {
                to: "x".into(),
                plugin: "load".into(),
                run_id: Some("r".into())
            }
        );
        assert!(matches!(
            parse(br#"{"type":"error","error":"overloaded","detail":"d","id":"m"}"#),
            Ok(ToClient::Error {
                error: RejectCode::Overloaded,
                id: Some(_),
                ..
            })
        ));
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"type":"ack","id":3}"#).is_err());
    }

    #[test]
    fn heartbeat_fields() {
        let v: Value = serde_json::from_slice(&heartbeat("u", "h", 30, "i-1")).unwrap();
        assert_eq!(v["id"], "i-1");
        assert_ne!(next_id(), next_id());
        assert_eq!(v["type"], "heartbeat");
        assert_eq!(v["interval_s"], 30);
        assert_eq!(v["hostname"], "h");
        assert!(v["ts"].as_f64().unwrap() > 1e9);
        assert!(v.get("ack").is_none());
    }

    #[test]
    fn the_agents_text_keeps_its_sorted_keys() {
        let hello = String::from_utf8(hello("u")).unwrap();
        assert!(
            hello.starts_with(r#"{"ts":"#) && hello.ends_with(r#","type":"hello","uuid":"u"}"#)
        );
        let stats = Stats {
            hostname: "h".into(),
            source: Some("statsd".into()),
            interval_s: Some(10),
            metrics: [("a.b".to_string(), Value::from(1.5))]
                .into_iter()
                .collect(),
        };
        let text = String::from_utf8(frame("u", &stats)).unwrap();
        let ts_at = text.find(r#","interval_s":10,"metrics":{"a.b":1.5},"source":"statsd","ts":"#);
        assert!(text.starts_with(r#"{"hostname":"h","id":"a"#), "{text}");
        assert!(ts_at.is_some(), "{text}");
        assert!(text.ends_with(r#","type":"stats","uuid":"u"}"#), "{text}");
    }
}
