//! The back-end thread: owns the REP socket that sinks and the scheduler
//! use to reach clients (`to`) and to read the router's counters (`status`).
//!
//! Deliveries are handed to the client thread, which alone may send on the
//! client ROUTER, and this thread waits for its answer: REP is strictly one
//! request, one reply, so there is never more than one in flight. `status`
//! is answered here from the shared counters, without asking anyone.

use super::clients::{Command, Forward};
use super::metrics::Metrics;
use crate::doorbell::{Doorbell, Ringer};
use crate::protocol::{self, BackendRequest, Delivery};
use crate::signals::ShutdownWatch;
use crossbeam_channel::{bounded, Sender};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use zmq::Message;

/// How long a delivery may wait for the client thread. It answers between
/// bursts, within milliseconds; this only bounds a wedged or dying router.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct BackendThread {
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub commands: Sender<Command>,
    pub client_bell: Ringer,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics<Forward>>,
    pub router_name: String,
    pub max_message_bytes: usize,
}

impl BackendThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        loop {
            let mut items = [self.socket.as_poll_item(zmq::POLLIN), self.bell.poll_item()];
            match zmq::poll(&mut items, -1) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e),
            }
            let (readable, rung) = (items[0].is_readable(), items[1].is_readable());
            if rung {
                self.bell.clear();
            }
            if self.shutdown.is_set() {
                return Ok(());
            }
            if readable {
                self.serve_one()?;
            }
        }
    }

    fn serve_one(&mut self) -> Result<(), zmq::Error> {
        let mut request = Message::new();
        match self.socket.recv(&mut request, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
            Err(e) => return Err(e),
        }
        let (frames, size) = self.consume_rest(&request)?;
        let reply = if frames > 1 {
            protocol::bad_request_frame(&format!("request has {frames} frames; send exactly one"))
        } else if size > self.max_message_bytes {
            let limit = self.max_message_bytes;
            protocol::bad_request_frame(&format!("request is {size} bytes; the limit is {limit}"))
        } else {
            self.answer(request)
        };
        // REP always has somewhere to put a reply; if the requester has gone,
        // libzmq discards it, which is all there is to do.
        if let Err(e) = self.socket.send(reply, zmq::DONTWAIT) {
            log::warn!("could not send a back-end reply: {e}");
        }
        Ok(())
    }

    /// Reads any further frames of the request; returns count and size.
    fn consume_rest(&self, first: &Message) -> Result<(usize, usize), zmq::Error> {
        let (mut frames, mut size, mut more) = (1, first.len(), first.get_more());
        while more {
            let mut part = Message::new();
            self.socket.recv(&mut part, 0)?;
            frames += 1;
            size += part.len();
            more = part.get_more();
        }
        Ok((frames, size))
    }

    fn answer(&self, request: Message) -> Vec<u8> {
        match protocol::parse_backend_request(&request) {
            Err(detail) => protocol::bad_request_frame(&detail),
            Ok(BackendRequest::Status) => {
                let status = self.metrics.status_json(&self.router_name);
                serde_json::to_vec(&status).expect("status always serializes")
            }
            Ok(BackendRequest::Deliver { to }) => self.deliver(to, request).to_frame(),
        }
    }

    fn deliver(&self, to: Uuid, frame: Message) -> Delivery {
        let (reply, outcome) = bounded(1);
        let command = Command::Deliver { to, frame, reply };
        if self.commands.try_send(command).is_err() {
            // The client thread has stopped: this router cannot reach anyone.
            return Delivery::Unreachable;
        }
        self.client_bell.ring();
        outcome
            .recv_timeout(DELIVERY_TIMEOUT)
            .unwrap_or(Delivery::Unreachable)
    }
}
