//! The link thread: the only owner of the DEALER connected to every router.
//!
//! Other threads hand it frames over one bounded channel and ring its
//! doorbell. It sends `hello` and heartbeats, keeps unacked traffic in a
//! bounded memory queue while no router is reachable, keeps what it sent
//! for a while and queues again what a router refused as `overloaded`
//! (after a backoff, see `refused.rs`), sends spooled
//! (acked) messages and resends them with backoff until their `ack`, and
//! passes `run_plugin` requests to the plugin manager.
//!
//! Reachability comes from the socket itself: with `ZMQ_IMMEDIATE` a
//! DEALER queues only to completed connections, so a non-blocking send
//! fails with EAGAIN exactly when no router is connected (or all are at
//! their high-water mark), and POLLOUT says when one is again.
//!
//! Architecture invariant: nothing in this loop blocks except `zmq::poll`,
//! which the doorbell interrupts.

use super::channels::{PluginEvent, PluginTx, SpoolCmd, ToLink};
use super::handshakes::{self, Redial};
use super::message;
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, OutQueue, Outgoing};
use super::refused::Refused;
use super::resend::Resend;
use crate::doorbell::Doorbell;
use crate::protocol::{RejectCode, Stats, ToClient};
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from the DEALER per wake-up before looking at the rest.
const BURST: usize = 256;
/// At most one log line per this window for router error replies.
const ERROR_LOG_WINDOW: Duration = Duration::from_secs(10);

pub struct LinkThread {
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub rx: Receiver<ToLink>,
    pub uuid: String,
    pub hostname: String,
    pub heartbeat: Duration,
    pub queue: OutQueue,
    /// Unacked messages sent lately, in case a router refuses them.
    pub refused: Refused,
    pub resend: Resend,
    pub plugins: PluginTx,
    pub spool: Sender<SpoolCmd>,
    pub metrics: Arc<AgentMetrics>,
    pub shutdown: ShutdownWatch,
    pub stats_interval: Option<Duration>,
    pub drain: Duration,
    /// Whether the last send attempt found a router.
    pub reachable: bool,
    /// Acked ids not yet handed to the spool thread. Handed over with
    /// `try_send` only: the spool thread may itself be waiting for room in
    /// this thread's channel, and a blocking send here would deadlock the
    /// two. Bounded by the spool's own size.
    pub pending_done: Vec<String>,
    /// Under CURVE: routers that refused this agent's key (see
    /// `handshakes.rs`), and when to dial each again.
    pub refused_handshakes: Option<Receiver<String>>,
    pub redial: Redial,
    /// `VIGIL_ROUTERS` as configured, for dialling one again.
    pub routers: Vec<String>,
}

