//! The agent's local intake (`VIGIL_AGENT_LOCAL`, docs/PROTOCOL.md "Local
//! intake"): a local process sends one client message without `uuid`, the
//! agent answers `{"ok":true,"id":ID}` or `{"ok":false,"error":CODE,
//! "detail":TEXT}`. Written by the intake thread, read by `vigil send`.

use super::codes::LocalCode;
use serde::{Deserialize, Serialize};

/// The agent's answer to one local message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    /// Accepted under this `id` (for `ack:true`: fsynced in the spool).
    Accepted { id: String },
    /// Refused; nothing was kept.
    Refused { code: LocalCode, detail: String },
}

/// The reply's JSON shape.
#[derive(Serialize, Deserialize)]
struct Wire {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl LocalReply {
    pub fn to_frame(&self) -> Vec<u8> {
        let wire = match self {
            LocalReply::Accepted { id } => Wire {
                ok: true,
                id: Some(id.clone()),
                error: None,
                detail: None,
            },
            LocalReply::Refused { code, detail } => Wire {
                ok: false,
                id: None,
                error: Some(code.as_str().to_string()),
                detail: Some(detail.clone()),
            },
        };
        serde_json::to_vec(&wire).expect("a local reply always serializes")
    }

    /// Reads the agent's reply. A refusal whose code this build does not
    /// know is an error naming it, with its detail.
    pub fn parse(frame: &[u8]) -> Result<LocalReply, String> {
        let wire: Wire = serde_json::from_slice(frame)
            .map_err(|e| format!("reply is not a local reply: {e}"))?;
        if wire.ok {
            return Ok(LocalReply::Accepted {
                id: wire.id.unwrap_or_default(),
            });
        }
        let error = wire.error.unwrap_or_default();
        let detail = wire.detail.unwrap_or_default();
        match LocalCode::from_wire(&error) {
            Some(code) => Ok(LocalReply::Refused { code, detail }),
            None => Err(format!("{error}: {detail}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_pinned_and_read_back() {
        let cases = [
            (
                LocalReply::Accepted { id: "m1".into() },
                r#"{"ok":true,"id":"m1"}"#,
            ),
            (
                LocalReply::Refused {
                    code: LocalCode::SpoolFull,
                    detail: "full".into(),
                },
                r#"{"ok":false,"error":"spool_full","detail":"full"}"#,
            ),
        ];
        for (reply, text) in cases {
            assert_eq!(String::from_utf8(reply.to_frame()).unwrap(), text);
            assert_eq!(LocalReply::parse(text.as_bytes()).unwrap(), reply);
        }
        assert_eq!(
            LocalReply::parse(br#"{"ok":false,"error":"newer","detail":"d"}"#).unwrap_err(),
            "newer: d"
        );
        assert!(LocalReply::parse(b"[]").is_err());
    }
}
