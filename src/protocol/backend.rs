//! The router's back-end socket: requests from sinks, schedulers and
//! operators (REQ → REP-compatible ROUTER), and the `{"ok":…}` replies.
//!
//! Requests are parsed by the router with the one-pass scan
//! ([`super::validate::parse_backend_request`]); this module holds the
//! replies, written by the router and read by [`crate::backend_client`] and
//! `vigil status`.

use super::codes::BackendError;
use super::envelope::Malformed;
use super::messages::sorted_frame;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The request for a router's status.
pub const STATUS_REQUEST: &[u8] = br#"{"op":"status"}"#;

/// The outcome of a delivery, as the back end is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to libzmq for the client's connection: `{"ok":true}`.
    Sent,
    /// No route to that client here: `unknown_client`.
    UnknownClient,
    /// A route, but the peer is gone or its queue is full: `unreachable`.
    Unreachable,
}

impl Delivery {
    /// Constant text: every delivery is answered, so nothing is built.
    pub fn to_frame(self) -> Vec<u8> {
        match self {
            Delivery::Sent => OK_REPLY.to_vec(),
            Delivery::UnknownClient => br#"{"ok":false,"error":"unknown_client"}"#.to_vec(),
            Delivery::Unreachable => br#"{"ok":false,"error":"unreachable"}"#.to_vec(),
        }
    }
}

/// `{"ok":true}`, the reply to a delivery handed to libzmq; a client
/// compares a reply against it before parsing anything.
pub const OK_REPLY: &[u8] = br#"{"ok":true}"#;

/// `{"detail":TEXT,"error":"bad_request","ok":false}`: keys sorted, as the
/// router has always written this one.
pub fn bad_request_frame(detail: &str) -> Vec<u8> {
    let reply = Reply {
        ok: false,
        error: Some(BackendError::BadRequest.as_str().to_string()),
        detail: Some(detail.to_string()),
    };
    sorted_frame(&reply)
}

/// A router's reply to a back-end request, as its readers see it. A
/// `status` reply carries more fields, read from the JSON value itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The refusal's code as sent: kept as text, so a code this build does
    /// not know (a newer router) is still reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Reply {
    /// Reads a reply already parsed as JSON.
    pub fn from_value(value: &Value) -> Result<Reply, Malformed> {
        Reply::deserialize(value).map_err(|e| Malformed(format!("not a back-end reply: {e}")))
    }

    /// The refusal, when it is one this build knows.
    pub fn code(&self) -> Option<BackendError> {
        self.error.as_deref().and_then(BackendError::from_wire)
    }

    /// The refusal's text for a log line: the code, or what was sent.
    pub fn error_text(&self) -> &str {
        self.error.as_deref().unwrap_or("no error field")
    }
}

/// A router's answer to `{"op":"status"}`. Fields are declared in
/// alphabetical order, so the text is the sorted one routers have always
/// sent. Readers take what they know (`#[serde(default)]` on what older
/// routers lacked) and ignore the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// Per type: times the router stopped reading clients for lack of room.
    #[serde(default)]
    pub backpressure_waits_by_type: BTreeMap<String, u64>,
    pub clients: u64,
    pub counters: StatusCounters,
    pub forwarded_by_type: BTreeMap<String, u64>,
    pub ok: bool,
    pub queue_depth: BTreeMap<String, u64>,
    /// Every [`super::RejectCode`], by its wire text.
    pub rejected_by_code: BTreeMap<String, u64>,
    pub router: String,
    pub uptime_s: u64,
}

/// The `counters` of a [`RouterStatus`], alphabetical like it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusCounters {
    /// CURVE handshakes refused (0 without CURVE).
    #[serde(default)]
    pub auth_failures: u64,
    pub delivered: u64,
    /// Messages whose `uuid` was not their connection's (0 without CURVE).
    #[serde(default)]
    pub forbidden: u64,
    pub forwarded: u64,
    pub received: u64,
    pub rejected: u64,
    pub replies_dropped: u64,
    pub undeliverable: u64,
}

impl RouterStatus {
    pub fn to_frame(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_pinned() {
        let text = |f: Vec<u8>| String::from_utf8(f).unwrap();
        assert_eq!(text(Delivery::Sent.to_frame()), r#"{"ok":true}"#);
        assert_eq!(
            text(Delivery::UnknownClient.to_frame()),
            r#"{"ok":false,"error":"unknown_client"}"#
        );
        assert_eq!(
            text(Delivery::Unreachable.to_frame()),
            r#"{"ok":false,"error":"unreachable"}"#
        );
        assert_eq!(
            text(bad_request_frame("unknown op \"x\"")),
            r#"{"detail":"unknown op \"x\"","error":"bad_request","ok":false}"#
        );
    }

    #[test]
    fn status_text_is_pinned_and_read_back() {
        let mut status = RouterStatus {
            router: "r1".into(),
            ok: true,
            clients: 3,
            uptime_s: 9,
            ..RouterStatus::default()
        };
        status.counters.received = 5;
        status.forwarded_by_type.insert("stats".into(), 4);
        status.rejected_by_code.insert("bad_json".into(), 1);
        let text = String::from_utf8(status.to_frame()).unwrap();
        assert_eq!(
            text,
            r#"{"backpressure_waits_by_type":{},"clients":3,"counters":{"auth_failures":0,"delivered":0,"forbidden":0,"forwarded":0,"received":5,"rejected":0,"replies_dropped":0,"undeliverable":0},"forwarded_by_type":{"stats":4},"ok":true,"queue_depth":{},"rejected_by_code":{"bad_json":1},"router":"r1","uptime_s":9}"#
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text, "sorted");
        let read: RouterStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(read, status);
    }

    #[test]
    fn replies_are_read_back() {
        let v: Value = serde_json::from_slice(&bad_request_frame("d")).unwrap();
        let r = Reply::from_value(&v).unwrap();
        assert_eq!((r.ok, r.code()), (false, Some(BackendError::BadRequest)));
        let v: Value = serde_json::from_str(r#"{"ok":false,"error":"later_code"}"#).unwrap();
        let r = Reply::from_value(&v).unwrap();
        assert_eq!((r.code(), r.error_text()), (None, "later_code"));
        let v: Value = serde_json::from_str(r#"{"ok":true,"router":"r1","clients":3}"#).unwrap();
        assert!(Reply::from_value(&v).unwrap().ok);
        assert!(Reply::from_value(&serde_json::json!([1])).is_err());
    }
}
