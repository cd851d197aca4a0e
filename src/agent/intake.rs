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
//! Whoever can connect here speaks as this host, and can ask it to run
//! plugins, so the intake is guarded (PROTOCOL.md, "The local intake and
//! plugins"): the ipc socket is mode 0660 in a directory no one else can
//! write (created 0750 when missing; an existing one writable by group or
//! others, or owned by another user, stops the start); a registration may
//! declare plugins only by name (the plugin directory's entry of that
//! name) unless `VIGIL_AGENT_LOCAL_COMMANDS=1`.
//!
//! Architecture invariant: nothing in this loop blocks except `zmq::poll`,
//! which the doorbell interrupts.

use super::channels::{AppendRefusal, Completion, LinkTx, PluginEvent, PluginTx, SpoolCmd, ToLink};
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use super::plugins::declare::{self, Declaration};
use super::plugins::local::LocalBook;
use super::spool::Entry;
use crate::doorbell::Doorbell;
use crate::protocol::codes::SEVERITY_TEXTS;
use crate::protocol::{
    ClientMessage, Heartbeat, LocalCode, LocalReply, Notification, PluginResult, PluginState,
    Registration, Severity, Stats,
};
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Types a local process may send.
pub const LOCAL_TYPES: [&str; 5] = [
    Registration::TYPE,
    Heartbeat::TYPE,
    Stats::TYPE,
    Notification::TYPE,
    PluginResult::TYPE,
];
/// Frames kept of one request (routing id, delimiter, body, spare).
const MAX_FRAMES: usize = 8;
const BURST: usize = 256;
/// Acked requests waiting for the spool, at most; more are told `busy`.
const PENDING_MAX: usize = 4096;

/// Why a local message was refused: the reply's `error` and `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: LocalCode,
    pub detail: String,
}

fn refuse(code: LocalCode, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
    }
}

impl Refusal {
    pub fn to_reply(&self) -> Vec<u8> {
        LocalReply::Refused {
            code: self.code,
            detail: self.detail.clone(),
        }
        .to_frame()
    }
}

pub fn ok_reply(id: &str) -> Vec<u8> {
    LocalReply::Accepted { id: id.to_string() }.to_frame()
}

/// A local message made ready for the routers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub kind: Kind,
    pub id: String,
    pub ack: bool,
    pub frame: Vec<u8>,
    /// Its supersession key in the send queue (see `outqueue.rs`), worked
    /// out from the object before it became `frame`.
    pub key: Option<String>,
    /// For a registration: the process name and its plugins.
    pub registration: Option<(String, Vec<Declaration>)>,
}

/// Makes the directory of the intake socket `path`: created mode 0750
/// when missing; an existing one must be owned by this user (or root) and
/// not writable by group or others, or anyone could replace the socket
/// with their own and read what local processes send. A directory others
/// may only read is accepted: the socket's own mode 0660 keeps them from
/// connecting.
pub fn prepare_ipc_dir(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Err("the ipc path needs a directory".into()),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // The umask may have taken bits away; never more than 0750.
        set_mode(dir, 0o750)?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, not to this user or root; its owner could replace the socket",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {mode:04o}): anyone there could replace              the socket; chmod 750 it or choose another directory",
            dir.display()
        ));
    }
    Ok(())
}

/// Sets the bound socket's mode to 0660: the agent's user and group.
pub fn restrict_socket(path: &std::path::Path) -> Result<(), String> {
    set_mode(path, 0o660)
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {mode:o} {}: {e}", path.display()))
}

/// What a local request may do, beside the envelope it is filled into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `VIGIL_AGENT_LOCAL_COMMANDS=1`: plugins may carry a `command`.
    pub commands: bool,
}

