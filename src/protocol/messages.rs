//! The messages of `docs/PROTOCOL.md` as Rust types: what clients send
//! (with the envelope every one carries), what the back end sends to
//! clients, and what a router answers a client with.
//!
//! vigil's parts write every message through these types, so the field
//! names and shapes live here once; the tests at the bottom pin the exact
//! JSON text other implementations see. Client messages and the back
//! end's `run_plugin` are written with their keys sorted ([`sorted_frame`]):
//! that is the text vigil has always sent (it built them as
//! `serde_json::Value`, whose map is ordered), and what reaches a client
//! ([`ToClient`]) keeps its declaration order, `type` first, the exact
//! text `docs/PROTOCOL.md` gives. Readers that must accept what
//! other clients send (the sinks, the agent's intake) check fields through
//! [`super::envelope`], which names what is wrong instead of failing on the
//! first unknown shape.

use super::codes::{PluginState, RejectCode, Severity};
use super::envelope::Malformed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The message type every router answers itself.
pub const HELLO: &str = "hello";

/// A message a client sends: its body, with its `type`.
pub trait ClientMessage: Serialize {
    /// The `type` field.
    const TYPE: &'static str;
}

/// A client message with its envelope, as one frame's object:
/// `{"uuid":…,"type":…,"id":…,"ack":…,"ts":…, body fields…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Framed<'a, M> {
    pub uuid: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
    pub ts: f64,
    #[serde(flatten)]
    pub body: &'a M,
}

impl<'a, M: ClientMessage> Framed<'a, M> {
    /// `body` from `uuid`, sent without `ack`, stamped `ts`.
    pub fn new(uuid: &'a str, ts: f64, body: &'a M) -> Framed<'a, M> {
        Framed {
            uuid,
            kind: M::TYPE,
            id: None,
            ack: false,
            ts,
            body,
        }
    }

    /// The message with an `id` (and `ack` as given).
    pub fn with_id(mut self, id: &'a str, ack: bool) -> Framed<'a, M> {
        self.id = Some(id);
        self.ack = ack;
        self
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a client message always serializes")
    }

    /// The frame, keys sorted (see the module's note).
    pub fn to_frame(&self) -> Vec<u8> {
        sorted_frame(self)
    }
}

/// `msg` as one frame with every object's keys sorted, nested ones too:
/// the text vigil's agent, scheduler and `vigil send` have always written.
pub fn sorted_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let value = serde_json::to_value(msg).expect("a message always serializes");
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// `hello`: asks a router for `welcome`; nothing besides the envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hello {}

impl ClientMessage for Hello {
    const TYPE: &'static str = HELLO;
}

/// `heartbeat`: the client is alive and says when to expect the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub hostname: String,
    pub interval_s: u64,
}

impl ClientMessage for Heartbeat {
    const TYPE: &'static str = "heartbeat";
}

/// `stats`: metrics by dotted name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub hostname: String,
    /// Who measured them (`statsd`, `vigil-agent`): a vigil extra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The aggregation interval, seconds: a vigil extra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
    /// Values as JSON: statsd's floats and the agent's integer counters
    /// keep their own number form.
    pub metrics: BTreeMap<String, serde_json::Value>,
}

impl ClientMessage for Stats {
    const TYPE: &'static str = "stats";
}

/// `registration`: a host or a local process and the plugins it declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub hostname: String,
    pub process: Process,
    #[serde(default)]
    pub plugins: Vec<PluginDecl>,
}

impl ClientMessage for Registration {
    const TYPE: &'static str = "registration";
}

/// The process a registration announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One plugin of a registration. Without `interval_s` (written as `null`)
/// it is declared for runs on request only, never scheduled; without
/// `command` it names a plugin of the agent's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDecl {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub interval_s: Option<f64>,
    pub timeout_s: f64,
}

/// `notification`: an error, a warning, a recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub message: String,
    /// Written as `null` when unknown, as vigil's own notifications always
    /// carried it.
    #[serde(default)]
    pub hostname: Option<String>,
    /// A return to normal; only vigil's own notifications carry it (sinks
    /// drop it from clients').
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovery: bool,
}

impl ClientMessage for Notification {
    const TYPE: &'static str = "notification";
}

/// `result`: one plugin run's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResult {
    pub hostname: String,
    pub plugin: String,
    pub status: PluginState,
    pub output: String,
    /// The plugin's lines after the first (vigil extra).
    #[serde(default)]
    pub long_output: String,
    #[serde(default)]
    pub perfdata: Vec<Perfdata>,
    pub duration_ms: u64,
    /// Present when the run was asked for by `run_plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Killed at its timeout (vigil extra).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Output cut at the cap (vigil extra).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl ClientMessage for PluginResult {
    const TYPE: &'static str = "result";
}

/// One performance datum of a `result`, per the Nagios plugin guidelines:
/// `label=value[unit];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Perfdata {
    pub label: String,
    /// `None` for `U` (undetermined).
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub warn: Option<String>,
    pub crit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// What reaches a client from a router: the router's own replies
/// (`welcome`, `error`) and the back end's messages (`ack`, `run_plugin`),
/// tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToClient {
    /// A router's answer to `hello`.
    Welcome { uuid: String, router: String },
    /// A router's refusal of a client message.
    Error {
        error: RejectCode,
        detail: String,
        /// The refused message's `id`, when it had a string one.
        id: Option<String>,
    },
    /// A sink handled the message `id` that asked for an ack.
    Ack {
        #[serde(default)]
        to: String,
        id: String,
    },
    /// Run a declared plugin and answer with a `result` carrying `run_id`.
    RunPlugin {
        #[serde(default)]
        to: String,
        plugin: String,
        #[serde(default)]
        run_id: Option<String>,
    },
}

