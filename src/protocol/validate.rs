//! The router's side of the wire: validating a client frame, parsing a
//! back-end request, and the frames the router writes on every message.
//!
//! Nothing here touches a socket: the router's threads call these to decide
//! what a frame is and to build the frames they answer with, and the unit
//! tests below pin the exact JSON text other implementations rely on.
//!
//! Validation is on the hot path (every client message passes through it):
//! one pass of `json_scan` checks the whole frame and yields the envelope
//! fields as borrowed raw text, so nothing is allocated for a valid message
//! and the rest of the object is carried through untouched.

use super::codes::RejectCode;
use super::envelope::clip;
use super::messages::{ToClient, HELLO};
use crate::json_scan::scan_object;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write as _;
use uuid::Uuid;

/// A refused client message: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub detail: String,
    /// The message's `id`, when it had a string one.
    pub id: Option<String>,
}

impl Rejection {
    pub fn new(code: RejectCode, detail: impl Into<String>, id: Option<String>) -> Rejection {
        Rejection {
            code,
            detail: detail.into(),
            id,
        }
    }

    /// The one-frame error reply of `PROTOCOL.md`.
    /// Written from borrowed fields (a flood of `overloaded` replies
    /// should not copy each one); the test below pins it to
    /// [`ToClient::Error`].
    pub fn to_frame(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct ErrorReply<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            error: RejectCode,
            detail: &'a str,
            id: Option<&'a str>,
        }
        let reply = ErrorReply {
            kind: "error",
            error: self.code,
            detail: &self.detail,
            id: self.id.as_deref(),
        };
        serde_json::to_vec(&reply).expect("an error reply always serializes")
    }
}

/// Where a valid client message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `hello`: the router answers `welcome`.
    Hello,
    /// A sink type: its index in the configured list.
    Sink(usize),
}

/// A client message that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'a> {
    pub uuid: Uuid,
    pub target: Target,
    /// The raw JSON text of `id`, if present, for a refusal decided later
    /// (`overloaded`); read it with [`string_id`].
    pub id: Option<&'a str>,
}

/// The envelope fields the router checks, as raw JSON text; every other
/// field is checked for syntax and carried through untouched.
#[derive(Default)]
struct Envelope<'a> {
    uuid: Option<&'a str>,
    kind: Option<&'a str>,
    id: Option<&'a str>,
    ack: Option<&'a str>,
    ts: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// Records one top-level field; a repeated envelope field is an error
    /// (which of two `uuid`s would the sinks believe?).
    fn set(&mut self, key: &str, value: &'a str) -> Result<(), &'static str> {
        let slot = match key {
            "uuid" => &mut self.uuid,
            "type" => &mut self.kind,
            "id" => &mut self.id,
            "ack" => &mut self.ack,
            "ts" => &mut self.ts,
            _ => return Ok(()),
        };
        if slot.replace(value).is_some() {
            return Err("an envelope field (uuid, type, id, ack, ts) appears twice");
        }
        Ok(())
    }
}

/// Validates one client frame (size and frame count are checked by the
/// caller, which sees the socket). `sink_types` are the configured types, in
/// the order whose index [`Target::Sink`] carries.
pub fn validate<'a>(frame: &'a [u8], sink_types: &[String]) -> Result<Accepted<'a>, Rejection> {
    validate_as(frame, sink_types, None)
}