/// Checks a local request and fills in the envelope. Pure: `fresh_id` and
/// `now` are given.
pub fn prepare(
    body: &[u8],
    uuid: &str,
    hostname: &str,
    max_bytes: usize,
    policy: Policy,
    fresh_id: impl FnOnce() -> String,
    now: f64,
) -> Result<Prepared, Refusal> {
    if body.len() > max_bytes {
        return Err(refuse(
            LocalCode::TooLarge,
            format!("message is {} bytes; the limit is {max_bytes}", body.len()),
        ));
    }
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            return Err(refuse(
                LocalCode::BadJson,
                "the message must be a JSON object",
            ))
        }
        Err(e) => return Err(refuse(LocalCode::BadJson, format!("invalid JSON: {e}"))),
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) if LOCAL_TYPES.contains(&t.as_str()) => t.clone(),
        Some(Value::String(t)) => {
            return Err(refuse(
                LocalCode::UnknownType,
                format!("type {t:?} is not one of {}", LOCAL_TYPES.join(", ")),
            ))
        }
        _ => {
            return Err(refuse(
                LocalCode::UnknownType,
                "type is missing or not a string",
            ))
        }
    };
    let ack = match obj.get("ack") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(refuse(LocalCode::BadField, "ack must be true or false")),
    };
    let id = match obj.get("id") {
        None => fresh_id(),
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 => id.clone(),
        Some(_) => {
            return Err(refuse(
                LocalCode::BadField,
                "id must be a string of 1-128 characters",
            ))
        }
    };
    match obj.get("ts") {
        None => {
            obj.insert("ts".into(), json!(now));
        }
        Some(v) if v.is_number() => {}
        Some(_) => {
            return Err(refuse(
                LocalCode::BadField,
                "ts must be a number (Unix seconds)",
            ))
        }
    }
    if let Some(other) = obj.get("uuid").and_then(Value::as_str) {
        if !other.eq_ignore_ascii_case(uuid) {
            return Err(refuse(
                LocalCode::BadField,
                "uuid is filled in by the agent; leave it out",
            ));
        }
    }
    check_type_fields(&kind, &obj)?;
    let registration = if kind == Registration::TYPE {
        let (process, plugins) = registration_plugins(&obj, policy)?;
        // Forwarded as the agent understood them (a timeout filled in, no
        // command for one declared by name), so the sinks store what runs.
        if obj.contains_key("plugins") {
            let list: Vec<_> = plugins.iter().map(Declaration::to_decl).collect();
            obj.insert("plugins".into(), json!(list));
        }
        Some((process, plugins))
    } else {
        None
    };
    obj.insert("uuid".into(), json!(uuid));
    obj.insert("id".into(), json!(id));
    obj.entry("hostname").or_insert(json!(hostname));
    let value = Value::Object(obj);
    let frame = serde_json::to_vec(&value).expect("serializes");
    if frame.len() > max_bytes {
        return Err(refuse(
            LocalCode::TooLarge,
            "message is over the limit once filled in",
        ));
    }
    let kind = if kind == Stats::TYPE {
        Kind::Stats
    } else {
        Kind::Other
    };
    Ok(Prepared {
        kind,
        id,
        ack,
        frame,
        key: super::outqueue::supersession_key(kind, Some(&value)),
        registration,
    })
}

