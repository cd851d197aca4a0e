//! The benchmark's side of the router's back-end REP socket: the `status`
//! op, whose counters account for every message of a run (what came in,
//! what went out, what was rejected and why), and the request path that
//! the latency phase times.

use super::curve::Curve;
use super::fleet::ContextPool;
use super::{readable, BenchError, Doing};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// A REQ socket connected to a router's back end.
pub struct Backend {
    req: zmq::Socket,
}

/// The parts of the status reply the report uses; fields the router does
/// not (yet) report read as zero.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    pub clients: u64,
    pub counters: Counters,
    pub rejected_by_code: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Counters {
    pub received: u64,
    pub forwarded: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub undeliverable: u64,
    /// Replies (welcome, error) the router could not queue for a client.
    pub replies_dropped: u64,
}

impl Backend {
    pub fn connect(
        pool: &mut ContextPool,
        endpoint: &str,
        curve: Option<&Curve>,
    ) -> Result<Backend, BenchError> {
        let req = pool.socket(zmq::REQ)?;
        if let Some(curve) = curve {
            curve.backend_client(&req)?;
        }
        req.connect(endpoint)
            .doing(&format!("connecting a REQ to {endpoint}"))?;
        Ok(Backend { req })
    }

    /// Sends one request and waits for its reply. A REQ whose reply never
    /// came is stuck, so a timeout is an error and the caller stops using it.
    pub fn ask(&self, body: &[u8], timeout: Duration) -> Result<serde_json::Value, BenchError> {
        self.req.send(body, 0).doing("sending a back-end request")?;
        if !readable(&self.req, timeout)? {
            let what = format!(
                "waiting {} s for the router's back-end reply",
                timeout.as_secs()
            );
            return Err(BenchError::timeout(what));
        }
        let frame = self.req.recv_bytes(0).doing("receiving a back-end reply")?;
        serde_json::from_slice(&frame).map_err(|e| {
            let detail = format!("{e}: {}", String::from_utf8_lossy(&frame));
            BenchError::protocol("reading a back-end reply", detail)
        })
    }
}

/// Asks a router for its status over a fresh REQ, so one lost reply cannot
/// wedge later calls.
pub fn status(endpoint: &str) -> Result<Status, BenchError> {
    status_with(endpoint, None)
}

/// [`status`] of a router under CURVE, asked with the benchmark's key.
pub fn status_with(endpoint: &str, curve: Option<&Curve>) -> Result<Status, BenchError> {
    let mut pool = ContextPool::default();
    let backend = Backend::connect(&mut pool, endpoint, curve)?;
    let reply = backend.ask(br#"{"op":"status"}"#, STATUS_TIMEOUT)?;
    parse_status(reply)
}

fn parse_status(reply: serde_json::Value) -> Result<Status, BenchError> {
    if reply.get("ok") != Some(&serde_json::Value::Bool(true)) {
        return Err(BenchError::protocol("asking for status", reply.to_string()));
    }
    serde_json::from_value(reply.clone())
        .map_err(|e| BenchError::protocol("reading the status reply", format!("{e}: {reply}")))
}

impl Status {
    /// What happened between `earlier` and this status.
    pub fn since(&self, earlier: &Status) -> Status {
        let (now, then) = (&self.counters, &earlier.counters);
        let counters = Counters {
            received: now.received.saturating_sub(then.received),
            forwarded: now.forwarded.saturating_sub(then.forwarded),
            rejected: now.rejected.saturating_sub(then.rejected),
            delivered: now.delivered.saturating_sub(then.delivered),
            undeliverable: now.undeliverable.saturating_sub(then.undeliverable),
            replies_dropped: now.replies_dropped.saturating_sub(then.replies_dropped),
        };
        let rejected_by_code = self
            .rejected_by_code
            .iter()
            .map(|(code, n)| {
                let before = earlier.rejected_by_code.get(code).copied().unwrap_or(0);
                (code.clone(), n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Status {
            clients: self.clients,
            counters,
            rejected_by_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reply_is_read_and_differenced() {
        let before = parse_status(
            json!({"ok": true, "router": "r", "uptime_s": 1, "clients": 3,
            "counters": {"received": 10, "forwarded": 8, "rejected": 2, "delivered": 0,
                         "undeliverable": 0, "other": 5},
            "rejected_by_code": {"bad_json": 2}}),
        )
        .unwrap();
        let after = parse_status(json!({"ok": true, "clients": 5,
            "counters": {"received": 110, "forwarded": 100, "rejected": 10},
            "rejected_by_code": {"bad_json": 2, "overloaded": 8}}))
        .unwrap();
        let run = after.since(&before);
        assert_eq!(run.clients, 5);
        assert_eq!(run.counters.received, 100);
        assert_eq!(run.counters.forwarded, 92);
        assert_eq!(
            run.rejected_by_code,
            BTreeMap::from([("overloaded".into(), 8)])
        );
    }

    #[test]
    fn a_refusal_is_an_error() {
        let refused = json!({"ok": false, "error": "bad_request"});
        assert!(parse_status(refused).is_err());
    }
}
