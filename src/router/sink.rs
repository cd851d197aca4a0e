//! A sink thread: owns one type's PUSH socket and empties that type's queue
//! into it, adding the metadata frame.
//!
//! One thread per type, because a PUSH with no connected sink (or only full
//! ones) cannot send: that must stall this type's queue alone, never the
//! client thread or another type. While it cannot send, the thread sleeps in
//! `zmq::poll` for POLLOUT, woken by the shutdown doorbell.
//!
//! Messages arrive in batches (one per client-thread burst), which keeps
//! channel traffic and wake-ups per burst rather than per message; the
//! type's `queued` counter is lowered as each batch is done.
//!
//! Shutdown drains: the thread keeps sending until the client thread has
//! dropped its end of the queue and the queue is empty, or until the drain
//! deadline passes, and then closes the socket with the time left as linger
//! so libzmq can flush what it holds to connected sinks.
//!
//! Under CURVE, when a key is removed from `VIGIL_SINK_KEYS`, the ZAP
//! thread asks for a rebuild: a PUSH has no way to drop one peer, so the
//! socket is closed (linger 0) and a new one bound to the same endpoint,
//! and only sinks whose keys are still listed pass the handshake again.
//! The cost: what libzmq held in the old socket's pipes for connected
//! sinks (up to `VIGIL_SINK_HWM` per sink) is lost, and every sink of the
//! type reconnects (libzmq retries within its reconnect interval, 100 ms
//! by default): at most once, like a router restart for this type. Acked
//! types lose nothing by it (their agents resend until a sink acks).

use super::clients::{Batch, Forward};
use super::metrics::Metrics;
use super::pressure::RoomBell;
use crate::doorbell::Doorbell;
use crate::protocol::MetadataWriter;
use crate::signals::ShutdownWatch;
use crate::zmq_send::{send_keeping, share};
use crossbeam_channel::Receiver;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a sink thread makes its PUSH socket anew (see the module comment).
pub struct Remake {
    pub requests: Receiver<()>,
    /// A fresh socket, configured as the first one, not yet bound.
    pub make: Box<dyn Fn() -> zmq::Result<zmq::Socket> + Send>,
    /// The endpoint the first socket bound (wildcards resolved).
    pub endpoint: String,
}

/// How long a rebuilt socket may wait for its old port to be released.
const REBIND_WAIT: Duration = Duration::from_secs(5);

pub struct SinkThread {
    pub index: usize,
    pub socket: zmq::Socket,
    pub queue: Receiver<Batch>,
    pub bell: Doorbell,
    pub shutdown: ShutdownWatch,
    pub metrics: Arc<Metrics>,
    pub metadata: MetadataWriter,
    pub drain: Duration,
    /// Set once shutdown is noticed: the drain must end by then.
    pub deadline: Option<Instant>,
    /// Told each time room is freed, for a client thread waiting on it.
    pub room: Arc<RoomBell>,
    /// The last metadata frame built, reused while it fits.
    pub last_meta: MetaCache,
    /// Under CURVE: rebuild requests from the ZAP thread.
    pub remake: Option<Remake>,
}

/// The metadata frame of the previous message and what it says. Messages
/// of one burst mostly share the millisecond and (behind one NAT or on
/// loopback) the peer, so their metadata is the same bytes: the frame is
/// then shared (a reference count in libzmq) instead of formatted and
/// allocated again per message.
#[derive(Default)]
pub struct MetaCache {
    received_at_ms: u64,
    peer: Option<String>,
    frame: Option<zmq::Message>,
}

impl MetaCache {
    /// The cached frame, if it says exactly this.
    fn get(&mut self, received_at_ms: u64, peer: Option<&str>) -> Option<zmq::Message> {
        let same = self.received_at_ms == received_at_ms && self.peer.as_deref() == peer;
        match &mut self.frame {
            Some(frame) if same => Some(share(frame)),
            _ => None,
        }
    }

    fn put(&mut self, received_at_ms: u64, peer: Option<&str>, frame: &mut zmq::Message) {
        self.received_at_ms = received_at_ms;
        if self.peer.as_deref() != peer {
            self.peer = peer.map(str::to_owned);
        }
        self.frame = Some(share(frame));
    }
}

/// `forwarded` is raised every this many messages sent. (The depth is
/// lowered per message as it is taken in hand, before its send, so a
/// message a sink has is never still counted as queued and a client thread
/// waiting for room sees progress even from a slow sink; the thread so
/// holds one message beyond `VIGIL_QUEUE_CAPACITY`.)
const RELEASE_EVERY: usize = 64;

