//! A PULL thread: owns one type's PULL socket, connected to that type's
//! endpoint on every router, and hands what it reads to the type's worker
//! in batches.
//!
//! It reads in bounded bursts (up to `batch_max` messages without waiting)
//! so a busy sink pays one channel hand-off and one store transaction per
//! burst. The channel to the worker is bounded: when the worker falls
//! behind, this thread blocks handing over, stops reading, and the backlog
//! waits in libzmq's queue and then the routers' (which answer
//! `overloaded` when theirs is full). The worker always drains the channel,
//! so the hand-off never blocks shutdown for long.
//!
//! On shutdown (the doorbell rings) it stops reading at once and drops its
//! sender: the worker finishes what it was handed and ends.

use super::config::SinkType;
use super::worker::{Batch, Raw};
use crate::doorbell::Doorbell;
use crate::signals::ShutdownWatch;
use crossbeam_channel::Sender;

pub struct PullThread {
    pub kind: SinkType,
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub batches: Sender<Batch>,
    pub shutdown: ShutdownWatch,
    pub batch_max: usize,
}

impl PullThread {
    pub fn run(mut self) -> Result<(), String> {
        let kind = self.kind;
        while !self.shutdown.is_set() {
            let ready = self
                .bell
                .wait(&self.socket, zmq::POLLIN, -1)
                .map_err(|e| format!("{kind}: poll: {e}"))?;
            if !ready || self.shutdown.is_set() {
                continue;
            }
            let batch = self.burst().map_err(|e| format!("{kind}: recv: {e}"))?;
            if !batch.is_empty() && self.batches.send(batch).is_err() {
                return Err(format!("{kind}: the worker thread has gone"));
            }
        }
        Ok(())
    }

    /// Reads what is ready, up to `batch_max` messages.
    fn burst(&self) -> zmq::Result<Batch> {
        let mut batch = Vec::new();
        while batch.len() < self.batch_max {
            match recv_message(&self.socket) {
                Ok(raw) => batch.push(raw),
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(batch)
    }
}

/// One whole multipart message, without waiting. libzmq delivers the parts
/// of a message together, so once the first is in, the rest are too.
fn recv_message(socket: &zmq::Socket) -> zmq::Result<Raw> {
    let mut parts = vec![socket.recv_bytes(zmq::DONTWAIT)?];
    while socket.get_rcvmore()? {
        parts.push(socket.recv_bytes(0)?);
    }
    Ok(parts)
}

/// Makes the PULL socket of `kind` and connects it to every endpoint, as
/// a CURVE client with `keys` (the routers' `VIGIL_SINK_KEYS` list them).
pub fn connect(
    ctx: &zmq::Context,
    endpoints: &[String],
    keys: Option<&crate::curve::ClientKeys>,
) -> Result<zmq::Socket, String> {
    let socket = ctx
        .socket(zmq::PULL)
        .map_err(|e| format!("PULL socket: {e}"))?;
    // Unread messages are for another sink of this type, or resent by the
    // agent: nothing to flush at close.
    socket.set_linger(0).map_err(|e| e.to_string())?;
    if let Some(keys) = keys {
        keys.apply(&socket).map_err(|e| e.to_string())?;
    }
    for endpoint in endpoints {
        socket
            .connect(endpoint)
            .map_err(|e| format!("connect {endpoint}: {e}"))?;
    }
    Ok(socket)
}
