//! The back end's way to a client: a DEALER to every router's back-end
//! socket, with pipelining and failover.
//!
//! Sinks (acks) and the scheduler (run_plugin) reach a client through
//! whichever router has a route to it. Requests go to the router that
//! answered last; those answered `unknown_client` or `unreachable`, or not
//! answered in time, go to the next one, until every router was tried once.
//! [`BackendClient::deliver_batch`] sends a whole batch before reading any
//! reply (at most [`WINDOW`] in flight), so a batch costs about one round
//! trip, not one per request: one REQ round trip each had capped a sink at
//! a few thousand acks/s.
//!
//! On the wire each request is `[tag, "", body]`: the empty delimiter makes
//! it the REP envelope the protocol describes, with the tag as one more
//! envelope frame (as a proxy hop would add), so the router returns it and
//! a reply is matched to its request by tag. A reply that comes after its
//! request timed out matches nothing and is dropped. A router that timed
//! out is passed over for a while (`SUSPECT_FOR`), so a dead router costs
//! one timeout per period rather than one per request, and its DEALER is
//! closed (linger 0): requests still queued in it for a router that is
//! down, or not reading, would otherwise go out when it is back, long
//! after they were delivered through another router (a `run_plugin` run
//! twice, and late). For the same reason a DEALER queues only to a
//! connected router (`ZMQ_IMMEDIATE`). One `BackendClient` belongs to one
//! thread.
//!
//! With keys ([`BackendClient::with_keys`]) every socket is a CURVE client
//! of the routers, authenticated by its own key (the routers'
//! `VIGIL_BACKEND_KEYS`).

use crate::protocol::backend::OK_REPLY;
use crate::protocol::Reply;
use serde_json::Value;
use std::fmt;
use std::time::{Duration, Instant};

/// How long a router that did not answer in time is tried only when every
/// other router is suspect too.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Requests sent to one router before its first replies are read. Well
/// under a ROUTER's default send high-water mark (1,000 messages): a router
/// drops a reply that finds its requester's queue full, and a dropped reply
/// costs that request a whole timeout.
pub const WINDOW: usize = 500;

/// The end of a try that was not made (see
/// [`BackendClient::deliver_batch_while`]).
pub const NOT_TRIED: &str = "not tried";

/// Why a delivery failed on every router.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Every router answered `unknown_client` or `unreachable`, or timed
    /// out; the last answer per router, in order.
    NoRoute(Vec<String>),
    /// A router refused the request itself (`bad_request`): retrying
    /// elsewhere will not help.
    Refused(String),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::NoRoute(tries) => {
                write!(f, "no router delivered it: {}", tries.join("; "))
            }
            DeliveryError::Refused(detail) => write!(f, "refused by router: {detail}"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// What one router said to one request.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Delivered,
    /// `bad_request`: the whole reply, for the error.
    Refused(String),
    /// Another error code, or no answer: the text for `NoRoute`.
    Failed(String),
}

