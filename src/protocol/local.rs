//! The agent's local intake (`VIGIL_AGENT_LOCAL`, docs/PROTOCOL.md "Local
//! intake"): a local process sends one client message without `uuid`, the
//! agent answers `{"ok":true,"id":ID}` or `{"ok":false,"error":CODE,
//! "detail":TEXT}`. Written by the intake thread, read by `vigil send`.

use super::codes::LocalCode;
use super::envelope::Malformed;
use serde::{Deserialize, Serialize};

/// The agent's answer to one local message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    /// Accepted under this `id` (for `ack:true`: fsynced in the spool).
    Accepted { id: String },
    /// Refused; nothing was kept.
    Refused { code: LocalCode, detail: String },
}

/// The reply's JSON shape. Fields in alphabetical order: the text the
/// intake has always written (it built the reply as a `serde_json::Value`).
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    ok: bool,
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
    pub fn parse(frame: &[u8]) -> Result<LocalReply, Malformed> {
        let wire: Wire = serde_json::from_slice(frame)
            .map_err(|e| Malformed(format!("not a local intake reply: {e}")))?;
        if wire.ok {
            return Ok(LocalReply::Accepted {
                id: wire.id.unwrap_or_default(),
            });
        }
        let error = wire.error.unwrap_or_default();
        let detail = wire.detail.unwrap_or_default();
        match LocalCode::from_wire(&error) {
            Some(code) => Ok(LocalReply::Refused { code, detail }),
            None => Err(Malformed(format!("refused as {error:?}: {detail}"))),
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
                r#"{"id":"m1","ok":true}"#,
            ),
            (
                LocalReply::Refused {
                    code: LocalCode::SpoolFull,
                    detail: "full".into(),
                },
                r#"{"detail":"full","error":"spool_full","ok":false}"#,
            ),
        ];
        for (reply, text) in cases {
            assert_eq!(String::from_utf8(reply.to_frame()).unwrap(), text);
            assert_eq!(LocalReply::parse(text.as_bytes()).unwrap(), reply);
        }
        assert_eq!(
            LocalReply::parse(br#"{"ok":false,"error":"newer","detail":"d"}"#)
                .unwrap_err()
                .to_string(),
            "refused as \"newer\": d"
        );
        assert!(LocalReply::parse(b"[]").is_err());
    }
}
