//! `vigil send`: hands one message to the local agent, for shell scripts
//! and cron jobs, and says whether it was accepted.
//!
//! ```text
//! vigil send TYPE [--FIELD VALUE ...] [JSON-OBJECT] [--no-ack | --ack]
//! ```
//!
//! Fields given as `--FIELD VALUE` are strings, except values that read as
//! JSON numbers, `true`, `false`, objects or arrays. A JSON object argument
//! is merged in first. Notifications ask for an ack (and so for the disk
//! spool) unless `--no-ack` is given. Exit status: 0 accepted (the id is
//! printed), 1 refused or no answer (the reason on stderr), 2 bad usage.

use crate::config::Env;
use crate::error::Error;
use serde_json::{Map, Value};

const USAGE: &str = "\
usage: vigil send TYPE [--FIELD VALUE ...] [JSON-OBJECT] [--ack|--no-ack]

TYPE is notification, stats, heartbeat, registration or result. Examples:
  vigil send notification --severity error --source backup --message 'disk full'
  vigil send stats '{\"metrics\":{\"backup.seconds\":42}}'
Sends to the agent at VIGIL_AGENT_LOCAL (default ipc:///run/vigil/agent.sock),
waiting at most VIGIL_SEND_TIMEOUT_MS (default 5000). Exit status 0: accepted
(the message id is printed); 1: refused or no answer; 2: bad usage.";

pub fn command(args: &[String]) -> Result<(), Error> {
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        if args.is_empty() {
            return Err(Error::Usage(USAGE.to_string()));
        }
        println!("{USAGE}");
        return Ok(());
    }
    let body = build(args).map_err(|e| Error::Usage(format!("{e}\n{USAGE}")))?;
    let env = Env::from_process()?;
    let endpoint = env.string("VIGIL_AGENT_LOCAL", crate::agent::config::DEFAULT_LOCAL);
    let timeout_ms = env.int("VIGIL_SEND_TIMEOUT_MS", 5_000i32, 1, 3_600_000)?;
    let reply = request(&endpoint, &body, timeout_ms)?;
    interpret(&reply)
}

/// A `vigil send` command line that does not make a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    MissingType,
    OptionBeforeType(String),
    EmptyFieldName,
    MissingValue(String),
    NotFieldOrObject(String),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::MissingType => write!(f, "missing TYPE"),
            ArgsError::OptionBeforeType(arg) => write!(f, "expected TYPE first, got {arg:?}"),
            ArgsError::EmptyFieldName => write!(f, "empty field name"),
            ArgsError::MissingValue(field) => write!(f, "--{field} needs a value"),
            ArgsError::NotFieldOrObject(arg) => {
                write!(f, "{arg:?} is neither --FIELD nor a JSON object")
            }
        }
    }
}

impl std::error::Error for ArgsError {}

/// Builds the message from the command line.
pub fn build(args: &[String]) -> Result<Vec<u8>, ArgsError> {
    let (kind, rest) = args.split_first().ok_or(ArgsError::MissingType)?;
    if kind.starts_with('-') {
        return Err(ArgsError::OptionBeforeType(kind.clone()));
    }
    let mut obj = Map::new();
    let mut ack = None;
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        match arg.as_str() {
            "--ack" => ack = Some(true),
            "--no-ack" => ack = Some(false),
            _ if arg.starts_with("--") => {
                let field = &arg[2..];
                if field.is_empty() {
                    return Err(ArgsError::EmptyFieldName);
                }
                let value = rest
                    .get(i + 1)
                    .ok_or_else(|| ArgsError::MissingValue(field.to_string()))?;
                obj.insert(field.to_string(), field_value(field, value));
                i += 1;
            }
            _ => match serde_json::from_str::<Value>(arg) {
                Ok(Value::Object(fields)) => obj.extend(fields),
                _ => return Err(ArgsError::NotFieldOrObject(arg.clone())),
            },
        }
        i += 1;
    }
    obj.insert("type".into(), Value::String(kind.clone()));
    let ack = ack.unwrap_or(kind == "notification");
    if ack {
        obj.insert("ack".into(), Value::Bool(true));
    }
    Ok(serde_json::to_vec(&Value::Object(obj)).expect("serializes"))
}