impl LinkThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        self.enqueue(Outgoing::with_id(
            Kind::Other,
            message::hello(&self.uuid),
            None,
        ));
        let mut next_heartbeat = Instant::now();
        let mut next_stats = self.stats_interval.map(|i| Instant::now() + i);
        let mut error_log = RateLimit::new(ERROR_LOG_WINDOW);
        loop {
            let now = Instant::now();
            if now >= next_heartbeat {
                let id = message::next_id();
                let frame =
                    message::heartbeat(&self.uuid, &self.hostname, self.heartbeat.as_secs(), &id);
                self.enqueue(Outgoing::with_id(Kind::Heartbeat, frame, Some(id)));
                next_heartbeat = now + self.heartbeat;
            }
            if let (Some(at), Some(interval)) = (next_stats, self.stats_interval) {
                if now >= at {
                    self.publish_gauges();
                    log::info!("{}", self.metrics.summary_line());
                    self.queue_own_stats(interval);
                    next_stats = Some(now + interval);
                }
            }
            self.take_channel();
            self.redial_refused(Instant::now());
            self.hand_over_dones();
            self.requeue_refused(Instant::now());
            self.flush(Instant::now());
            let mut wake = next_heartbeat;
            if let Some(at) = next_stats {
                wake = wake.min(at);
            }
            if let Some(at) = self.refused.next_due() {
                wake = wake.min(at);
            }
            if let Some(at) = self.redial.next_due() {
                wake = wake.min(at);
            }
            // Unreachable: POLLOUT, not a timer, says when to try again.
            if let Some(at) = self.resend.next_due().filter(|_| self.reachable) {
                wake = wake.min(at);
            }
            let timeout = wake.saturating_duration_since(Instant::now()).as_millis() as i64;
            let want_out = !self.queue.is_empty()
                || self.resend.next_due().is_some_and(|t| t <= Instant::now());
            let events = if want_out {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            // When only waiting for POLLOUT, a timer still bounds the wait.
            let ready = self.bell.wait(&self.socket, events, timeout.max(1))?;
            if self.shutdown.is_set() {
                return self.drain_and_stop();
            }
            if ready {
                self.read_burst(&mut error_log)?;
            }
        }
    }

    /// Notes routers that refused the agent's key, and dials again those
    /// whose wait is over (libzmq itself never does after a refusal).
    fn redial_refused(&mut self, now: Instant) {
        if let Some(rx) = &self.refused_handshakes {
            while let Ok(reported) = rx.try_recv() {
                match handshakes::configured(&self.routers, &reported) {
                    Some(router) => self.redial.refused(router.to_string(), now),
                    None => log::warn!(
                        "router {reported} refused this agent's CURVE key, and it matches no \
                         VIGIL_ROUTERS entry to dial again: restart the agent once enrolled"
                    ),
                }
            }
        }
        for router in self.redial.take_due(now) {
            // The endpoint was dropped by libzmq after the refusal; the
            // disconnect only clears its record so connect takes it anew.
            let _ = self.socket.disconnect(&router);
            if let Err(e) = self.socket.connect(&router) {
                log::warn!("dialling router {router} again failed: {e}");
            }
        }
    }

    /// Moves everything waiting in the channel into the queue or the
    /// resend book.
    fn take_channel(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                ToLink::Send(item) => self.enqueue(item),
                ToLink::Spooled(entry) => self.resend.add(entry),
            }
        }
    }

    /// Puts refused messages whose backoff is over back into the queue.
    fn requeue_refused(&mut self, now: Instant) {
        for item in self.refused.due(now) {
            self.queue.requeue(item);
        }
        self.refused.forget_old(now);
    }

    /// Sends what can be sent now: queued unacked traffic, then acked
    /// messages that are fresh or due again.
    fn flush(&mut self, now: Instant) {
        while let Some(item) = self.queue.pop() {
            if !self.try_send(&item.frame) {
                self.queue.unpop(item);
                break;
            }
            self.refused.sent(item, now);
            AgentMetrics::add(&self.metrics.sent, 1);
        }
        let mut due = self.resend.due(now).into_iter();
        while let Some(id) = due.next() {
            let Some(frame) = self.resend.frame(&id).map(<[u8]>::to_vec) else {
                continue;
            };
            if !self.try_send(&frame) {
                // This one and the rest go back, in their order.
                self.resend.unsent(std::iter::once(id).chain(due).collect());
                break;
            }
            AgentMetrics::add(&self.metrics.sent, 1);
            if self.resend.sent(&id, now) {
                AgentMetrics::add(&self.metrics.resent, 1);
            }
        }
    }

    /// One non-blocking send; `false` when no router can take it now.
    fn try_send(&mut self, frame: &[u8]) -> bool {
        match self.socket.send(frame, zmq::DONTWAIT) {
            Ok(()) => {
                if !self.reachable {
                    log::info!("a router is reachable: sending queued messages");
                    self.reachable = true;
                }
                true
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                if self.reachable {
                    log::warn!("no router reachable: queueing (acked messages stay in the spool)");
                    self.reachable = false;
                }
                false
            }
            Err(e) => {
                // Not a reachability problem: the frame itself failed.
                log::error!("DEALER send failed: {e}; dropping one frame");
                true
            }
        }
    }

    fn read_burst(&mut self, error_log: &mut RateLimit) -> Result<(), zmq::Error> {
        for _ in 0..BURST {
            let frame = match self.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(frame) => frame,
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
                Err(e) => return Err(e),
            };
            // POLLOUT may have been what woke us; any read is also a sign of life.
            self.handle_inbound(&frame, error_log);
        }
        Ok(())
    }

    fn handle_inbound(&mut self, frame: &[u8], error_log: &mut RateLimit) {
        match ToClient::parse(frame) {
            Ok(ToClient::Welcome { router, .. }) => log::info!("welcomed by router {router:?}"),
            Ok(ToClient::Ack { id, .. }) => {
                if self.resend.ack(&id) {
                    AgentMetrics::add(&self.metrics.acked, 1);
                    self.pending_done.push(id);
                }
            }
            Ok(ToClient::RunPlugin { plugin, run_id, .. }) => {
                self.plugins.send(PluginEvent::Run { plugin, run_id });
            }
            Ok(ToClient::Error { error, detail, id }) => {
                self.router_refused(error, &detail, id, error_log)
            }
            Err(what) => {
                if let Some(suppressed) = error_log.allow() {
                    log::warn!(
                        "ignoring a message from a router: {what} ({suppressed} suppressed)"
                    );
                }
            }
        }
    }

    /// A router's `error` reply. A spooled message stays due on its
    /// backoff: it is simply sent again later. An unacked one refused as
    /// overloaded goes back into the queue after its own backoff. Anything
    /// else is counted and logged.
    fn router_refused(
        &mut self,
        code: RejectCode,
        detail: &str,
        id: Option<String>,
        error_log: &mut RateLimit,
    ) {
        AgentMetrics::add(&self.metrics.router_errors, 1);
        let spooled = id.as_deref().is_some_and(|id| self.resend.contains(id));
        let kept = !spooled
            && code == RejectCode::Overloaded
            && id
                .as_deref()
                .is_some_and(|id| self.refused.refused(id, Instant::now()));
        if let Some(suppressed) = error_log.allow() {
            log::warn!(
                "router refused a message: {code}: {detail} (id {id:?}{}; {suppressed} \
                 similar lines suppressed)",
                if spooled || kept { ", will resend" } else { "" }
            );
        }
    }

    /// The agent's own counters as a `stats` message (`vigil.agent.*`), so
    /// the monitor is monitored like everything else.
    fn queue_own_stats(&mut self, interval: Duration) {
        let metrics = self
            .metrics
            .values()
            .into_iter()
            .map(|(name, value)| (format!("vigil.agent.{name}"), value.into()))
            .collect();
        let body = Stats {
            hostname: self.hostname.clone(),
            source: Some("vigil-agent".into()),
            interval_s: Some(interval.as_secs()),
            metrics,
        };
        let frame = message::frame(&self.uuid, &body);
        self.enqueue(Outgoing::new(Kind::AgentStats, frame));
    }

    /// Queues a new message; one that supersedes others drops them from
    /// the queue and from the refused ones waiting to go again.
    fn enqueue(&mut self, item: Outgoing) {
        self.refused.supersede(item.kind);
        self.queue.push(item);
        if self.queue.wants_pruning() {
            self.queue.prune(self.refused.oldest_seq());
        }
    }

    fn publish_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics
            .queue_len
            .store(self.queue.len() as u64, Relaxed);
        self.metrics
            .spool_live
            .store(self.resend.len() as u64, Relaxed);
        self.metrics.dropped_stats.store(
            self.queue.dropped_stats + self.refused.dropped_stats,
            Relaxed,
        );
        self.metrics.dropped_other.store(
            self.queue.dropped_other + self.refused.dropped_other,
            Relaxed,
        );
        self.metrics
            .superseded
            .store(self.queue.superseded + self.refused.superseded, Relaxed);
        self.metrics
            .refused_retried
            .store(self.refused.retried, Relaxed);
        self.metrics
            .refused_lost
            .store(self.refused.unknown, Relaxed);
        self.metrics
            .refused_held
            .store(self.refused.held() as u64, Relaxed);
    }

    /// Tells the spool thread about acks, as far as its channel has room;
    /// the rest wait for the next turn of the loop.
    fn hand_over_dones(&mut self) {
        let mut handed = 0;
        for id in &self.pending_done {
            match self.spool.try_send(SpoolCmd::Done(id.clone())) {
                Ok(()) => handed += 1,
                Err(_) => break,
            }
        }
        self.pending_done.drain(..handed);
    }

    /// On shutdown: take what the channel holds, try to send the queue for
    /// at most `drain`, then let the socket's linger flush it within what
    /// is left of `drain`. The channel is read again on every turn: other
    /// threads still hand over their last messages (statsd's final flush,
    /// results of runs ending), and those come in after the first read.
    fn drain_and_stop(mut self) -> Result<(), zmq::Error> {
        self.take_channel();
        self.hand_over_dones();
        if !self.pending_done.is_empty() {
            // Not lost: their messages are resent after the restart and
            // the sinks drop the duplicates.
            log::warn!(
                "stopping with {} ack(s) not yet recorded in the spool",
                self.pending_done.len()
            );
        }
        // One more try for the refused ones, whatever their backoff:
        // after this they would be lost anyway.
        for item in self.refused.take_all() {
            self.queue.requeue(item);
        }
        let deadline = Instant::now() + self.drain;
        loop {
            self.take_channel();
            self.flush(Instant::now());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.queue.is_empty() || left.is_zero() {
                break;
            }
            // The doorbell too: a late message may come while we wait.
            let timeout = left.as_millis() as i64;
            let _ = self.bell.wait(&self.socket, zmq::POLLOUT, timeout)?;
        }
        // What came during the last wait: one try, else counted as unsent.
        self.take_channel();
        self.flush(Instant::now());
        // The context's end waits out the linger: set as configured (the
        // whole drain), shutdown would take up to twice VIGIL_DRAIN_MS.
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.socket.set_linger(linger_ms(left)) {
            log::warn!("cannot shorten the DEALER's linger: {e}");
        }
        self.publish_gauges();
        // The refused ones are in the queue by now (`take_all` above).
        if !self.queue.is_empty() {
            log::warn!("stopping with {} unacked messages unsent", self.queue.len());
        }
        Ok(())
    }
}

