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
use crate::protocol::LocalReply;
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

/// Builds the message from the command line.
pub fn build(args: &[String]) -> Result<Vec<u8>, String> {
    let (kind, rest) = args.split_first().ok_or("missing TYPE")?;
    if kind.starts_with('-') {
        return Err(format!("expected TYPE first, got {kind:?}"));
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
                    return Err("empty field name".into());
                }
                let value = rest
                    .get(i + 1)
                    .ok_or_else(|| format!("--{field} needs a value"))?;
                obj.insert(field.to_string(), field_value(field, value));
                i += 1;
            }
            _ => match serde_json::from_str::<Value>(arg) {
                Ok(Value::Object(fields)) => obj.extend(fields),
                _ => return Err(format!("{arg:?} is neither --FIELD nor a JSON object")),
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
fn request(endpoint: &str, body: &[u8], timeout_ms: i32) -> Result<LocalReply, Error> {
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
    LocalReply::parse(&reply).map_err(|e| Error::Runtime(format!("the agent's answer: {e}")))
}

fn interpret(reply: &LocalReply) -> Result<(), Error> {
    match reply {
        LocalReply::Accepted { id } => {
            println!("{id}");
            Ok(())
        }
        LocalReply::Refused { code, detail } => {
            Err(Error::Runtime(format!("refused: {code}: {detail}")))
        }
    }
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
        assert!(build(&args(&["--x"])).is_err());
        assert!(build(&args(&["stats", "--metrics"])).is_err());
        assert!(build(&args(&["stats", "[1]"])).is_err());
    }
}
