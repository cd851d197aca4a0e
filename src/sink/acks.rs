//! The ack thread: the only owner of the REQ sockets to the routers' back
//! ends, sending `{"type":"ack","to":UUID,"id":ID}` for every message a
//! worker has durably handled.
//!
//! Acks go through [`BackendClient`], which tries the router that answered
//! last and fails over on `unknown_client`, `unreachable` or a timeout.
//! Whatever is waiting is sent as one pipelined batch (up to [`BATCH`]),
//! so a busy sink pays about one round trip per batch, not per ack. A
//! failed ack is only logged: the agent keeps the message and resends it,
//! and the sink acks the duplicate then. Workers never wait for this
//! thread; they hand acks over a bounded channel.
//!
//! At shutdown the workers drop their senders once their last batch is
//! committed; this thread sends what is queued, but once shutdown has
//! begun only until the drain deadline; the rest is counted as failed.

use super::message::Incoming;
use super::metrics::Metrics;
use crate::backend_client::BackendClient;
use crate::protocol::ToClient;
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crossbeam_channel::Receiver;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An ack to send: the client and the id of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub to: String,
    pub id: String,
}

impl Ack {
    /// The ack of a message that asked for one (it has an id then).
    pub fn of(msg: &Incoming) -> Ack {
        Ack {
            to: msg.uuid.clone(),
            id: msg.id.clone().unwrap_or_default(),
        }
    }

    /// The frame the router delivers, byte for byte, to the client.
    pub fn frame(&self) -> Vec<u8> {
        ToClient::Ack {
            to: self.to.clone(),
            id: self.id.clone(),
        }
        .to_frame()
    }
}

pub struct AckThread {
    pub client: BackendClient,
    pub acks: Receiver<Ack>,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownWatch,
    pub drain: Duration,
}

/// Most acks sent as one pipelined batch.
pub const BATCH: usize = 1_024;

impl AckThread {
    pub fn run(mut self) -> Result<(), String> {
        let mut failures = RateLimit::new(Duration::from_secs(10));
        let mut deadline: Option<Instant> = None;
        // Ends when every worker has dropped its sender and the queue is empty.
        while let Ok(first) = self.acks.recv() {
            let mut batch = vec![first];
            batch.extend(self.acks.try_iter().take(BATCH - 1));
            if self.shutdown.is_set() {
                let at = *deadline.get_or_insert_with(|| Instant::now() + self.drain);
                if Instant::now() >= at {
                    let left = batch.len() + self.acks.len();
                    self.metrics.acks_failed.fetch_add(left as u64, Relaxed);
                    log::warn!(
                        "acks: drain deadline passed, {left} ack(s) not sent (the agents resend)"
                    );
                    return Ok(());
                }
            }
            let frames: Vec<Vec<u8>> = batch.iter().map(Ack::frame).collect();
            let results = self.client.deliver_batch(&frames);
            for (ack, result) in batch.iter().zip(results) {
                match result {
                    Ok(_) => {
                        self.metrics.acks_sent.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        self.metrics.acks_failed.fetch_add(1, Relaxed);
                        failures.warn(format_args!(
                            "ack of {} to {} not delivered (the agent will resend): {e}",
                            ack.id, ack.to
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_frame_text_is_pinned() {
        let ack = Ack {
            to: "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b".into(),
            id: "m\"1".into(),
        };
        assert_eq!(
            String::from_utf8(ack.frame()).unwrap(),
            r#"{"type":"ack","to":"0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b","id":"m\"1"}"#
        );
    }
}