/// `ZMQ_LINGER` for a duration.
pub fn linger_ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// The DEALER's options: routing id (none under CURVE: the router assigns
/// one and routes by the authenticated UUID), linger, reconnect with
/// jitter, ZMTP heartbeats, IMMEDIATE so reachability is visible.
pub fn configure_dealer(
    socket: &zmq::Socket,
    routing_id: Option<&str>,
    config: &super::config::AgentConfig,
    jitter: f64,
) -> zmq::Result<()> {
    if let Some(id) = routing_id {
        socket.set_identity(id.as_bytes())?;
    }
    socket.set_linger(linger_ms(config.drain))?;
    socket.set_immediate(true)?;
    // Each agent starts from its own interval in [base, 2*base), so a
    // router restart is not met by every agent in the same instant; libzmq
    // then doubles it up to the maximum.
    let ivl = config.reconnect_ms + (config.reconnect_ms as f64 * jitter) as i32;
    socket.set_reconnect_ivl(ivl)?;
    socket.set_reconnect_ivl_max(config.reconnect_max_ms.max(ivl))?;
    if config.zmtp_heartbeat_ms > 0 {
        socket.set_heartbeat_ivl(config.zmtp_heartbeat_ms)?;
        socket.set_heartbeat_timeout(config.zmtp_heartbeat_ms.saturating_mul(3))?;
        socket.set_heartbeat_ttl(config.zmtp_heartbeat_ms.saturating_mul(3).min(6_553_000))?;
    }
    socket.set_sndhwm(1_000)?;
    socket.set_rcvhwm(1_000)?;
    Ok(())
}
