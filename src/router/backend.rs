//! The back-end thread: owns the socket that sinks and the scheduler use to
//! reach clients (`to`) and to read the router's counters (`status`).
//!
//! The protocol calls it a REP, and to a REQ peer it behaves as one, but it
//! is a ROUTER that handles the envelope itself: libzmq 4.3.4's REP can lose
//! the reply to the next request after a peer sends a malformed message and
//! vanishes (`router_t::rollback` leaves `_more_out` set), and a back end
//! waiting on a lost reply is stuck for good. A ROUTER also answers a DEALER
//! that sends no delimiter frame.
//!
//! Deliveries are handed to the client thread, which alone may send on the
//! client ROUTER. A burst of requests (a pipelining DEALER's window, or
//! several REQ peers) is handed over whole, with one doorbell ring, and the
//! answers are then collected in order: one wake-up of the client thread
//! per burst rather than a thread round trip per request, which had capped
//! the back end at a few thousand deliveries per second. Each peer still
//! gets its replies in the order of its requests. `status` is answered here
//! from the shared counters, without asking anyone.

use super::auth::{self, Access};
use super::clients::Command;
use super::metrics::Metrics;
use crate::doorbell::{Doorbell, Ringer};
use crate::protocol::{self, BackendRequest, Delivery};
use crate::signals::ShutdownWatch;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use zmq::Message;

/// Frames kept of one request: routing id, a REQ's delimiter, the body,
/// and room for proxies' envelopes in between.
const MAX_FRAMES: usize = 16;

/// Requests served per wake-up (and handed to the client thread at once).
pub const BURST: usize = 256;

/// How long a delivery may wait for the client thread. It answers between
/// bursts, within milliseconds; this only bounds a wedged or dying router.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct BackendThread {
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub commands: Sender<Command>,
    pub client_bell: Ringer,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics>,
    pub router_name: String,
    pub max_message_bytes: usize,
    /// Under CURVE, the key set each request's connection is checked
    /// against, and where the ZAP thread sends new versions.
    pub access: Option<Arc<Access>>,
    pub access_updates: Receiver<Arc<Access>>,
}