impl SinkThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        let mut buf = String::with_capacity(160);
        // Ends when the client thread has gone and the queue is empty.
        while let Some(batch) = self.next_batch()? {
            let total = batch.len();
            // Lowers `queued` by the chunks it took in hand; the rest is
            // done here.
            let (sent, lowered) = self.send_batch(batch, &mut buf)?;
            if sent < total {
                // Not forwarded: `abandon_rest` counts them as dropped.
                let stats = &self.metrics.types[self.index];
                stats.queued.fetch_sub(total - lowered, Relaxed);
                self.abandon_rest(total - sent);
                break;
            }
        }
        self.close()
    }

    /// The next batch, rebuilding the socket whenever asked meanwhile.
    fn next_batch(&mut self) -> Result<Option<Batch>, zmq::Error> {
        loop {
            let Some(remake) = &self.remake else {
                return Ok(self.queue.recv().ok());
            };
            let rebuild = crossbeam_channel::select! {
                recv(self.queue) -> batch => return Ok(batch.ok()),
                recv(remake.requests) -> request => request.is_ok(),
            };
            if rebuild {
                self.rebuild()?;
            } else {
                // The ZAP thread has stopped: no more rebuilds.
                self.remake = None;
            }
        }
    }

    /// Replaces the socket if a rebuild was asked for.
    fn rebuild_if_asked(&mut self) -> Result<(), zmq::Error> {
        let asked = self
            .remake
            .as_ref()
            .is_some_and(|r| r.requests.try_recv().is_ok());
        if asked {
            self.rebuild()?;
        }
        Ok(())
    }

    /// Closes the PUSH socket and binds a new one to the same endpoint.
    fn rebuild(&mut self) -> Result<(), zmq::Error> {
        let Some(remake) = &self.remake else {
            return Ok(());
        };
        let fresh = (remake.make)()?;
        let old = std::mem::replace(&mut self.socket, fresh);
        old.set_linger(0)?;
        drop(old);
        let deadline = Instant::now() + REBIND_WAIT;
        loop {
            match self.socket.bind(&remake.endpoint) {
                Ok(()) => break,
                Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                    // The old listener is closed by libzmq's reaper thread
                    // a moment after the drop; there is nothing to wait on.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        log::info!(
            "{}: PUSH socket made anew on {} after a sink key was removed",
            self.kind(),
            remake.endpoint
        );
        Ok(())
    }

    /// Sends a batch; returns how many went out before the drain deadline,
    /// and by how many it lowered the depth.
    fn send_batch(&mut self, batch: Batch, buf: &mut String) -> Result<(usize, usize), zmq::Error> {
        let (mut sent, mut lowered, mut unforwarded) = (0, 0, 0);
        for mut forward in batch {
            self.take_in_hand(1);
            lowered += 1;
            if !self.send(&mut forward, buf)? {
                break;
            }
            sent += 1;
            unforwarded += 1;
            if unforwarded == RELEASE_EVERY {
                self.forwarded(unforwarded);
                unforwarded = 0;
            }
        }
        self.forwarded(unforwarded);
        Ok((sent, lowered))
    }

    /// Takes `n` messages out of the queue's depth and tells a waiting
    /// client thread there is room.
    fn take_in_hand(&self, n: usize) {
        // SeqCst: see `RoomBell::want` (the same instruction on x86).
        self.metrics.types[self.index].queued.fetch_sub(n, SeqCst);
        self.room.freed(self.index);
    }

    fn forwarded(&self, n: usize) {
        if n > 0 {
            let stats = &self.metrics.types[self.index];
            stats.forwarded.fetch_add(n as u64, Relaxed);
        }
    }

    /// Sends one message and its metadata. `Ok(false)` when the drain
    /// deadline passed first.
    fn send(&mut self, forward: &mut Forward, buf: &mut String) -> Result<bool, zmq::Error> {
        let at = forward.received_at_ms;
        let mut metadata = {
            let peer = match &forward.peer {
                Some(peer) => Some(&peer[..]),
                // libzmq reports a peer address for tcp only; ipc gives nothing.
                None => forward.frame.gets("Peer-Address").filter(|p| !p.is_empty()),
            };
            match self.last_meta.get(at, peer) {
                Some(frame) => frame,
                None => {
                    self.metadata.write(buf, at, peer);
                    let mut frame = zmq::Message::from(buf.as_bytes());
                    self.last_meta.put(at, peer, &mut frame);
                    frame
                }
            }
        };
        loop {
            let mut first = share(&mut forward.frame);
            if !self.send_frame(&mut first, zmq::SNDMORE)? {
                return Ok(false);
            }
            // A PUSH never refuses a later part for being full; it refuses
            // one only when the sink that took the first part has gone, and
            // then it has discarded that part too. So a refusal here means
            // the whole message must go again, to another sink: sending the
            // metadata alone would hand some sink a one-frame message.
            // A failed send leaves `metadata` whole for the retry.
            match send_keeping(&mut self.socket, &mut metadata, zmq::DONTWAIT) {
                Ok(()) => return Ok(true),
                Err(zmq::Error::EAGAIN) => {
                    log::debug!("{}: a sink left mid-message; resending", self.kind());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn kind(&self) -> &str {
        &self.metrics.types[self.index].name
    }

    fn send_frame(&mut self, frame: &mut zmq::Message, flags: i32) -> Result<bool, zmq::Error> {
        loop {
            match send_keeping(&mut self.socket, frame, flags | zmq::DONTWAIT) {
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
            let writable = self.bell.wait(&self.socket, zmq::POLLOUT, timeout)?;
            if writable {
                return Ok(true);
            }
            self.rebuild_if_asked()?;
        }
    }

    /// At the drain deadline: counts and reports what cannot be delivered,
    /// `unsent` of the batch in hand and every batch still queued.
    fn abandon_rest(&mut self, unsent: usize) {
        let stats = &self.metrics.types[self.index];
        let queued: usize = self.queue.try_iter().map(|b| b.len()).sum();
        stats.queued.fetch_sub(queued, Relaxed);
        let lost = (unsent + queued) as u64;
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