pub struct BackendClient {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    /// One DEALER per router, opened on first use and after a socket error.
    sockets: Vec<Option<zmq::Socket>>,
    /// The router to try first: the last one that delivered.
    preferred: usize,
    /// Per router: passed over until then, after a timeout or socket error.
    suspect_until: Vec<Option<Instant>>,
    timeout: Duration,
    /// The tag of the next request; never reused, so a late reply cannot
    /// be taken for another request's.
    next_tag: u64,
    /// This part's CURVE keys (`VIGIL_CURVE_KEY`, `VIGIL_ROUTER_KEY`).
    keys: Option<crate::curve::ClientKeys>,
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
            next_tag: 1,
            keys: None,
        }
    }

    /// Connects with these CURVE keys (none: plaintext).
    pub fn with_keys(mut self, keys: Option<crate::curve::ClientKeys>) -> BackendClient {
        self.keys = keys;
        self
    }

    /// Delivers `frame` (a JSON object with `to`) to its client through the
    /// first router that has a route. Returns the router index that took it.
    pub fn deliver(&mut self, frame: &[u8]) -> Result<usize, DeliveryError> {
        self.deliver_batch(&[frame])
            .pop()
            .expect("one result per frame")
    }

    /// Delivers every frame, pipelined; one result per frame, in order.
    pub fn deliver_batch<F: AsRef<[u8]>>(
        &mut self,
        frames: &[F],
    ) -> Vec<Result<usize, DeliveryError>> {
        self.deliver_batch_while(frames, || true)
    }

    /// [`Self::deliver_batch`], asking `keep_going` before each router:
    /// once it says no (the scheduler's lease lapsed while a router timed
    /// out), the frames not delivered yet are tried nowhere else, each
    /// failing with a try that ends in [`NOT_TRIED`].
    pub fn deliver_batch_while<F: AsRef<[u8]>>(
        &mut self,
        frames: &[F],
        mut keep_going: impl FnMut() -> bool,
    ) -> Vec<Result<usize, DeliveryError>> {
        let mut results: Vec<Option<Result<usize, DeliveryError>>> =
            frames.iter().map(|_| None).collect();
        let mut tries: Vec<Vec<String>> = frames.iter().map(|_| Vec::new()).collect();
        let mut todo: Vec<usize> = (0..frames.len()).collect();
        for index in self.order() {
            if todo.is_empty() {
                break;
            }
            if !keep_going() {
                for &i in &todo {
                    tries[i].push(format!("{}: {NOT_TRIED}", self.endpoints[index]));
                }
                break;
            }
            let batch: Vec<&[u8]> = todo.iter().map(|&i| frames[i].as_ref()).collect();
            let answers = self.exchange_all(index, &batch);
            let mut again = Vec::new();
            for (i, answer) in todo.into_iter().zip(answers) {
                match answer {
                    Answer::Delivered => {
                        self.preferred = index;
                        results[i] = Some(Ok(index));
                    }
                    Answer::Refused(reply) => results[i] = Some(Err(DeliveryError::Refused(reply))),
                    Answer::Failed(why) => {
                        tries[i].push(format!("{}: {why}", self.endpoints[index]));
                        again.push(i);
                    }
                }
            }
            todo = again;
        }
        results
            .into_iter()
            .zip(tries)
            .map(|(result, tries)| result.unwrap_or(Err(DeliveryError::NoRoute(tries))))
            .collect()
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

    /// Sends one request to router `index` and waits for its reply, parsed.
    /// On a timeout or a socket error the router is suspect for a while.
    pub fn request(&mut self, index: usize, frame: &[u8]) -> Result<Value, String> {
        let mut replies = self.pipeline(index, &[frame]);
        let reply = replies
            .pop()
            .unwrap_or_else(|| Err("no reply".to_string()))?;
        serde_json::from_slice(&reply).map_err(|e| format!("reply is not JSON: {e}"))
    }

    /// Every frame to router `index`, pipelined, each reply judged.
    fn exchange_all(&mut self, index: usize, frames: &[&[u8]]) -> Vec<Answer> {
        self.pipeline(index, frames)
            .into_iter()
            .map(|reply| match reply {
                Ok(reply) => judge(&reply),
                Err(why) => Answer::Failed(why),
            })
            .collect()
    }

    /// Sends `frames` to router `index`, at most [`WINDOW`] unanswered at
    /// once, and collects the raw replies in order. A request not answered
    /// within the timeout (counted from the last progress) fails, and the
    /// router becomes suspect; any failure closes its DEALER (see the
    /// module doc).
    fn pipeline(&mut self, index: usize, frames: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        let mut replies: Vec<Option<Result<Vec<u8>, String>>> =
            frames.iter().map(|_| None).collect();
        let outcome = self.run_pipeline(index, frames, &mut replies);
        let failed = match &outcome {
            Ok(()) => replies.iter().any(Option::is_none),
            Err(_) => true,
        };
        if failed {
            // What is still queued in it must not go out later.
            self.sockets[index] = None;
        }
        if let Err(why) = &outcome {
            for reply in replies.iter_mut().filter(|r| r.is_none()) {
                *reply = Some(Err(why.clone()));
            }
        }
        let timeout_ms = self.timeout.as_millis();
        let replies: Vec<_> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(format!("no reply within {timeout_ms} ms"))))
            .collect();
        self.suspect_until[index] = failed.then(|| Instant::now() + SUSPECT_FOR);
        replies
    }

    fn run_pipeline(
        &mut self,
        index: usize,
        frames: &[&[u8]],
        replies: &mut [Option<Result<Vec<u8>, String>>],
    ) -> Result<(), String> {
        if self.sockets[index].is_none() {
            self.sockets[index] = Some(self.open(index)?);
        }
        let first_tag = self.next_tag;
        self.next_tag += frames.len() as u64;
        let socket = self.sockets[index].as_ref().expect("opened above");
        let (mut sent, mut answered) = (0, 0);
        let mut last_progress = Instant::now();
        while answered < frames.len() {
            while sent < frames.len() && sent - answered < WINDOW {
                let tag = (first_tag + sent as u64).to_be_bytes();
                match send_request(socket, &tag, frames[sent]) {
                    Ok(true) => sent += 1,
                    Ok(false) => break,
                    Err(e) => return Err(format!("send: {e}")),
                }
            }
            let left = self.timeout.saturating_sub(last_progress.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            let wanted = if sent < frames.len() && sent - answered < WINDOW {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            let ready = socket
                .poll(wanted, left.as_millis() as i64 + 1)
                .map_err(|e| format!("poll: {e}"))?;
            if ready == 0 {
                continue;
            }
            while let Some((tag, body)) = recv_reply(socket).map_err(|e| format!("recv: {e}"))? {
                let Some(i) = tag
                    .checked_sub(first_tag)
                    .map(|i| i as usize)
                    .filter(|&i| i < sent)
                else {
                    continue; // a late reply to an earlier, timed-out request
                };
                if replies[i].is_none() {
                    replies[i] = Some(Ok(body));
                    answered += 1;
                    last_progress = Instant::now();
                }
            }
        }
        Ok(())
    }

    fn open(&self, index: usize) -> Result<zmq::Socket, String> {
        let socket = self
            .ctx
            .socket(zmq::DEALER)
            .map_err(|e| format!("DEALER socket: {e}"))?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        // Nothing waits in the socket for a router not connected now.
        socket.set_immediate(true).map_err(|e| e.to_string())?;
        if let Some(keys) = &self.keys {
            keys.apply(&socket).map_err(|e| e.to_string())?;
        }
        // Room for a whole window each way, whatever libzmq's default.
        let hwm = (WINDOW as i32) * 2;
        socket.set_sndhwm(hwm).map_err(|e| e.to_string())?;
        socket.set_rcvhwm(hwm).map_err(|e| e.to_string())?;
        socket
            .connect(&self.endpoints[index])
            .map_err(|e| format!("connect {}: {e}", self.endpoints[index]))?;
        Ok(socket)
    }
}

/// Sends `[tag, "", body]` without blocking; `Ok(false)` when the DEALER
/// has no room now (it then takes none of the frames).
fn send_request(socket: &zmq::Socket, tag: &[u8], body: &[u8]) -> zmq::Result<bool> {
    match socket.send(tag, zmq::SNDMORE | zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(false),
        Err(e) => return Err(e),
    }
    // Once the first part is taken, libzmq takes the rest of the message.
    socket.send(&b""[..], zmq::SNDMORE | zmq::DONTWAIT)?;
    socket.send(body, zmq::DONTWAIT)?;
    Ok(true)
}

/// One reply, `[tag, "", body]`, if one is waiting. Anything else (a peer
/// that is not a vigil router) is skipped.
fn recv_reply(socket: &zmq::Socket) -> zmq::Result<Option<(u64, Vec<u8>)>> {
    loop {
        let frames = match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let [tag, empty, body] = frames.as_slice() {
            if let (Ok(tag), true) = (<[u8; 8]>::try_from(tag.as_slice()), empty.is_empty()) {
                return Ok(Some((u64::from_be_bytes(tag), body.clone())));
            }
        }
    }
}

/// What a router's reply to a delivery means.
fn judge(reply: &[u8]) -> Answer {
    if reply == OK_REPLY {
        return Answer::Delivered;
    }
    let Ok(value) = serde_json::from_slice::<Value>(reply) else {
        return Answer::Failed("reply is not JSON".to_string());
    };
    let parsed = match Reply::from_value(&value) {
        Ok(parsed) => parsed,
        Err(why) => return Answer::Failed(why.to_string()),
    };
    if parsed.ok {
        return Answer::Delivered;
    }
    match parsed.code() {
        // `bad_request`: no other router will take it either.
        Some(code) if !code.try_elsewhere() => Answer::Refused(value.to_string()),
        _ => Answer::Failed(parsed.error_text().to_string()),
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
        assert!(
            c.sockets[0].is_none(),
            "closed: nothing left queued in it goes out when the router is back"
        );
    }

    /// Once `keep_going` says no, no further router gets the batch.
    #[test]
    fn a_batch_stops_failing_over_when_told() {
        let ctx = zmq::Context::new();
        let silent = ctx.socket(zmq::ROUTER).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let first = silent.get_last_endpoint().unwrap().unwrap();
        let second = "tcp://127.0.0.1:1".to_string();
        let mut c =
            BackendClient::new(&ctx, vec![first, second.clone()], Duration::from_millis(50));
        let mut asked = 0;
        let results = c.deliver_batch_while(&[br#"{"to":"x"}"#], || {
            asked += 1;
            asked == 1
        });
        let Err(DeliveryError::NoRoute(tries)) = &results[0] else {
            panic!("{results:?}")
        };
        assert_eq!(tries.len(), 2, "{tries:?}");
        assert!(tries[0].contains("no reply within"), "{tries:?}");
        assert_eq!(tries[1], format!("{second}: {NOT_TRIED}"));
        assert!(
            c.sockets[1].is_none(),
            "the second router was never dialled"
        );
    }

    #[test]
    fn replies_are_judged() {
        assert_eq!(judge(br#"{"ok":true}"#), Answer::Delivered);
        assert_eq!(judge(br#"{ "ok" : true }"#), Answer::Delivered);
        assert_eq!(
            judge(br#"{"ok":false,"error":"unknown_client"}"#),
            Answer::Failed("unknown_client".into())
        );
        assert!(matches!(
            judge(br#"{"ok":false,"error":"bad_request","detail":"x"}"#),
            Answer::Refused(_)
        ));
        assert!(matches!(judge(b"nope"), Answer::Failed(_)));
    }

    /// A REP-like peer written as the protocol says (a ROUTER that keeps
    /// the envelope up to the empty frame) answers a pipelined batch, in
    /// whatever order, and each reply finds its request.
    #[test]
    fn a_pipelined_batch_is_matched_by_tag() {
        let ctx = zmq::Context::new();
        let server = ctx.socket(zmq::ROUTER).unwrap();
        server.set_linger(0).unwrap();
        // As the router's back-end socket: room for far more than a window
        // of replies (libzmq's view of what a peer read lags by half an HWM,
        // so at the default 1,000 a reply was sometimes dropped).
        server.set_sndhwm(20 * WINDOW as i32).unwrap();
        // And a full queue blocks the echo instead of dropping a reply.
        server.set_router_mandatory(true).unwrap();
        server.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = server.get_last_endpoint().unwrap().unwrap();
        let n = 2_500;
        let echo = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..n {
                let frames = server.recv_multipart(0).unwrap();
                held.push(frames);
                // Answer in reverse order within groups of ten.
                if held.len() == 10 {
                    for mut frames in held.drain(..).rev() {
                        let body = frames.pop().unwrap();
                        let answer: &[u8] = if body.ends_with(b"7}") {
                            br#"{"ok":false,"error":"unknown_client"}"#
                        } else {
                            br#"{"ok":true}"#
                        };
                        frames.push(answer.to_vec());
                        server.send_multipart(frames, 0).unwrap();
                    }
                }
            }
            // Closed only after the client has its replies: at linger 0 a
            // socket closed now would discard the last ones still queued.
            server
        });
        let mut c = BackendClient::new(&ctx, vec![endpoint], Duration::from_secs(10));
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        let results = c.deliver_batch(&frames);
        drop(echo.join().unwrap());
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), i % 10 != 7, "request {i}: {result:?}");
        }
    }
}
