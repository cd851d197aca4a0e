//! One message as a sink receives it from a router: the client's JSON frame
//! and the router's metadata frame, checked and parsed.
//!
//! The router already validated the envelope, but a sink trusts nothing it
//! reads off a socket: anything else may have connected to the PUSH end, a
//! router may be older or newer, and a frame may be cut. So every check is
//! done again here, and a message that fails one becomes a [`Malformed`]
//! the worker counts and logs, never a crash.

use super::config::SinkType;
use crate::protocol::envelope::{malformed, Envelope};
use serde_json::{Map, Value};

pub use crate::protocol::envelope::{clip, opt_num, opt_str, Malformed};
/// The router's metadata frame.
pub use crate::protocol::Metadata as Meta;

/// A message that passed the envelope checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// Canonical UUID text (lowercase).
    pub uuid: String,
    pub id: Option<String>,
    pub ack: bool,
    /// The client's object.
    pub body: Map<String, Value>,
    /// The client's frame as text, as received.
    pub text: String,
    pub meta: Meta,
    /// The client's `ts`, when it is a plausible Unix time.
    ts: Option<f64>,
}

/// Checks and parses one multipart message for a sink of `kind`.
pub fn parse(frames: &[Vec<u8>], kind: SinkType) -> Result<Incoming, Malformed> {
    let [frame, meta] = frames else {
        return Err(malformed(format!(
            "expected 2 frames (message, metadata), got {}",
            frames.len()
        )));
    };
    let text = std::str::from_utf8(frame)
        .map_err(|_| malformed("message frame is not UTF-8"))?
        .to_string();
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err(malformed("message frame is not a JSON object")),
        Err(e) => return Err(malformed(format!("message frame is not JSON: {e}"))),
    };
    let meta = Meta::parse(meta)?;
    let envelope = Envelope::read(&body)?;
    if envelope.kind != kind.name() {
        return Err(malformed(format!(
            "type {:?} arrived at the {kind} sink",
            clip(&envelope.kind)
        )));
    }
    let (body, text) = drop_vigils_own_fields(kind, body, text);
    Ok(Incoming {
        uuid: envelope.uuid,
        id: envelope.id,
        ack: envelope.ack,
        body,
        text,
        meta,
        ts: envelope.ts,
    })
}

/// `origin` and `recovery` mark vigil's own notifications (a host down,
/// a result state change, an overdue run; a recovery resolves a webhook
/// incident). A client may not claim them: they are dropped from its
/// notification, body and stored text alike (PROTOCOL.md, "Security").
fn drop_vigils_own_fields(
    kind: SinkType,
    mut body: Map<String, Value>,
    text: String,
) -> (Map<String, Value>, String) {
    if kind != SinkType::Notification {
        return (body, text);
    }
    let dropped = body.remove("origin").is_some() | body.remove("recovery").is_some();
    if !dropped {
        return (body, text);
    }
    let text = serde_json::to_string(&body).unwrap_or(text);
    (body, text)
}

impl Incoming {
    /// An optional string field; present with another type is malformed.
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, Malformed> {
        opt_str(&self.body, name)
    }

    /// A required string field.
    pub fn req_str(&self, name: &str) -> Result<&str, Malformed> {
        self.opt_str(name)?
            .ok_or_else(|| malformed(format!("{name} is missing")))
    }

    /// An optional number field.
    pub fn opt_num(&self, name: &str) -> Result<Option<f64>, Malformed> {
        opt_num(&self.body, name)
    }

    /// `hostname`, when given as a non-empty string.
    pub fn hostname(&self) -> Result<Option<&str>, Malformed> {
        Ok(self.opt_str("hostname")?.filter(|h| !h.is_empty()))
    }

