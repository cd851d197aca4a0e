//! Local intake: the socket local processes (and `vigil send`) hand their
//! messages to, on `VIGIL_AGENT_LOCAL`.
//!
//! A request is one JSON object (a message without `uuid`); the agent fills
//! in `uuid`, `ts`, `id` and `hostname` when absent. The reply is
//! `{"ok":true,"id":ID}` or `{"ok":false,"error":CODE,"detail":TEXT}`. An
//! acked message (`"ack":true`) is answered only once it is fsynced in the
//! spool. The socket is a ROUTER speaking to REQ peers, so many senders
//! can wait on the spool at once and share one fsync.
//!
//! Architecture invariant: nothing in this loop blocks except `zmq::poll`,
//! which the doorbell interrupts.

use super::link::{LinkTx, ToLink};
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use super::plugins::declare::{self, Declaration};
use super::plugins::{PluginEvent, PluginTx};
use super::spool::Entry;
use super::spool_thread::{AppendRefusal, Completion, SpoolCmd};
use crate::doorbell::Doorbell;
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Types a local process may send.
pub const LOCAL_TYPES: [&str; 5] = [
    "registration",
    "heartbeat",
    "stats",
    "notification",
    "result",
];
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];
/// Frames kept of one request (routing id, delimiter, body, spare).
const MAX_FRAMES: usize = 8;
const BURST: usize = 256;
/// Acked requests waiting for the spool, at most; more are told `busy`.
const PENDING_MAX: usize = 4096;

/// Why a local message was refused: the reply's `error` and `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub detail: String,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
    }
}

impl Refusal {
    pub fn to_reply(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({"ok": false, "error": self.code, "detail": self.detail}))
            .expect("reply serializes")
    }
}

pub fn ok_reply(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"ok": true, "id": id})).expect("reply serializes")
}

/// A local message made ready for the routers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub kind: Kind,
    pub id: String,
    pub ack: bool,
    pub frame: Vec<u8>,
    /// For a registration: the process name and its plugins.
    pub registration: Option<(String, Vec<Declaration>)>,
}

/// Checks a local request and fills in the envelope. Pure: `fresh_id` and
/// `now` are given.
pub fn prepare(
    body: &[u8],
    uuid: &str,
    hostname: &str,
    max_bytes: usize,
    fresh_id: impl FnOnce() -> String,
    now: f64,
) -> Result<Prepared, Refusal> {
    if body.len() > max_bytes {
        return Err(refuse(
            "too_large",
            format!("message is {} bytes; the limit is {max_bytes}", body.len()),
        ));
    }
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(refuse("bad_json", "the message must be a JSON object")),
        Err(e) => return Err(refuse("bad_json", format!("invalid JSON: {e}"))),
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) if LOCAL_TYPES.contains(&t.as_str()) => t.clone(),
        Some(Value::String(t)) => {
            return Err(refuse(
                "unknown_type",
                format!("type {t:?} is not one of {}", LOCAL_TYPES.join(", ")),
            ))
        }
        _ => return Err(refuse("unknown_type", "type is missing or not a string")),
    };
    let ack = match obj.get("ack") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(refuse("bad_field", "ack must be true or false")),
    };
    let id = match obj.get("id") {
        None => fresh_id(),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 => id.clone(),
        Some(_) => {
            return Err(refuse(
                "bad_field",
                "id must be a string of 1-128 characters",
            ))
        }
    };
    match obj.get("ts") {
        None => {
            obj.insert("ts".into(), json!(now));
        }
        Some(v) if v.is_number() => {}
        Some(_) => return Err(refuse("bad_field", "ts must be a number (Unix seconds)")),
    }
    if let Some(other) = obj.get("uuid").and_then(Value::as_str) {
        if !other.eq_ignore_ascii_case(uuid) {
            return Err(refuse(
                "bad_field",
                "uuid is filled in by the agent; leave it out",
            ));
        }
    }
    check_type_fields(&kind, &obj)?;
    let registration = if kind == "registration" {
        Some(registration_plugins(&obj)?)
    } else {
        None
    };
    obj.insert("uuid".into(), json!(uuid));
    obj.insert("id".into(), json!(id));
    obj.entry("hostname").or_insert(json!(hostname));
    let frame = serde_json::to_vec(&Value::Object(obj)).expect("serializes");
    if frame.len() > max_bytes {
        return Err(refuse(
            "too_large",
            "message is over the limit once filled in",
        ));
    }
    Ok(Prepared {
        kind: if kind == "stats" {
            Kind::Stats
        } else {
            Kind::Other
        },
        id,
        ack,
        frame,
        registration,
    })
}

