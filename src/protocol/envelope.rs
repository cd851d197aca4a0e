//! Reading what a client sent, for the parts that must accept any client:
//! the envelope (`uuid`, `type`, `id`, `ack`, `ts`) and the router's
//! metadata frame, checked field by field, with an error that names the
//! field that is wrong.
//!
//! The router validates with its own one-pass scan ([`super::validate`]);
//! a sink trusts nothing it reads off a socket (anything may connect to a
//! PUSH end, a router may be older or newer), so it checks again here and
//! a message that fails becomes a [`Malformed`], never a crash.

use super::validate::parse_uuid;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// What is wrong with a message, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

pub fn malformed(text: impl Into<String>) -> Malformed {
    Malformed(text.into())
}

/// The envelope of a client message, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Canonical UUID text (lowercase, hyphenated).
    pub uuid: String,
    pub kind: String,
    pub id: Option<String>,
    pub ack: bool,
    /// `ts` when it is a plausible Unix time (a finite number above 0).
    pub ts: Option<f64>,
}

impl Envelope {
    /// Reads the envelope of a client's object. `null` counts as absent;
    /// a `ts` that is not a plausible time is ignored, not refused (the
    /// router's metadata carries a time anyway).
    pub fn read(body: &Map<String, Value>) -> Result<Envelope, Malformed> {
        let uuid = match body.get("uuid") {
            Some(Value::String(s)) => parse_uuid(s)
                .map(|u| u.hyphenated().to_string())
                .ok_or_else(|| malformed(format!("uuid {:?} is not a UUID", clip(s))))?,
            _ => return Err(malformed("uuid is missing or not a string")),
        };
        let kind = match body.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(malformed("type is missing or not a string")),
        };
        let id = opt_str(body, "id")?.map(str::to_string);
        let ack = match body.get("ack") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(malformed("ack is not a boolean")),
        };
        if ack && id.is_none() {
            return Err(malformed("ack is true but id is missing"));
        }
        let ts = body
            .get("ts")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0);
        Ok(Envelope {
            uuid,
            kind,
            id,
            ack,
            ts,
        })
    }
}

/// The router's metadata frame, sent after each forwarded client frame.
/// The router writes it with `MetadataWriter` (no allocation per message);
/// this is its shape for readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub router: String,
    /// Unix seconds, millisecond precision.
    pub received_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

impl Metadata {
    pub fn parse(frame: &[u8]) -> Result<Metadata, Malformed> {
        let Ok(Value::Object(meta)) = serde_json::from_slice::<Value>(frame) else {
            return Err(malformed("metadata frame is not a JSON object"));
        };
        let router = match meta.get("router") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(malformed("metadata has no router name")),
        };
        let received_at = meta
            .get("received_at")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| malformed("metadata has no received_at time"))?;
        let peer = match meta.get("peer") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(malformed("metadata peer is not a string")),
        };
        Ok(Metadata {
            router,
            received_at,
            peer,
        })
    }
}

/// `name` of `obj` as an optional string; present with another type is
/// malformed.
pub fn opt_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Malformed> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{name} is not a string"))),
    }
}

/// `name` of `obj` as an optional finite number.
pub fn opt_num(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, Malformed> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| malformed(format!("{name} is not a number"))),
    }
}

/// Cuts hostile input short before it is logged or echoed back.
pub fn clip(text: &str) -> &str {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::MetadataWriter;
    use super::*;

    fn obj(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_envelope_is_read_and_checked() {
        let e = Envelope::read(&obj(
            r#"{"uuid":"0B4E7A7E-3C1A-4C57-9A4B-6D0C1F2E3A4B","type":"stats","id":"7","ack":true,"ts":"soon"}"#,
        ))
        .unwrap();
        assert_eq!(e.uuid, "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b");
        assert_eq!(
            (e.kind.as_str(), e.id.as_deref(), e.ack),
            ("stats", Some("7"), true)
        );
        assert_eq!(e.ts, None, "an implausible ts is ignored");
        let u = r#""uuid":"0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b""#;
        for (text, why) in [
            (
                r#"{"type":"stats"}"#.to_string(),
                "uuid is missing or not a string",
            ),
            (format!(r#"{{{u}}}"#), "type is missing or not a string"),
            (
                format!(r#"{{{u},"type":"s","id":3}}"#),
                "id is not a string",
            ),
            (
                format!(r#"{{{u},"type":"s","ack":true}}"#),
                "ack is true but id is missing",
            ),
            (
                format!(r#"{{{u},"type":"s","ack":1,"id":"a"}}"#),
                "ack is not a boolean",
            ),
        ] {
            assert_eq!(Envelope::read(&obj(&text)).unwrap_err().0, why);
        }
    }

    #[test]
    fn the_metadata_the_router_writes_is_what_readers_read() {
        let mut out = String::new();
        MetadataWriter::new("r\"1").write(&mut out, 1_764_072_605_007, Some("127.0.0.1"));
        assert_eq!(
            Metadata::parse(out.as_bytes()).unwrap(),
            Metadata {
                router: "r\"1".into(),
                received_at: 1764072605.007,
                peer: Some("127.0.0.1".into())
            }
        );
        assert!(Metadata::parse(br#"{"router":"r","received_at":"x"}"#).is_err());
        assert!(Metadata::parse(b"{}").is_err());
    }
}
