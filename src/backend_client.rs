//! The back end's way to a client: a REQ to every router's back-end socket,
//! with failover.
//!
//! Sinks (acks) and the scheduler (run_plugin) reach a client through
//! whichever router has a route to it. A request goes to the router that
//! answered last; on `unknown_client`, `unreachable` or a timeout it goes to
//! the next one, until every router was tried once. A REQ that timed out is
//! stuck mid-conversation, so it is closed and a new one opened (the lazy
//! pirate pattern). A router that timed out is passed over for a while
//! (`SUSPECT_FOR`), so a dead router costs one timeout per period rather
//! than one per request. One `BackendClient` belongs to one thread.

use crate::protocol::{BackendError, Reply};
use serde_json::Value;
use std::fmt;
use std::time::{Duration, Instant};

/// How long a router that did not answer in time is tried only when every
/// other router is suspect too.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Why a delivery failed on every router.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Every router answered `unknown_client` or `unreachable`, or timed
    /// out; the answer of each router, in order.
    NoRoute(Vec<Attempt>),
    /// A router refused the request itself (`bad_request`): retrying
    /// elsewhere will not help.
    Refused(String),
}

/// One router's answer to a delivery it did not make.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The router's back-end endpoint.
    pub router: String,
    /// The router's refusal, when it answered with one this build knows;
    /// `None` for a timeout, a socket error or an unknown answer.
    pub refusal: Option<BackendError>,
    /// What happened, for the log.
    pub why: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.router, self.why)
    }
}

/// The attempts as one log text.
pub fn attempts_text(tries: &[Attempt]) -> String {
    let texts: Vec<String> = tries.iter().map(Attempt::to_string).collect();
    texts.join("; ")
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::NoRoute(tries) => {
                write!(f, "no router delivered it: {}", attempts_text(tries))
            }
            DeliveryError::Refused(detail) => write!(f, "refused by router: {detail}"),
        }
    }
}

impl std::error::Error for DeliveryError {}

pub struct BackendClient {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    /// One REQ per router, opened on first use and after a timeout.
    sockets: Vec<Option<zmq::Socket>>,
    /// The router to try first: the last one that delivered.
    preferred: usize,
    /// Per router: passed over until then, after a timeout or socket error.
    suspect_until: Vec<Option<Instant>>,
    timeout: Duration,
}

impl BackendClient {
    /// `endpoints`: every router's back-end endpoint (`tcp://host:5556`).
    /// `timeout`: how long to wait for one router's reply.
    pub fn new(ctx: &zmq::Context, endpoints: Vec<String>, timeout: Duration) -> BackendClient {
        let sockets = endpoints.iter().map(|_| None).collect();
        let suspect_until = endpoints.iter().map(|_| None).collect();
        BackendClient {
            ctx: ctx.clone(),
            endpoints,
            sockets,
            preferred: 0,
            suspect_until,
            timeout,
        }
    }

    /// Delivers `frame` (a JSON object with `to`) to its client through the
    /// first router that has a route. Returns the router index that took it.
    pub fn deliver(&mut self, frame: &[u8]) -> Result<usize, DeliveryError> {
        let mut tries = Vec::new();
        for index in self.order() {
            let router = self.endpoints[index].clone();
            match self
                .request(index, frame)
                .and_then(|v| Ok((Reply::from_value(&v)?, v)))
            {
                Ok((reply, _)) if reply.ok => {
                    self.preferred = index;
                    return Ok(index);
                }
                Ok((reply, value)) => {
                    let refusal = reply.code();
                    if refusal.is_some_and(|code| !code.try_elsewhere()) {
                        return Err(DeliveryError::Refused(value.to_string()));
                    }
                    let why = reply.error_text().to_string();
                    tries.push(Attempt {
                        router,
                        refusal,
                        why,
                    });
                }
                Err(why) => tries.push(Attempt {
                    router,
                    refusal: None,
                    why,
                }),
            }
        }
        Err(DeliveryError::NoRoute(tries))
    }