fn check_type_fields(kind: &str, obj: &Map<String, Value>) -> Result<(), Refusal> {
    let string = |k: &str| obj.get(k).and_then(Value::as_str);
    match kind {
        "notification" => {
            match string("severity") {
                Some(s) if SEVERITIES.contains(&s) => {}
                _ => {
                    return Err(refuse(
                        "bad_field",
                        format!("severity must be one of {}", SEVERITIES.join(", ")),
                    ))
                }
            }
            if string("message").is_none() {
                return Err(refuse("bad_field", "message (a string) is required"));
            }
        }
        "stats" => {
            let ok = obj
                .get("metrics")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty() && m.values().all(Value::is_number));
            if !ok {
                return Err(refuse(
                    "bad_field",
                    "metrics must be a non-empty object of numbers",
                ));
            }
        }
        "heartbeat" => {
            let ok = obj
                .get("interval_s")
                .and_then(Value::as_f64)
                .is_some_and(|i| i > 0.0);
            if !ok {
                return Err(refuse("bad_field", "interval_s (seconds, > 0) is required"));
            }
        }
        "result" => {
            let status_ok = obj
                .get("status")
                .and_then(Value::as_i64)
                .is_some_and(|s| (0..=3).contains(&s));
            if string("plugin").is_none() || !status_ok {
                return Err(refuse(
                    "bad_field",
                    "plugin (string) and status (0-3) are required",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn registration_plugins(obj: &Map<String, Value>) -> Result<(String, Vec<Declaration>), Refusal> {
    let process = obj
        .get("process")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 128)
        .ok_or_else(|| refuse("bad_field", "process.name (a string) is required"))?;
    if process == "vigil-agent" {
        return Err(refuse(
            "bad_field",
            "process name vigil-agent is the agent's own",
        ));
    }
    let mut plugins = Vec::new();
    match obj.get("plugins") {
        None => {}
        Some(Value::Array(list)) => {
            for item in list {
                let decl = declare::from_json(item, process)
                    .map_err(|e| refuse("bad_field", e.to_string()))?;
                if plugins.iter().any(|d: &Declaration| d.name == decl.name) {
                    return Err(refuse(
                        "bad_field",
                        format!("plugin {} listed twice", decl.name),
                    ));
                }
                plugins.push(decl);
            }
        }
        Some(_) => return Err(refuse("bad_field", "plugins must be a list")),
    }
    Ok((process.to_string(), plugins))
}

pub struct IntakeThread {
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub completions: Receiver<Completion>,
    pub spool: Sender<SpoolCmd>,
    pub link: LinkTx,
    pub plugins: PluginTx,
    pub uuid: String,
    pub hostname: String,
    pub max_message_bytes: usize,
    pub metrics: Arc<AgentMetrics>,
    pub shutdown: ShutdownWatch,
    pub drain: Duration,
}

impl IntakeThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        let mut waiting: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        let mut next_token = 0u64;
        loop {
            let readable = self.bell.wait(&self.socket, zmq::POLLIN, -1)?;
            self.answer_completions(&mut waiting);
            if self.shutdown.is_set() {
                break;
            }
            if readable {
                for _ in 0..BURST {
                    let Some(frames) = self.recv_request()? else {
                        break;
                    };
                    self.serve(frames, &mut waiting, &mut next_token);
                }
            }
        }
        // Senders waiting on the spool get their answer before we go.
        // Dropping our sender lets the spool thread end once it is done.
        drop(std::mem::replace(
            &mut self.spool,
            crossbeam_channel::bounded(1).0,
        ));
        let deadline = Instant::now() + self.drain.max(Duration::from_secs(1));
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.completions.recv_timeout(left) {
                Ok(c) => self.complete(c, &mut waiting),
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn recv_request(&self) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
        let mut frames = Vec::new();
        loop {
            match self.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(frame) => {
                    if frames.len() < MAX_FRAMES {
                        frames.push(frame);
                    }
                }
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) if frames.is_empty() => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            if !self.socket.get_rcvmore()? {
                return Ok(Some(frames));
            }
        }
    }

    fn serve(
        &mut self,
        mut frames: Vec<Vec<u8>>,
        waiting: &mut HashMap<u64, Vec<Vec<u8>>>,
        next_token: &mut u64,
    ) {
        let body = frames.pop().unwrap_or_default();
        let envelope = frames;
        let prepared = prepare(
            &body,
            &self.uuid,
            &self.hostname,
            self.max_message_bytes,
            || uuid::Uuid::new_v4().to_string(),
            super::message::now_secs(),
        );
        let prepared = match prepared {
            Ok(p) => p,
            Err(r) => return self.reply_refusal(envelope, &r),
        };
        if let Some((process, plugins)) = &prepared.registration {
            self.plugins.send(PluginEvent::Local {
                process: process.clone(),
                plugins: plugins.clone(),
            });
        }
        if prepared.ack {
            if waiting.len() >= PENDING_MAX {
                return self.reply_refusal(
                    envelope,
                    &refuse(
                        "busy",
                        "too many acked messages waiting for the disk; retry",
                    ),
                );
            }
            let token = *next_token;
            *next_token += 1;
            let cmd = SpoolCmd::Append {
                entry: Entry {
                    id: prepared.id,
                    frame: prepared.frame,
                },
                token,
            };
            match self.spool.try_send(cmd) {
                Ok(()) => {
                    waiting.insert(token, envelope);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.reply_refusal(envelope, &refuse("busy", "the spool is busy; retry"))
                }
            }
            return;
        }
        let item = ToLink::Send(Outgoing {
            kind: prepared.kind,
            frame: prepared.frame,
        });
        match self.link.try_send(item) {
            Ok(()) => {
                AgentMetrics::add(&self.metrics.local_accepted, 1);
                self.reply(envelope, &ok_reply(&prepared.id));
            }
            Err(_) => self.reply_refusal(
                envelope,
                &refuse("busy", "the agent's send queue is full; retry"),
            ),
        }
    }

    fn answer_completions(&mut self, waiting: &mut HashMap<u64, Vec<Vec<u8>>>) {
        while let Ok(c) = self.completions.try_recv() {
            self.complete(c, waiting);
        }
    }

    fn complete(&mut self, c: Completion, waiting: &mut HashMap<u64, Vec<Vec<u8>>>) {
        let Some(envelope) = waiting.remove(&c.token) else {
            return;
        };
        match c.result {
            Ok(id) => {
                AgentMetrics::add(&self.metrics.local_accepted, 1);
                self.reply(envelope, &ok_reply(&id));
            }
            Err(AppendRefusal::Full { live, max }) => self.reply_refusal(
                envelope,
                &refuse(
                    "spool_full",
                    format!(
                        "the spool holds {live} bytes of unacknowledged messages; the limit \
                         (VIGIL_SPOOL_MAX_BYTES) is {max}"
                    ),
                ),
            ),
            Err(AppendRefusal::Io(e)) => self.reply_refusal(envelope, &refuse("spool_error", e)),
            Err(AppendRefusal::DuplicateId(id)) => self.reply_refusal(
                envelope,
                &refuse(
                    "duplicate_id",
                    format!("a different message with id {id:?} is still waiting for its ack"),
                ),
            ),
        }
    }

    fn reply_refusal(&mut self, envelope: Vec<Vec<u8>>, refusal: &Refusal) {
        AgentMetrics::add(&self.metrics.local_refused, 1);
        log::debug!(
            "refused a local message: {}: {}",
            refusal.code,
            refusal.detail
        );
        self.reply(envelope, &refusal.to_reply());
    }

    /// A reply to a sender that has gone is dropped, as REP would.
    fn reply(&mut self, envelope: Vec<Vec<u8>>, body: &[u8]) {
        if envelope.is_empty() {
            return;
        }
        let mut frames: Vec<&[u8]> = envelope.iter().map(Vec::as_slice).collect();
        frames.push(body);
        let _ = self.socket.send_multipart(frames, zmq::DONTWAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";

    fn prep(body: &str) -> Result<Prepared, Refusal> {
        prepare(body.as_bytes(), U, "h1", 4096, || "fresh".into(), 100.5)
    }

    #[test]
    fn fills_in_the_envelope() {
        let p = prep(r#"{"type":"notification","severity":"error","source":"cron","message":"m","ack":true}"#).unwrap();
        assert!(p.ack);
        assert_eq!(p.id, "fresh");
        let v: Value = serde_json::from_slice(&p.frame).unwrap();
        assert_eq!(v["uuid"], U);
        assert_eq!(v["id"], "fresh");
        assert_eq!(v["ts"], 100.5);
        assert_eq!(v["hostname"], "h1");
        let p = prep(r#"{"type":"stats","metrics":{"a":1},"id":"mine","ts":5,"hostname":"x"}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&p.frame).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["ts"].as_i64(), v["hostname"].as_str()),
            (Some("mine"), Some(5), Some("x"))
        );
        assert_eq!(p.kind, Kind::Stats);
    }

    #[test]
    fn refusals_say_why() {
        let code = |b: &str| prep(b).unwrap_err().code;
        assert_eq!(code("nope"), "bad_json");
        assert_eq!(code("[1]"), "bad_json");
        assert_eq!(code(r#"{"type":"hello"}"#), "unknown_type");
        assert_eq!(code(r#"{"severity":"error"}"#), "unknown_type");
        assert_eq!(
            code(r#"{"type":"notification","severity":"meh","message":"m"}"#),
            "bad_field"
        );
        assert_eq!(
            code(r#"{"type":"notification","severity":"info"}"#),
            "bad_field"
        );
        assert_eq!(code(r#"{"type":"stats","metrics":{"a":"x"}}"#), "bad_field");
        assert_eq!(
            code(r#"{"type":"stats","metrics":{"a":1},"ack":1}"#),
            "bad_field"
        );
        assert_eq!(
            code(r#"{"type":"stats","metrics":{"a":1},"id":7}"#),
            "bad_field"
        );
        assert_eq!(code(r#"{"type":"heartbeat"}"#), "bad_field");
        assert_eq!(code(r#"{"type":"registration","process":{}}"#), "bad_field");
        assert_eq!(
            code(
                r#"{"type":"stats","metrics":{"a":1},"uuid":"11111111-1111-1111-1111-111111111111"}"#
            ),
            "bad_field"
        );
        let big = format!(
            r#"{{"type":"stats","metrics":{{"a":1}},"pad":"{}"}}"#,
            "x".repeat(5000)
        );
        assert_eq!(code(&big), "too_large");
    }

    #[test]
    fn registration_declares_plugins() {
        let p = prep(
            r#"{"type":"registration","process":{"name":"app","pid":7},
                "plugins":[{"name":"q","command":"/bin/true","interval_s":60}]}"#,
        )
        .unwrap();
        let (process, plugins) = p.registration.unwrap();
        assert_eq!(process, "app");
        assert_eq!(plugins[0].name, "q");
        assert!(prep(r#"{"type":"registration","process":{"name":"vigil-agent"}}"#).is_err());
    }
}