/// [`validate`] for a message from a connection authenticated as
/// `speaker` (the ZAP User-Id under CURVE): a `uuid` other than it is
/// `forbidden`, checked right after `bad_uuid` (PROTOCOL.md, "Security").
pub fn validate_as<'a>(
    frame: &'a [u8],
    sink_types: &[String],
    speaker: Option<&Uuid>,
) -> Result<Accepted<'a>, Rejection> {
    let env = parse_envelope(frame)?;
    let id = || string_id(env.id);
    // Type errors in the optional fields are JSON-level errors, reported
    // first as the protocol's order of codes puts bad_json first.
    check_ack_type(&env, id)?;
    check_ts(&env, id)?;
    let uuid = match env.uuid.map(|raw| json_string(raw).ok_or(raw)) {
        None => return Err(Rejection::new(RejectCode::BadUuid, "uuid is missing", id())),
        Some(Err(_)) => {
            let detail = "uuid must be a string";
            return Err(Rejection::new(RejectCode::BadUuid, detail, id()));
        }
        Some(Ok(text)) => parse_uuid(&text)
            .ok_or_else(|| Rejection::new(RejectCode::BadUuid, bad_uuid_detail(&text), id()))?,
    };
    if let Some(speaker) = speaker.filter(|s| **s != uuid) {
        let detail = format!("this connection's key speaks as {speaker}, not as {uuid}");
        return Err(Rejection::new(RejectCode::Forbidden, detail, id()));
    }
    let target = match env.kind.map(|raw| json_string(raw).ok_or(raw)) {
        None => {
            return Err(Rejection::new(
                RejectCode::UnknownType,
                "type is missing",
                id(),
            ))
        }
        Some(Err(_)) => {
            let detail = "type must be a string";
            return Err(Rejection::new(RejectCode::UnknownType, detail, id()));
        }
        Some(Ok(kind)) => resolve_type(&kind, sink_types).ok_or_else(|| {
            let detail = format!("type {:?} is not hello nor a sink type here", clip(&kind));
            Rejection::new(RejectCode::UnknownType, detail, id())
        })?,
    };
    check_ack_id(&env)?;
    Ok(Accepted {
        uuid,
        target,
        id: env.id,
    })
}

/// The `id` a refusal echoes: the field's string value, if it is a string.
pub fn string_id(raw: Option<&str>) -> Option<String> {
    raw.and_then(json_string).map(Cow::into_owned)
}

