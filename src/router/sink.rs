//! A sink thread: owns one type's PUSH socket and empties that type's queue
//! into it, adding the metadata frame.
//!
//! One thread per type, because a PUSH with no connected sink (or only full
//! ones) cannot send: that must stall this type's queue alone, never the
//! client thread or another type. While it cannot send, the thread sleeps in
//! `zmq::poll` for POLLOUT, woken by the shutdown doorbell.
//!
//! Shutdown drains: the thread keeps sending until the client thread has
//! dropped its end of the queue and the queue is empty, or until the drain
//! deadline passes, and then closes the socket with the time left as linger
//! so libzmq can flush what it holds to connected sinks.

use super::clients::Forward;
use super::metrics::Metrics;
use crate::doorbell::Doorbell;
use crate::protocol::MetadataWriter;
use crate::signals::ShutdownWatch;
use crossbeam_channel::Receiver;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SinkThread {
    pub index: usize,
    pub socket: zmq::Socket,
    pub queue: Receiver<Forward>,
    pub bell: Doorbell,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics<Forward>>,
    pub metadata: MetadataWriter,
    pub drain: Duration,
    /// Set once shutdown is noticed: the drain must end by then.
    pub deadline: Option<Instant>,
}

impl SinkThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        let mut buf = String::with_capacity(160);
        // Ends when the client thread has gone and the queue is empty.
        while let Ok(mut forward) = self.queue.recv() {
            if !self.send(&mut forward, &mut buf)? {
                self.abandon_rest();
                break;
            }
        }
        self.close()
    }

    /// Sends one message and its metadata. `Ok(false)` when the drain
    /// deadline passed first.
    fn send(&mut self, forward: &mut Forward, buf: &mut String) -> Result<bool, zmq::Error> {
        // libzmq reports a peer address for tcp only; ipc gives nothing.
        let peer = forward.frame.gets("Peer-Address").filter(|p| !p.is_empty());
        self.metadata.write(buf, forward.received_at_ms, peer);
        // Sent as a copy: rust-zmq drops a Message whose send fails, and a
        // full PUSH must not cost us the message.
        if !self.send_frame(&forward.frame, zmq::SNDMORE)? {
            return Ok(false);
        }
        // Once the first part is accepted libzmq takes the rest at once.
        if !self.send_frame(buf.as_bytes(), 0)? {
            return Ok(false);
        }
        self.metrics.types[self.index]
            .forwarded
            .fetch_add(1, Relaxed);
        Ok(true)
    }

    fn send_frame(&mut self, data: &[u8], flags: i32) -> Result<bool, zmq::Error> {
        loop {
            match self.socket.send(data, flags | zmq::DONTWAIT) {
                Ok(()) => return Ok(true),
                Err(zmq::Error::EAGAIN) => {
                    if !self.wait_writable()? {
                        return Ok(false);
                    }
                }
                Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps until the PUSH can take a message. `Ok(false)` once the drain
    /// deadline has passed.
    fn wait_writable(&mut self) -> Result<bool, zmq::Error> {
        loop {
            if self.deadline.is_none() && self.shutdown.is_set() {
                self.deadline = Some(Instant::now() + self.drain);
            }
            let timeout = match self.deadline {
                None => -1,
                Some(d) if d <= Instant::now() => return Ok(false),
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i64 + 1,
            };
            let mut items = [
                self.socket.as_poll_item(zmq::POLLOUT),
                self.bell.poll_item(),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e),
            }
            let (writable, rung) = (items[0].is_writable(), items[1].is_readable());
            if rung {
                self.bell.clear();
            }
            if writable {
                return Ok(true);
            }
        }
    }

    /// At the drain deadline: counts and reports what cannot be delivered.
    fn abandon_rest(&mut self) {
        let lost = 1 + self.queue.try_iter().count() as u64;
        let stats = &self.metrics.types[self.index];
        stats.dropped_at_exit.fetch_add(lost, Relaxed);
        log::warn!(
            "{}: no sink took {lost} queued message(s) before the drain deadline; dropped",
            stats.name
        );
    }

    /// Closes the socket, leaving libzmq the rest of the drain time to flush.
    fn close(self) -> Result<(), zmq::Error> {
        let left = match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.drain,
        };
        self.socket.set_linger(left.as_millis() as i32)?;
        Ok(())
    }
}
