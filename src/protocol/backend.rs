//! The router's back-end socket: requests from sinks, schedulers and
//! operators (REQ → REP-compatible ROUTER), and the `{"ok":…}` replies.
//!
//! Requests are parsed by the router with the one-pass scan
//! ([`super::validate::parse_backend_request`]); this module holds the
//! replies, written by the router and read by [`crate::backend_client`] and
//! `vigil status`.

use super::codes::BackendError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub fn to_frame(self) -> Vec<u8> {
        match self {
            Delivery::Sent => Reply::ok_frame(),
            Delivery::UnknownClient => Reply::refusal_frame(BackendError::UnknownClient, None),
            Delivery::Unreachable => Reply::refusal_frame(BackendError::Unreachable, None),
        }
    }
}

/// `{"ok":false,"error":"bad_request","detail":TEXT}`.
pub fn bad_request_frame(detail: &str) -> Vec<u8> {
    Reply::refusal_frame(BackendError::BadRequest, Some(detail))
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
    fn ok_frame() -> Vec<u8> {
        br#"{"ok":true}"#.to_vec()
    }

    fn refusal_frame(code: BackendError, detail: Option<&str>) -> Vec<u8> {
        let reply = Reply {
            ok: false,
            error: Some(code.as_str().to_string()),
            detail: detail.map(str::to_string),
        };
        serde_json::to_vec(&reply).expect("a reply always serializes")
    }

    /// Reads a reply already parsed as JSON.
    pub fn from_value(value: &Value) -> Result<Reply, String> {
        Reply::deserialize(value).map_err(|e| format!("not a back-end reply: {e}"))
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
            r#"{"ok":false,"error":"bad_request","detail":"unknown op \"x\""}"#
        );
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