impl BackendThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        loop {
            let readable = self.bell.wait(&self.socket, zmq::POLLIN, -1)?;
            if self.shutdown.is_set() {
                return Ok(());
            }
            while let Ok(access) = self.access_updates.try_recv() {
                self.access = Some(access);
            }
            if readable {
                self.serve_burst()?;
            }
        }
    }

    /// Serves the requests waiting, a bounded number before polling again
    /// so shutdown is noticed: reads them all, hands the deliveries to the
    /// client thread in one go, then replies in order.
    fn serve_burst(&mut self) -> Result<(), zmq::Error> {
        let mut served = Vec::new();
        let mut handed = false;
        for _ in 0..BURST {
            let Some(mut frames) = self.recv_request()? else {
                break;
            };
            if !frames.last_mut().is_some_and(|f| self.allowed(f)) {
                // A key removed since the connection began: no answer,
                // nothing delivered (an unlisted key never got this far).
                self.metrics.forbidden.fetch_add(1, Relaxed);
                log::debug!("dropped a back-end request from a key no longer allowed");
                continue;
            }
            let (envelope, body) = split_envelope(frames);
            let answer = self.answer_or_hand_over(body);
            handed |= matches!(answer, Answer::Pending(_));
            served.push((envelope, answer));
        }
        if handed {
            self.client_bell.ring();
        }
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        for (mut envelope, answer) in served {
            let reply = match answer {
                Answer::Now(reply) => reply,
                Answer::Pending(outcome) => outcome
                    .recv_deadline(deadline)
                    .unwrap_or(Delivery::Unreachable)
                    .to_frame(),
            };
            envelope.push(Message::from(reply));
            self.send_reply(envelope);
        }
        Ok(())
    }

    /// Under CURVE, whether the request's connection key is still listed.
    /// The key is read from a frame libzmq received (the routing-id frame
    /// it makes itself carries no metadata).
    fn allowed(&self, frame: &mut Message) -> bool {
        let Some(access) = &self.access else {
            return true;
        };
        auth::key_of(frame).is_some_and(|key| access.backend_allows(&key))
    }

    /// Checks one request's body and answers it, or hands its delivery to
    /// the client thread (the caller rings its bell).
    fn answer_or_hand_over(&mut self, body: Vec<Message>) -> Answer {
        let size: usize = body.iter().map(|f| f.len()).sum();
        if body.len() != 1 {
            let detail = format!("request has {} frames; send exactly one", body.len());
            return Answer::Now(protocol::bad_request_frame(&detail));
        }
        if size > self.max_message_bytes {
            let limit = self.max_message_bytes;
            let detail = format!("request is {size} bytes; the limit is {limit}");
            return Answer::Now(protocol::bad_request_frame(&detail));
        }
        let request = body.into_iter().next().expect("one frame, checked above");
        self.answer(request)
    }

    /// Reads one whole request, routing id and envelope included. Frames
    /// past [`MAX_FRAMES`] are read and dropped, so a hostile peer cannot
    /// make this thread hold more than that many.
    fn recv_request(&self) -> Result<Option<Vec<Message>>, zmq::Error> {
        let mut frames = Vec::new();
        loop {
            let mut frame = Message::new();
            match self.socket.recv(&mut frame, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) if frames.is_empty() => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            let more = frame.get_more();
            if frames.len() < MAX_FRAMES {
                frames.push(frame);
            }
            if !more {
                return Ok(Some(frames));
            }
        }
    }

    /// A reply to a requester that has gone is dropped, as REP would; one
    /// whose queue is full (a DEALER that never reads) is dropped and logged.
    fn send_reply(&self, frames: Vec<Message>) {
        let last = frames.len() - 1;
        for (i, frame) in frames.into_iter().enumerate() {
            let flags = if i < last { zmq::SNDMORE } else { 0 };
            match self.socket.send(frame, flags | zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EHOSTUNREACH) => return,
                Err(e) => {
                    log::warn!("could not send a back-end reply: {e}");
                    return;
                }
            }
        }
    }

    fn answer(&self, request: Message) -> Answer {
        match protocol::parse_backend_request(&request) {
            Err(why) => Answer::Now(protocol::bad_request_frame(&why.to_string())),
            Ok(BackendRequest::Status) => {
                Answer::Now(self.metrics.status(&self.router_name).to_frame())
            }
            Ok(BackendRequest::Deliver { to }) => self.hand_over(to, request),
        }
    }

    /// Queues a delivery for the client thread; its outcome comes on the
    /// returned channel.
    fn hand_over(&self, to: Uuid, frame: Message) -> Answer {
        let (reply, outcome) = bounded(1);
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let command = Command::Deliver {
            to,
            frame,
            reply,
            deadline,
        };
        let sent = match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(command)) => {
                // The client thread has a burst's worth already: wake it
                // and wait for room (it serves commands within a burst).
                self.client_bell.ring();
                self.commands
                    .send_deadline(command, deadline)
                    .map_err(|_| ())
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        match sent {
            Ok(()) => Answer::Pending(outcome),
            // The client thread has stopped: this router cannot reach anyone.
            Err(()) => Answer::Now(Delivery::Unreachable.to_frame()),
        }
    }
}

/// A request's reply, known now or coming from the client thread.
enum Answer {
    Now(Vec<u8>),
    Pending(Receiver<Delivery>),
}

/// Splits a request as REP would: the envelope is everything up to and
/// including the first empty frame (a REQ peer sends `[empty, body]`, so
/// the envelope is `[routing id, empty]`). A DEALER that sends no delimiter
/// gets an envelope of its routing id alone.
fn split_envelope(mut frames: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
    let bottom = frames
        .iter()
        .skip(1)
        .position(|f| f.is_empty())
        .map_or(1, |i| i + 2);
    let body = frames.split_off(bottom.min(frames.len()));
    (frames, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Message> {
        parts.iter().map(|p| Message::from(*p)).collect()
    }

    fn texts(frames: &[Message]) -> Vec<Vec<u8>> {
        frames.iter().map(|f| f.to_vec()).collect()
    }

    #[test]
    fn req_envelope_is_routing_id_and_delimiter() {
        let (envelope, body) = split_envelope(frames(&[b"rid", b"", b"{}"]));
        assert_eq!(texts(&envelope), [b"rid".to_vec(), vec![]]);
        assert_eq!(texts(&body), [b"{}".to_vec()]);
    }

    #[test]
    fn proxied_envelope_is_kept_whole() {
        let (envelope, body) = split_envelope(frames(&[b"rid", b"hop", b"", b"{}", b"x"]));
        assert_eq!(envelope.len(), 3);
        assert_eq!(body.len(), 2);
    }

    #[test]
    fn dealer_without_delimiter() {
        let (envelope, body) = split_envelope(frames(&[b"rid", b"{}"]));
        assert_eq!(texts(&envelope), [b"rid".to_vec()]);
        assert_eq!(texts(&body), [b"{}".to_vec()]);
    }
}