impl ToClient {
    pub fn to_frame(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message to a client always serializes")
    }

    /// Reads a frame a client received; the error says what was wrong.
    pub fn parse(frame: &[u8]) -> Result<ToClient, Malformed> {
        serde_json::from_slice(frame).map_err(|e| Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";

    fn text<M: ClientMessage>(m: &M) -> String {
        String::from_utf8(Framed::new(U, 1764072605.5, m).to_frame()).unwrap()
    }

    #[test]
    fn client_messages_text_is_pinned() {
        assert_eq!(
            text(&Hello {}),
            format!(r#"{{"ts":1764072605.5,"type":"hello","uuid":"{U}"}}"#)
        );
        let hb = Heartbeat {
            hostname: "web1".into(),
            interval_s: 30,
        };
        assert_eq!(
            text(&hb),
            format!(
                r#"{{"hostname":"web1","interval_s":30,"ts":1764072605.5,"type":"heartbeat","uuid":"{U}"}}"#
            )
        );
        let stats = Stats {
            hostname: "web1".into(),
            source: Some("statsd".into()),
            interval_s: Some(10),
            metrics: [("a.b".to_string(), 1.into())].into_iter().collect(),
        };
        assert_eq!(
            text(&stats),
            format!(
                r#"{{"hostname":"web1","interval_s":10,"metrics":{{"a.b":1}},"source":"statsd","ts":1764072605.5,"type":"stats","uuid":"{U}"}}"#
            )
        );
        let reg = Registration {
            hostname: "web1".into(),
            process: Process {
                name: "app".into(),
                pid: Some(42),
                version: None,
            },
            plugins: vec![PluginDecl {
                name: "load".into(),
                command: Some("/bin/true".into()),
                interval_s: None,
                timeout_s: 5.0,
            }],
        };
        assert_eq!(
            text(&reg),
            format!(
                r#"{{"hostname":"web1","plugins":[{{"command":"/bin/true","interval_s":null,"name":"load","timeout_s":5.0}}],"process":{{"name":"app","pid":42}},"ts":1764072605.5,"type":"registration","uuid":"{U}"}}"#
            )
        );
    }

    #[test]
    fn notification_and_result_text_is_pinned() {
        let n = Notification {
            severity: Severity::Error,
            source: Some("backup".into()),
            message: "disk full".into(),
            hostname: None,
            recovery: false,
        };
        let framed = Framed::new(U, 5.0, &n).with_id("n-1", true);
        assert_eq!(
            String::from_utf8(framed.to_frame()).unwrap(),
            format!(
                r#"{{"ack":true,"hostname":null,"id":"n-1","message":"disk full","severity":"error","source":"backup","ts":5.0,"type":"notification","uuid":"{U}"}}"#
            )
        );
        let r = PluginResult {
            hostname: "h".into(),
            plugin: "load".into(),
            status: PluginState::Unknown,
            output: "UNKNOWN: x".into(),
            long_output: String::new(),
            perfdata: vec![Perfdata {
                label: "l".into(),
                value: Some(0.5),
                unit: None,
                warn: Some("1".into()),
                crit: None,
                min: Some(0.0),
                max: None,
            }],
            duration_ms: 7,
            run_id: Some("r1".into()),
            timed_out: true,
            truncated: false,
        };
        assert_eq!(
            text(&r),
            format!(
                r#"{{"duration_ms":7,"hostname":"h","long_output":"","output":"UNKNOWN: x","perfdata":[{{"crit":null,"label":"l","max":null,"min":0.0,"unit":null,"value":0.5,"warn":"1"}}],"plugin":"load","run_id":"r1","status":3,"timed_out":true,"ts":1764072605.5,"type":"result","uuid":"{U}"}}"#
            )
        );
    }

    #[test]
    fn messages_to_clients_text_is_pinned() {
        let cases = [
            (
                ToClient::Ack {
                    to: U.into(),
                    id: "m\"1".into(),
                },
                format!(r#"{{"type":"ack","to":"{U}","id":"m\"1"}}"#),
            ),
            (
                ToClient::RunPlugin {
                    to: U.into(),
                    plugin: "load".into(),
                    run_id: Some("r1".into()),
                },
                format!(r#"{{"type":"run_plugin","to":"{U}","plugin":"load","run_id":"r1"}}"#),
            ),
            (
                ToClient::Welcome {
                    uuid: U.into(),
                    router: "r1".into(),
                },
                format!(r#"{{"type":"welcome","uuid":"{U}","router":"r1"}}"#),
            ),
            (
                ToClient::Error {
                    error: RejectCode::Overloaded,
                    detail: "full".into(),
                    id: None,
                },
                r#"{"type":"error","error":"overloaded","detail":"full","id":null}"#.to_string(),
            ),
        ];
        for (msg, text) in cases {
            assert_eq!(String::from_utf8(msg.to_frame()).unwrap(), text);
            assert_eq!(ToClient::parse(text.as_bytes()).unwrap(), msg);
        }
    }

    #[test]
    fn what_a_client_cannot_read_says_why() {
        assert!(ToClient::parse(b"[]").is_err());
        assert!(ToClient::parse(br#"{"type":"ack","id":3}"#).is_err());
        assert!(ToClient::parse(br#"{"type":"reboot"}"#).is_err());
        assert!(ToClient::parse(br#"{"type":"error","error":"what","detail":""}"#).is_err());
        // Extra fields are ignored, as the protocol asks of readers.
        assert_eq!(
            ToClient::parse(br#"{"type":"ack","to":"x","id":"m","extra":1}"#).unwrap(),
            ToClient::Ack {
                to: "x".into(),
                id: "m".into()
            }
        );
    }
}