    /// The routers to try, in order: from the preferred one on, those not
    /// suspect; every router when all are suspect.
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let all: Vec<usize> = (0..n).map(|step| (self.preferred + step) % n).collect();
        let healthy: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.suspect_until[i].is_none_or(|until| until <= now))
            .collect();
        if healthy.is_empty() {
            all
        } else {
            healthy
        }
    }

    /// Sends one request to router `index` and waits for its reply.
    /// On a timeout or a socket error the REQ is closed, so the next call
    /// starts a fresh conversation, and the router is suspect for a while.
    pub fn request(&mut self, index: usize, frame: &[u8]) -> Result<Value, String> {
        let result = self.exchange(index, frame);
        if result.is_err() {
            self.sockets[index] = None;
            self.suspect_until[index] = Some(Instant::now() + SUSPECT_FOR);
        } else {
            self.suspect_until[index] = None;
        }
        result
    }

    fn exchange(&mut self, index: usize, frame: &[u8]) -> Result<Value, String> {
        let timeout_ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        if self.sockets[index].is_none() {
            self.sockets[index] = Some(self.open(index)?);
        }
        let socket = self.sockets[index].as_ref().expect("opened above");
        socket.send(frame, 0).map_err(|e| format!("send: {e}"))?;
        if socket
            .poll(zmq::POLLIN, timeout_ms.into())
            .map_err(|e| format!("poll: {e}"))?
            == 0
        {
            return Err(format!("no reply within {} ms", timeout_ms));
        }
        let reply = socket.recv_bytes(0).map_err(|e| format!("recv: {e}"))?;
        serde_json::from_slice(&reply).map_err(|e| format!("reply is not JSON: {e}"))
    }

    fn open(&self, index: usize) -> Result<zmq::Socket, String> {
        let socket = self
            .ctx
            .socket(zmq::REQ)
            .map_err(|e| format!("REQ socket: {e}"))?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        // A send must not block forever when the router is down: REQ queues
        // the request until it connects, so bound the send as well.
        socket
            .set_sndtimeo(self.timeout.as_millis().min(i32::MAX as u128) as i32)
            .map_err(|e| e.to_string())?;
        socket
            .connect(&self.endpoints[index])
            .map_err(|e| format!("connect {}: {e}", self.endpoints[index]))?;
        Ok(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: usize) -> BackendClient {
        let endpoints = (0..n)
            .map(|i| format!("tcp://127.0.0.1:{}", 1 + i))
            .collect();
        BackendClient::new(&zmq::Context::new(), endpoints, Duration::from_millis(10))
    }

    #[test]
    fn a_suspect_router_is_passed_over_until_all_are_suspect() {
        let mut c = client(3);
        c.preferred = 1;
        assert_eq!(c.order(), [1, 2, 0]);
        c.suspect_until[2] = Some(Instant::now() + SUSPECT_FOR);
        assert_eq!(c.order(), [1, 0]);
        c.suspect_until[0] = Some(Instant::now() + SUSPECT_FOR);
        c.suspect_until[1] = Some(Instant::now() + SUSPECT_FOR);
        assert_eq!(c.order(), [1, 2, 0], "all suspect: try them all");
        c.suspect_until[0] = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(c.order(), [0], "a suspicion runs out");
    }

    #[test]
    fn a_router_that_does_not_answer_becomes_suspect() {
        let ctx = zmq::Context::new();
        // Bound, so the request is taken, but nothing ever replies.
        let silent = ctx.socket(zmq::ROUTER).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        let mut c = BackendClient::new(&ctx, vec![endpoint], Duration::from_millis(50));
        assert_eq!(
            c.deliver(br#"{"to":"x"}"#)
                .map_err(|e| matches!(e, DeliveryError::NoRoute(_))),
            Err(true)
        );
        assert!(c.suspect_until[0].is_some_and(|t| t > Instant::now()));
        assert!(c.sockets[0].is_none(), "the stuck REQ was closed");
    }
}