/// Fields the protocol defines as text stay text, whatever they look like.
const TEXT_FIELDS: [&str; 8] = [
    "severity", "source", "message", "hostname", "plugin", "output", "id", "run_id",
];

fn field_value(field: &str, text: &str) -> Value {
    if TEXT_FIELDS.contains(&field) {
        return Value::String(text.to_string());
    }
    let json_like = text.starts_with('{')
        || text.starts_with('[')
        || text == "true"
        || text == "false"
        || text.parse::<f64>().is_ok_and(f64::is_finite);
    if json_like {
        if let Ok(v) = serde_json::from_str(text) {
            return v;
        }
    }
    Value::String(text.to_string())
}

/// One request on a fresh REQ socket, bounded by `timeout_ms`.
fn request(endpoint: &str, body: &[u8], timeout_ms: i32) -> Result<Value, Error> {
    let fail = |what: &str, e: zmq::Error| Error::Runtime(format!("{what} {endpoint}: {e}"));
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).map_err(|e| fail("socket for", e))?;
    socket.set_linger(0).map_err(|e| fail("linger on", e))?;
    socket
        .set_sndtimeo(timeout_ms)
        .map_err(|e| fail("sndtimeo on", e))?;
    socket
        .connect(endpoint)
        .map_err(|e| fail("connect to", e))?;
    socket.send(body, 0).map_err(|e| fail("send to", e))?;
    let ready = socket
        .poll(zmq::POLLIN, timeout_ms as i64)
        .map_err(|e| fail("poll", e))?;
    if ready == 0 {
        return Err(Error::Runtime(format!(
            "no answer from the agent at {endpoint} within {timeout_ms} ms (is `vigil agent` running?)"
        )));
    }
    let reply = socket.recv_bytes(0).map_err(|e| fail("recv from", e))?;
    serde_json::from_slice(&reply)
        .map_err(|e| Error::Runtime(format!("the agent's answer is not JSON: {e}")))
}

fn interpret(reply: &Value) -> Result<(), Error> {
    if reply.get("ok") == Some(&Value::Bool(true)) {
        println!("{}", reply.get("id").and_then(Value::as_str).unwrap_or(""));
        return Ok(());
    }
    let text = |k: &str| {
        reply
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    Err(Error::Runtime(format!(
        "refused: {}: {}",
        text("error"),
        text("detail")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn builds_messages() {
        let b = build(&args(&[
            "notification",
            "--severity",
            "error",
            "--message",
            "12",
            "--count",
            "3",
        ]))
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"type":"notification","severity":"error","message":"12","count":3,"ack":true})
        );
        let b = build(&args(&["stats", r#"{"metrics":{"a":1}}"#, "--host", "x y"])).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"type":"stats","metrics":{"a":1},"host":"x y"}));
        let b = build(&args(&["notification", "--no-ack"])).unwrap();
        assert!(serde_json::from_slice::<Value>(&b)
            .unwrap()
            .get("ack")
            .is_none());
        assert_eq!(
            build(&args(&["--x"])),
            Err(ArgsError::OptionBeforeType("--x".into()))
        );
        assert_eq!(
            build(&args(&["stats", "--metrics"])),
            Err(ArgsError::MissingValue("metrics".into()))
        );
        assert_eq!(
            build(&args(&["stats", "[1]"])),
            Err(ArgsError::NotFieldOrObject("[1]".into()))
        );
        assert_eq!(build(&[]), Err(ArgsError::MissingType));
        assert_eq!(
            build(&args(&["stats", "--"])),
            Err(ArgsError::EmptyFieldName)
        );
    }
}