    /// The client's `ts` when it is a plausible Unix time, else when the
    /// router received the message.
    pub fn timestamp(&self) -> f64 {
        self.ts.unwrap_or(self.meta.received_at)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";
    pub const META: &str = r#"{"router":"r1","received_at":1764072605.5,"peer":"127.0.0.1"}"#;

    /// A message as a router would forward it.
    pub fn frames(json: &str) -> Vec<Vec<u8>> {
        vec![json.as_bytes().to_vec(), META.as_bytes().to_vec()]
    }

    /// Parses `json` (forwarded with [`META`]) for `kind`.
    pub fn incoming(kind: SinkType, json: &str) -> Incoming {
        parse(&frames(json), kind).unwrap()
    }

    #[test]
    fn parses_envelope_and_metadata() {
        let json = format!(
            r#"{{"uuid":"{}","type":"stats","id":"7","ack":true,"ts":5}}"#,
            U.to_uppercase()
        );
        let m = incoming(SinkType::Stats, &json);
        assert_eq!(m.uuid, U);
        assert_eq!((m.id.as_deref(), m.ack), (Some("7"), true));
        assert_eq!(m.meta.router, "r1");
        assert_eq!(m.meta.peer.as_deref(), Some("127.0.0.1"));
        assert_eq!(m.timestamp(), 5.0);
        assert_eq!(m.text, json);
    }

    #[test]
    fn refuses_what_a_router_would_not_send() {
        let ok = format!(r#"{{"uuid":"{U}","type":"stats"}}"#);
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![ok.as_bytes().to_vec()],
            vec![ok.as_bytes().to_vec(), META.into(), b"x".to_vec()],
            vec![b"{".to_vec(), META.into()],
            vec![vec![0xff], META.into()],
            vec![b"[1]".to_vec(), META.into()],
            vec![ok.as_bytes().to_vec(), b"{}".to_vec()],
            vec![
                ok.as_bytes().to_vec(),
                br#"{"router":"r","received_at":"x"}"#.to_vec(),
            ],
            frames(r#"{"uuid":"nope","type":"stats"}"#),
            frames(&format!(r#"{{"uuid":"{U}","type":"heartbeat"}}"#)),
            frames(&format!(r#"{{"uuid":"{U}"}}"#)),
            frames(&format!(r#"{{"uuid":"{U}","type":"stats","id":3}}"#)),
            frames(&format!(r#"{{"uuid":"{U}","type":"stats","ack":true}}"#)),
            frames(&format!(
                r#"{{"uuid":"{U}","type":"stats","ack":"yes","id":"1"}}"#
            )),
        ];
        for case in cases {
            assert!(parse(&case, SinkType::Stats).is_err(), "{case:?}");
        }
        assert!(parse(&frames(&ok), SinkType::Stats).is_ok());
    }

    #[test]
    fn a_client_cannot_claim_vigils_own_origin_or_recovery() {
        let json = format!(
            r#"{{"uuid":"{U}","type":"notification","severity":"info","message":"m","origin":"heartbeat","recovery":true}}"#
        );
        let m = incoming(SinkType::Notification, &json);
        assert!(!m.body.contains_key("origin") && !m.body.contains_key("recovery"));
        assert!(
            !m.text.contains("recovery") && !m.text.contains("origin"),
            "{}",
            m.text
        );
        assert_eq!(m.body["message"], "m");
        let plain = format!(r#"{{"uuid":"{U}","type":"notification","message":"m"}}"#);
        assert_eq!(
            incoming(SinkType::Notification, &plain).text,
            plain,
            "untouched"
        );
    }

    #[test]
    fn field_accessors_say_what_is_wrong() {
        let m = incoming(
            SinkType::Stats,
            &format!(r#"{{"uuid":"{U}","type":"stats","hostname":7,"n":"x","ts":"soon"}}"#),
        );
        assert_eq!(
            m.hostname().unwrap_err().to_string(),
            "hostname is not a string"
        );
        assert!(m.opt_num("n").is_err());
        assert_eq!(m.opt_num("missing").unwrap(), None);
        assert!(m.req_str("missing").is_err());
        assert_eq!(m.timestamp(), 1764072605.5, "a bad ts falls back");
    }
}