/// Parses the frame far enough to read the envelope: UTF-8, one JSON
/// object, well-formed throughout.
fn parse_envelope(frame: &[u8]) -> Result<Envelope<'_>, Rejection> {
    let bad = |detail: String| Rejection::new(RejectCode::BadJson, detail, None);
    let text = std::str::from_utf8(frame).map_err(|e| {
        bad(format!(
            "not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut env = Envelope::default();
    let mut duplicate = None;
    let scanned = scan_object(text, |key, value| {
        if let Err(what) = env.set(&json_string(key).unwrap_or_default(), value) {
            duplicate = Some(what);
        }
        Ok(())
    });
    match (scanned, duplicate) {
        (Err(e), _) if e.offset == 0 => Err(bad("not a JSON object".to_string())),
        (Err(e), _) => Err(bad(format!("invalid JSON: {e}"))),
        (Ok(()), Some(what)) => Err(bad(what.to_string())),
        (Ok(()), None) => Ok(env),
    }
}

/// `ack`, when present, must be a boolean.
fn check_ack_type(env: &Envelope, id: impl Fn() -> Option<String>) -> Result<(), Rejection> {
    match env.ack {
        None | Some("true") | Some("false") => Ok(()),
        Some(_) => {
            let detail = "ack must be true or false";
            Err(Rejection::new(RejectCode::BadJson, detail, id()))
        }
    }
}

/// `ack:true` needs a string `id`.
fn check_ack_id(env: &Envelope) -> Result<(), Rejection> {
    let has_id = env.id.and_then(json_string).is_some();
    if env.ack == Some("true") && !has_id {
        let detail = "ack is true but id is missing or not a string";
        return Err(Rejection::new(RejectCode::MissingId, detail, None));
    }
    Ok(())
}

/// `ts`, when present, must be a number (Unix seconds).
fn check_ts(env: &Envelope, id: impl Fn() -> Option<String>) -> Result<(), Rejection> {
    match env.ts {
        Some(raw) if !is_json_number(raw) => {
            let detail = "ts must be a number (Unix seconds)";
            Err(Rejection::new(RejectCode::BadJson, detail, id()))
        }
        _ => Ok(()),
    }
}

fn is_json_number(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// The string a raw JSON value holds, or `None` when it is not a string.
/// Borrowed unless the string has escapes. `raw` is well-formed JSON text.
fn json_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// A UUID in RFC 4122 text form: 36 characters, hyphenated, any case.
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    let b = text.as_bytes();
    let hyphens_ok = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
    if !hyphens_ok {
        return None;
    }
    Uuid::try_parse(text).ok()
}

fn bad_uuid_detail(text: &str) -> String {
    format!(
        "uuid {:?} is not an RFC 4122 UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        clip(text)
    )
}

fn resolve_type(kind: &str, sink_types: &[String]) -> Option<Target> {
    if kind == HELLO {
        return Some(Target::Hello);
    }
    sink_types.iter().position(|t| t == kind).map(Target::Sink)
}

/// The canonical text of a UUID: lowercase, hyphenated, 36 bytes.
pub fn uuid_text(uuid: &Uuid) -> String {
    uuid.hyphenated().to_string()
}

/// `{"type":"welcome","uuid":UUID,"router":NAME}`.
pub fn welcome_frame(uuid: &Uuid, router: &str) -> Vec<u8> {
    ToClient::Welcome {
        uuid: uuid_text(uuid),
        router: router.to_string(),
    }
    .to_frame()
}

/// Builds the metadata frame sent after each forwarded client frame:
/// `{"router":NAME,"received_at":UNIX_SECONDS,"peer":"IP"}`.
///
/// The router's name is escaped once, here, so building a frame per message
/// is a few appends into a reused buffer.
#[derive(Debug, Clone)]
pub struct MetadataWriter {
    prefix: String,
}

impl MetadataWriter {
    pub fn new(router: &str) -> MetadataWriter {
        let name = serde_json::to_string(router).expect("a string always serializes");
        MetadataWriter {
            prefix: format!("{{\"router\":{name},\"received_at\":"),
        }
    }

    /// Writes the frame into `out` (cleared first). `received_at_ms` is Unix
    /// time in milliseconds; it is written as seconds with three decimals.
    pub fn write(&self, out: &mut String, received_at_ms: u64, peer: Option<&str>) {
        out.clear();
        out.push_str(&self.prefix);
        let _ = write!(
            out,
            "{}.{:03}",
            received_at_ms / 1000,
            received_at_ms % 1000
        );
        if let Some(peer) = peer {
            out.push_str(",\"peer\":");
            // Peer-Address is an IP literal from libzmq, but escape anyway.
            out.push_str(&serde_json::to_string(peer).expect("a string always serializes"));
        }
        out.push('}');
    }
}

/// A back-end request, REQ → REP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendRequest {
    /// `{"to": UUID, ...}`: deliver the whole frame to that client.
    Deliver { to: Uuid },
    /// `{"op":"status"}`.
    Status,
}

/// Why a back-end request is a `bad_request`; its text is the `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    NotUtf8,
    NotAnObject(String),
    /// `to` is not a client UUID: its raw text, clipped.
    BadTo(String),
    UnknownOp(String),
    NeitherToNorOp,
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRequest::NotUtf8 => f.write_str("request is not UTF-8"),
            BadRequest::NotAnObject(e) => write!(f, "request is not a JSON object: {e}"),
            BadRequest::BadTo(raw) => write!(f, "to must be a client UUID, got {raw}"),
            BadRequest::UnknownOp(op) => write!(f, "unknown op {op:?}"),
            BadRequest::NeitherToNorOp => f.write_str("request has neither to nor op"),
        }
    }
}

impl std::error::Error for BadRequest {}