fn check_type_fields(kind: &str, obj: &Map<String, Value>) -> Result<(), Refusal> {
    let string = |k: &str| obj.get(k).and_then(Value::as_str);
    match kind {
        "notification" => {
            if string("severity").and_then(Severity::from_wire).is_none() {
                return Err(refuse(
                    LocalCode::BadField,
                    format!("severity must be one of {}", SEVERITY_TEXTS.join(", ")),
                ));
            }
            if string("message").is_none() {
                return Err(refuse(
                    LocalCode::BadField,
                    "message (a string) is required",
                ));
            }
        }
        "stats" => {
            let ok = obj
                .get("metrics")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty() && m.values().all(Value::is_number));
            if !ok {
                return Err(refuse(
                    LocalCode::BadField,
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
                return Err(refuse(
                    LocalCode::BadField,
                    "interval_s (seconds, > 0) is required",
                ));
            }
        }
        "result" => {
            let status_ok = obj
                .get("status")
                .and_then(Value::as_i64)
                .and_then(PluginState::from_code)
                .is_some();
            if string("plugin").is_none() || !status_ok {
                return Err(refuse(
                    LocalCode::BadField,
                    "plugin (string) and status (0-3) are required",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn registration_plugins(
    obj: &Map<String, Value>,
    policy: Policy,
) -> Result<(String, Vec<Declaration>), Refusal> {
    let process = obj
        .get("process")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 128)
        .ok_or_else(|| refuse(LocalCode::BadField, "process.name (a string) is required"))?;
    if process == "vigil-agent" {
        return Err(refuse(
            LocalCode::BadField,
            "process name vigil-agent is the agent's own",
        ));
    }
    let mut plugins = Vec::new();
    match obj.get("plugins") {
        None => {}
        Some(Value::Array(list)) => {
            for item in list {
                if item.get("command").is_some() && !policy.commands {
                    return Err(refuse(
                        LocalCode::BadField,
                        "a local registration may not carry a plugin command: declare the \
                         plugin by name (its command comes from the agent's plugin directory), \
                         or the operator sets VIGIL_AGENT_LOCAL_COMMANDS=1",
                    ));
                }
                let decl = declare::from_json(item, process)
                    .map_err(|e| refuse(LocalCode::BadField, e))?;
                if plugins.iter().any(|d: &Declaration| d.name == decl.name) {
                    return Err(refuse(
                        LocalCode::BadField,
                        format!("plugin {} listed twice", decl.name),
                    ));
                }
                plugins.push(decl);
            }
        }
        Some(_) => return Err(refuse(LocalCode::BadField, "plugins must be a list")),
    }
    Ok((process.to_string(), plugins))
}

/// Refuses a registration over the bounds on local declarations
/// ([`super::plugins::local`]) here, where the sender learns why, before
/// it reaches the plugin manager or the routers.
fn admit_registration(book: &mut LocalBook, prepared: Prepared) -> Result<Prepared, Refusal> {
    if let Some((process, plugins)) = &prepared.registration {
        book.admit(process, plugins.len())
            .map_err(|e| refuse(LocalCode::BadField, format!("plugins: {e}")))?;
    }
    Ok(prepared)
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
    pub policy: Policy,
    pub metrics: Arc<AgentMetrics>,
    pub shutdown: ShutdownWatch,
    pub drain: Duration,
}

impl IntakeThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        let mut waiting: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        let mut next_token = 0u64;
        let mut book = LocalBook::default();
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
                    self.serve(frames, &mut waiting, &mut next_token, &mut book);
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
        // The replies still in the socket get what is left of the drain,
        // not the configured linger on top of it.
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.socket.set_linger(super::link::linger_ms(left)) {
            log::warn!("cannot shorten the local socket's linger: {e}");
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
        book: &mut LocalBook,
    ) {
        let body = frames.pop().unwrap_or_default();
        let envelope = frames;
        let prepared = prepare(
            &body,
            &self.uuid,
            &self.hostname,
            self.max_message_bytes,
            self.policy,
            || uuid::Uuid::new_v4().to_string(),
            crate::clock::unix_secs_ms(),
        );
        let prepared = match prepared.and_then(|p| admit_registration(book, p)) {
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
                        LocalCode::Busy,
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
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self
                    .reply_refusal(
                        envelope,
                        &refuse(LocalCode::Busy, "the spool is busy; retry"),
                    ),
            }
            return;
        }
        let item = ToLink::Send(Outgoing::keyed(
            prepared.kind,
            prepared.frame,
            Some(prepared.id.clone()),
            prepared.key,
        ));
        match self.link.try_send(item) {
            Ok(()) => {
                AgentMetrics::add(&self.metrics.local_accepted, 1);
                self.reply(envelope, &ok_reply(&prepared.id));
            }
            Err(_) => self.reply_refusal(
                envelope,
                &refuse(LocalCode::Busy, "the agent's send queue is full; retry"),
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
                    LocalCode::SpoolFull,
                    format!(
                        "the spool holds {live} bytes of unacknowledged messages; the limit \
                         (VIGIL_SPOOL_MAX_BYTES) is {max}"
                    ),
                ),
            ),
            Err(AppendRefusal::Io(e)) => {
                self.reply_refusal(envelope, &refuse(LocalCode::SpoolError, e))
            }
            Err(AppendRefusal::DuplicateId(id)) => self.reply_refusal(
                envelope,
                &refuse(
                    LocalCode::DuplicateId,
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

    const STRICT: Policy = Policy { commands: false };

    fn prep_with(body: &str, policy: Policy) -> Result<Prepared, Refusal> {
        prepare(
            body.as_bytes(),
            U,
            "h1",
            4096,
            policy,
            || "fresh".into(),
            100.5,
        )
    }

    fn prep(body: &str) -> Result<Prepared, Refusal> {
        prep_with(body, STRICT)
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
        assert_eq!(p.key, None);
        // A scheduled run's result is keyed by host and plugin, as the
        // send queue would read it from the frame.
        let p = prep(r#"{"type":"result","plugin":"disk","status":0,"output":"OK"}"#).unwrap();
        let frame: Value = serde_json::from_slice(&p.frame).unwrap();
        assert_eq!(
            p.key,
            crate::agent::outqueue::supersession_key(Kind::Other, Some(&frame))
        );
        assert_eq!(p.key.as_deref(), Some("result\nh1\ndisk"));
    }

    #[test]
    fn refusals_say_why() {
        let code = |b: &str| prep(b).unwrap_err().code.as_str();
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
    fn registration_declares_plugins_by_name() {
        let p = prep(
            r#"{"type":"registration","process":{"name":"app","pid":7},
                "plugins":[{"name":"q","interval_s":60,"timeout_s":5}]}"#,
        )
        .unwrap();
        let (process, plugins) = p.registration.unwrap();
        assert_eq!(process, "app");
        assert_eq!(plugins[0].name, "q");
        assert_eq!(
            plugins[0].command, "",
            "the command comes from the directory"
        );
        assert_eq!(
            (plugins[0].interval_s, plugins[0].timeout_s),
            (Some(60.0), 5.0)
        );
        assert!(prep(r#"{"type":"registration","process":{"name":"vigil-agent"}}"#).is_err());
    }

    #[test]
    fn registrations_over_the_local_bounds_are_refused_with_the_reason() {
        use crate::agent::plugins::local::PROCESSES_MAX;
        let mut book = LocalBook::default();
        let register = |book: &mut LocalBook, process: &str| {
            let body = format!(
                r#"{{"type":"registration","process":{{"name":"{process}"}},
                    "plugins":[{{"name":"q"}}]}}"#
            );
            admit_registration(book, prep(&body).unwrap())
        };
        for i in 0..PROCESSES_MAX {
            register(&mut book, &format!("p{i}")).unwrap();
        }
        let refusal = register(&mut book, "one-more").unwrap_err();
        assert_eq!(refusal.code.as_str(), "bad_field");
        assert!(refusal.detail.contains("local processes"), "{refusal:?}");
        assert!(
            register(&mut book, "p0").is_ok(),
            "a known one re-registers"
        );
        let stats = prep(r#"{"type":"stats","metrics":{"a":1}}"#).unwrap();
        assert!(admit_registration(&mut book, stats).is_ok());
    }

    #[test]
    fn a_command_over_the_intake_needs_the_operators_consent() {
        let body = r#"{"type":"registration","process":{"name":"app"},
                "plugins":[{"name":"q","command":"id>f","interval_s":60}]}"#;
        let refusal = prep(body).unwrap_err();
        assert_eq!(refusal.code.as_str(), "bad_field");
        assert!(
            refusal.detail.contains("VIGIL_AGENT_LOCAL_COMMANDS"),
            "{refusal:?}"
        );
        let p = prep_with(body, Policy { commands: true }).unwrap();
        assert_eq!(p.registration.unwrap().1[0].command, "id>f");
    }

    #[test]
    fn the_ipc_directory_is_made_private_and_a_writable_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("vigil-intake-{}", uuid::Uuid::new_v4()));
        let sock = root.join("run/agent.sock");
        prepare_ipc_dir(&sock).unwrap();
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root.join("run")), 0o750);
        for loose in [0o770, 0o757, 0o1777] {
            std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(loose))
                .unwrap();
            let err = prepare_ipc_dir(&sock).unwrap_err();
            assert!(
                err.contains("writable by group or others"),
                "{loose:o}: {err}"
            );
        }
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(prepare_ipc_dir(&sock).is_ok(), "readable by others is fine");
        std::fs::remove_dir_all(root).unwrap();
    }
}
