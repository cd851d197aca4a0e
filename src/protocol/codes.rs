//! Every code the wire carries as text, each an enum whose `as_str` (and
//! serde form) is exactly the text of `docs/PROTOCOL.md`, so a code can
//! only be misspelt in one place: the table below.
//!
//! - [`RejectCode`]: a router's `error` reply to a client message;
//! - [`BackendError`]: a router's `{"ok":false,"error":...}` to a back-end
//!   request;
//! - [`LocalCode`]: the agent's refusal on its local intake;
//! - [`PluginState`]: a `result`'s `status` (the Nagios plugin API);
//! - [`Severity`]: a `notification`'s `severity`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Declares an enum of wire codes: `Variant = "text"`, in the order of
/// `docs/PROTOCOL.md`. `ALL` lists them in that order, so `code as usize`
/// indexes it (the router counts refusals per code that way).
macro_rules! wire_codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every code, in the protocol's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code's text on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The code whose wire text is `text`, if any.
            pub fn from_wire(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::from_wire(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} {:?}",
                        stringify!($name),
                        text
                    ))
                })
            }
        }
    };
}

wire_codes! {
    /// Why a router refused a client message: the `error` of
    /// `{"type":"error",...}`. When several apply, the first in this order
    /// is the one reported.
    RejectCode {
        /// Over `VIGIL_MAX_MESSAGE_BYTES`.
        TooLarge = "too_large",
        /// More than one frame.
        Multipart = "multipart",
        /// Not UTF-8 JSON, not an object, a repeated envelope field, `ack`
        /// not a boolean or `ts` not a number.
        BadJson = "bad_json",
        /// `uuid` missing, not a string, or not a hyphenated UUID.
        BadUuid = "bad_uuid",
        /// Under CURVE: `uuid` is not the one the connection authenticated as.
        Forbidden = "forbidden",
        /// `type` missing, or neither `hello` nor a configured sink type.
        UnknownType = "unknown_type",
        /// `ack:true` without a string `id`.
        MissingId = "missing_id",
        /// The queue toward this type's sinks is full.
        Overloaded = "overloaded",
    }
}

wire_codes! {
    /// A router's refusal of a back-end request: `{"ok":false,"error":CODE}`.
    BackendError {
        /// This router has no route to the client: try another router.
        UnknownClient = "unknown_client",
        /// The route exists but the peer is gone or its queue is full.
        Unreachable = "unreachable",
        /// The request itself is wrong: no router will take it.
        BadRequest = "bad_request",
    }
}

impl BackendError {
    /// Whether another router may deliver what this one could not.
    pub fn try_elsewhere(self) -> bool {
        !matches!(self, BackendError::BadRequest)
    }
}

wire_codes! {
    /// The agent's refusal of a local message (its intake socket):
    /// `{"ok":false,"error":CODE,"detail":TEXT}`.
    LocalCode {
        /// Over `VIGIL_MAX_MESSAGE_BYTES`, before or after filling in.
        TooLarge = "too_large",
        /// Not a UTF-8 JSON object.
        BadJson = "bad_json",
        /// `type` missing or not a local type.
        UnknownType = "unknown_type",
        /// A field of the message is missing or wrong.
        BadField = "bad_field",
        /// The spool holds `VIGIL_SPOOL_MAX_BYTES` already.
        SpoolFull = "spool_full",
        /// The spool's write or fsync failed.
        SpoolError = "spool_error",
        /// Another message with this `id` is still waiting for its ack.
        DuplicateId = "duplicate_id",
        /// A bounded queue in the agent is full: retry.
        Busy = "busy",
    }
}

wire_codes! {
    /// A notification's `severity`, most severe first.
    Severity {
        Critical = "critical",
        Error = "error",
        Warning = "warning",
        Info = "info",
    }
}

/// The severities' wire texts, most severe first, for lists and messages.
pub const SEVERITY_TEXTS: [&str; 4] = [
    Severity::Critical.as_str(),
    Severity::Error.as_str(),
    Severity::Warning.as_str(),
    Severity::Info.as_str(),
];

/// A plugin's outcome, the `status` of a `result`: the Nagios plugin API's
/// exit codes. On the wire it is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginState {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl PluginState {
    pub const ALL: [PluginState; 4] = [
        PluginState::Ok,
        PluginState::Warning,
        PluginState::Critical,
        PluginState::Unknown,
    ];

    /// The state a status number names; `None` outside 0-3.
    pub fn from_code(code: i64) -> Option<PluginState> {
        PluginState::ALL.into_iter().find(|s| *s as i64 == code)
    }

    /// A plugin's exit code as a state: 0-3 as they are, anything else
    /// (including death by a signal, `None`) UNKNOWN, as Nagios does.
    pub fn from_exit(code: Option<i32>) -> PluginState {
        code.and_then(|c| PluginState::from_code(c.into()))
            .unwrap_or(PluginState::Unknown)
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn name(self) -> &'static str {
        match self {
            PluginState::Ok => "OK",
            PluginState::Warning => "WARNING",
            PluginState::Critical => "CRITICAL",
            PluginState::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for PluginState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for PluginState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PluginState, D::Error> {
        let code = i64::deserialize(d)?;
        PluginState::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("status {code} is not 0-3")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_text() {
        for &c in RejectCode::ALL {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(text, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<RejectCode>(&text).unwrap(), c);
        }
        for &c in LocalCode::ALL {
            assert_eq!(LocalCode::from_wire(c.as_str()), Some(c));
        }
        for &c in BackendError::ALL {
            assert_eq!(BackendError::from_wire(c.as_str()), Some(c));
        }
        assert!(serde_json::from_str::<RejectCode>("\"nope\"").is_err());
    }

    #[test]
    fn the_wire_texts_are_pinned() {
        let texts: Vec<&str> = RejectCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            texts,
            [
                "too_large",
                "multipart",
                "bad_json",
                "bad_uuid",
                "forbidden",
                "unknown_type",
                "missing_id",
                "overloaded"
            ]
        );
        for (i, c) in RejectCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in declaration order");
        }
        let texts: Vec<&str> = BackendError::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(texts, ["unknown_client", "unreachable", "bad_request"]);
        let texts: Vec<&str> = LocalCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            texts,
            [
                "too_large",
                "bad_json",
                "unknown_type",
                "bad_field",
                "spool_full",
                "spool_error",
                "duplicate_id",
                "busy"
            ]
        );
        let texts: Vec<&str> = Severity::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(texts, ["critical", "error", "warning", "info"]);
    }

    #[test]
    fn plugin_states_are_the_nagios_numbers() {
        assert_eq!(serde_json::to_string(&PluginState::Unknown).unwrap(), "3");
        assert_eq!(
            serde_json::from_str::<PluginState>("1").unwrap(),
            PluginState::Warning
        );
        assert!(serde_json::from_str::<PluginState>("4").is_err());
        assert_eq!(PluginState::from_exit(Some(2)), PluginState::Critical);
        assert_eq!(PluginState::from_exit(Some(7)), PluginState::Unknown);
        assert_eq!(PluginState::from_exit(None), PluginState::Unknown);
        assert_eq!(PluginState::Ok.name(), "OK");
    }
}