/// Parses a back-end request with the same one-pass scan.
pub fn parse_backend_request(frame: &[u8]) -> Result<BackendRequest, BadRequest> {
    let text = std::str::from_utf8(frame).map_err(|_| BadRequest::NotUtf8)?;
    let (mut to, mut op) = (None, None);
    scan_object(text, |key, value| {
        match json_string(key).as_deref() {
            Some("to") => to = Some(value),
            Some("op") => op = Some(value),
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| BadRequest::NotAnObject(e.to_string()))?;
    if let Some(raw) = to {
        let to = json_string(raw)
            .and_then(|s| parse_uuid(&s))
            .ok_or_else(|| BadRequest::BadTo(clip(raw).to_string()))?;
        return Ok(BackendRequest::Deliver { to });
    }
    match op.and_then(json_string).as_deref() {
        Some("status") => Ok(BackendRequest::Status),
        Some(op) => Err(BadRequest::UnknownOp(clip(op).to_string())),
        None => Err(BadRequest::NeitherToNorOp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";

    fn types() -> Vec<String> {
        ["heartbeat", "stats"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn check(frame: &str) -> Result<Accepted<'_>, Rejection> {
        validate(frame.as_bytes(), &types())
    }

    fn code(frame: &str) -> RejectCode {
        check(frame).unwrap_err().code
    }

    #[test]
    fn accepts_a_sink_message_and_carries_unknown_fields() {
        let frame =
            format!(r#"{{"uuid":"{U}","type":"stats","metrics":{{"a.b":1}},"x":[1,{{}}]}}"#);
        let ok = check(&frame).unwrap();
        assert_eq!(ok.target, Target::Sink(1));
        assert_eq!(uuid_text(&ok.uuid), U);
    }

    #[test]
    fn accepts_hello_and_uppercase_uuid() {
        let frame = format!(r#"{{"uuid":"{}","type":"hello"}}"#, U.to_uppercase());
        assert_eq!(check(&frame).unwrap().target, Target::Hello);
    }

    #[test]
    fn bad_json_cases() {
        assert_eq!(code("not json"), RejectCode::BadJson);
        assert_eq!(code("[1,2]"), RejectCode::BadJson);
        assert_eq!(code(r#""a string""#), RejectCode::BadJson);
        assert_eq!(code(r#"{"uuid":1} trailing"#), RejectCode::BadJson);
        assert_eq!(code(r#"{"uuid":"a","uuid":"b"}"#), RejectCode::BadJson);
        let bytes = [b'{', 0xff, b'}'];
        assert_eq!(
            validate(&bytes, &types()).unwrap_err().code,
            RejectCode::BadJson
        );
        let deep = "[".repeat(10_000);
        assert_eq!(code(&format!(r#"{{"x":{deep}}}"#)), RejectCode::BadJson);
    }

    #[test]
    fn bad_uuid_cases() {
        assert_eq!(code(r#"{"type":"stats"}"#), RejectCode::BadUuid);
        assert_eq!(code(r#"{"uuid":7,"type":"stats"}"#), RejectCode::BadUuid);
        assert_eq!(
            code(r#"{"uuid":"nope","type":"stats"}"#),
            RejectCode::BadUuid
        );
        let simple = U.replace('-', "");
        assert_eq!(
            code(&format!(r#"{{"uuid":"{simple}","type":"stats"}}"#)),
            RejectCode::BadUuid
        );
    }

    #[test]
    fn unknown_type_cases_echo_the_id() {
        let r = check(&format!(r#"{{"uuid":"{U}","id":"m1"}}"#)).unwrap_err();
        assert_eq!(
            (r.code, r.id.as_deref()),
            (RejectCode::UnknownType, Some("m1"))
        );
        let r = check(&format!(r#"{{"uuid":"{U}","type":"email","id":"m2"}}"#)).unwrap_err();
        assert_eq!(
            (r.code, r.id.as_deref()),
            (RejectCode::UnknownType, Some("m2"))
        );
        assert_eq!(
            code(&format!(r#"{{"uuid":"{U}","type":3}}"#)),
            RejectCode::UnknownType
        );
    }

    #[test]
    fn missing_id_when_ack_is_true() {
        let base = format!(r#""uuid":"{U}","type":"stats""#);
        assert_eq!(
            code(&format!("{{{base},\"ack\":true}}")),
            RejectCode::MissingId
        );
        assert_eq!(
            code(&format!("{{{base},\"ack\":true,\"id\":5}}")),
            RejectCode::MissingId
        );
        assert!(check(&format!("{{{base},\"ack\":true,\"id\":\"a\"}}")).is_ok());
        assert!(check(&format!("{{{base},\"ack\":false}}")).is_ok());
        assert_eq!(
            code(&format!("{{{base},\"ack\":\"yes\"}}")),
            RejectCode::BadJson
        );
        assert_eq!(
            code(&format!("{{{base},\"ts\":\"now\"}}")),
            RejectCode::BadJson
        );
        assert!(check(&format!("{{{base},\"ts\":1764072605.5}}")).is_ok());
        assert!(check(&format!("{{{base},\"ack\":true,\"id\":\"\"}}")).is_ok());
        // bad_json comes before bad_uuid in the protocol's order.
        assert_eq!(code(r#"{"uuid":"bad","ack":"yes"}"#), RejectCode::BadJson);
    }

    #[test]
    fn escaped_strings_are_understood() {
        let frame = format!(r#"{{"uuid":"{U}","type":"st\u0061ts","id":"a\"b"}}"#);
        assert_eq!(check(&frame).unwrap().target, Target::Sink(1));
        let ok = check(&frame).unwrap();
        assert_eq!(string_id(ok.id).as_deref(), Some("a\"b"));
    }

    #[test]
    fn error_frame_text_is_pinned() {
        let r = Rejection::new(RejectCode::BadUuid, "uuid is missing", Some("7".into()));
        assert_eq!(
            String::from_utf8(r.to_frame()).unwrap(),
            r#"{"type":"error","error":"bad_uuid","detail":"uuid is missing","id":"7"}"#
        );
        let r = Rejection::new(RejectCode::Overloaded, "full", None);
        assert!(String::from_utf8(r.to_frame())
            .unwrap()
            .ends_with(r#""id":null}"#));
    }

    #[test]
    fn welcome_and_metadata_text_is_pinned() {
        let uuid = parse_uuid(&U.to_uppercase()).unwrap();
        assert_eq!(
            String::from_utf8(welcome_frame(&uuid, "r\"1")).unwrap(),
            format!(r#"{{"type":"welcome","uuid":"{U}","router":"r\"1"}}"#)
        );
        let mut out = String::new();
        MetadataWriter::new("r1").write(&mut out, 1_764_072_605_007, Some("127.0.0.1"));
        assert_eq!(
            out,
            r#"{"router":"r1","received_at":1764072605.007,"peer":"127.0.0.1"}"#
        );
        MetadataWriter::new("r1").write(&mut out, 5_000, None);
        assert_eq!(out, r#"{"router":"r1","received_at":5.000}"#);
    }

    #[test]
    fn backend_requests() {
        let deliver = format!(r#"{{"to":"{U}","type":"ack","id":"1"}}"#);
        assert!(matches!(
            parse_backend_request(deliver.as_bytes()),
            Ok(BackendRequest::Deliver { .. })
        ));
        assert_eq!(
            parse_backend_request(br#"{"op":"status"}"#),
            Ok(BackendRequest::Status)
        );
        assert!(parse_backend_request(br#"{"op":"reboot"}"#).is_err());
        assert!(parse_backend_request(br#"{"to":"nope"}"#).is_err());
        assert!(parse_backend_request(br#"{}"#).is_err());
        assert!(parse_backend_request(b"[]").is_err());
        let detail = |f: &[u8]| parse_backend_request(f).unwrap_err().to_string();
        assert_eq!(detail(br#"{"op":"reboot"}"#), r#"unknown op "reboot""#);
        assert_eq!(detail(br#"{"to":7}"#), "to must be a client UUID, got 7");
        assert_eq!(detail(b"{}"), "request has neither to nor op");
        assert_eq!(detail(&[0xff]), "request is not UTF-8");
    }

    #[test]
    fn the_router_writes_what_the_message_types_say() {
        let uuid = parse_uuid(U).unwrap();
        let parsed = ToClient::parse(&welcome_frame(&uuid, "r1")).unwrap();
        let welcome = ToClient::Welcome {
            uuid: U.into(),
            router: "r1".into(),
        };
        assert_eq!(parsed, welcome);
        let r = Rejection::new(RejectCode::MissingId, "no id", Some("m".into()));
        let typed = ToClient::Error {
            error: RejectCode::MissingId,
            detail: "no id".into(),
            id: Some("m".into()),
        };
        assert_eq!(r.to_frame(), typed.to_frame());
    }
}
