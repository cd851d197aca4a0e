//! The client thread: owns the client ROUTER socket and the UUID table.
//!
//! It reads client messages in bounded bursts, validates each, and either
//! answers it (`welcome`, `error`) or adds the frame to its type's batch.
//! At the end of a burst each batch goes to its type's sink thread. When a
//! type's queue already holds `VIGIL_QUEUE_CAPACITY` messages this thread
//! stops reading client input until there is room, for at most
//! `VIGIL_OVERLOAD_WAIT_MS` (see `pressure.rs`), so libzmq's high-water
//! marks push back on the clients; only a queue that stays full that long
//! gets `overloaded` replies. Between bursts, and while it waits, it serves
//! back-end deliveries sent to it by the back-end thread, since only the
//! ROUTER's owner may send on it and only the table's owner knows the
//! routes.
//!
//! Architecture invariant: nothing in this loop blocks except `zmq::poll`,
//! which the doorbell interrupts.

use super::admit::{self, Extra, Speaker};
use super::auth::{Access, Peer};
use super::metrics::Metrics;
use super::pressure::{Admission, Gate, OverloadReplies, RoomBell};
use super::table::ClientTable;
use crate::clock::unix_ms;
use crate::curve::PublicKey;
use crate::doorbell::Doorbell;
use crate::protocol::{self, Accepted, Delivery, RejectCode, Rejection, Target};
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use zmq::Message;

/// Messages read per burst before the loop looks at its doorbell again.
const BURST: usize = 512;
/// Within a burst, how often pending deliveries are served, so a delivery
/// waits for at most this many client messages, not a whole burst.
const DELIVERY_CHECK_EVERY: usize = 32;
/// The share of `VIGIL_QUEUE_CAPACITY` from which accepted frames are
/// copied out of libzmq's receive buffers (see [`detach`]): a queue that
/// deep is filling because its sinks are slow or gone, and may stay full.
/// Below it frames leave soon, and a copy costs more than the memory it
/// saves: it is allocated here and freed by libzmq's I/O thread once sent,
/// and the two threads then contend for the allocator's lock (with the
/// copy from a depth of 256, a healthy 100-client stream spent about 8 %
/// of the router's CPU in that lock, measured with perf). At half the
/// default capacity, frames that do not copy pin at most 2,048 receive
/// buffers of 8 KiB per type.
const COPY_SHARE: usize = 2;
/// Initial capacity of a burst's batch for one type.
const BATCH_START: usize = 64;
/// How often idle routes are swept and the table size published.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// At most one log line per error code in this window.
const REJECT_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Why a message of a revoked key is dropped, for the log.
const REVOKED: &str = "comes from a key no longer allowed";

/// A valid client frame on its way to a PUSH thread.
#[derive(Debug)]
pub struct Forward {
    pub frame: Message,
    pub received_at_ms: u64,
    /// The sender's address, when it was read here because `frame` is a
    /// copy without libzmq's metadata; otherwise the sink thread reads it.
    /// Shared between the messages of one connection (see [`detach`]).
    pub peer: Option<Arc<str>>,
}

/// The frames of one type accepted in one burst.
pub type Batch = Vec<Forward>;

/// Work the back-end thread asks of this thread.
#[derive(Debug)]
pub enum Command {
    /// Send `frame` to the client `to`; answer on `reply`. After
    /// `deadline` the back end has answered `unreachable` already, so the
    /// frame must not go out (the back end may be retrying elsewhere).
    Deliver {
        to: Uuid,
        frame: Message,
        reply: Sender<Delivery>,
        deadline: Instant,
    },
    /// Under CURVE: the key files changed (from the ZAP thread). Routes of
    /// removed keys go now, and their connections' messages are refused.
    Access(Arc<Access>),
}

pub struct ClientThread {
    pub socket: zmq::Socket,
    pub bell: Doorbell,
    pub commands: Receiver<Command>,
    /// One queue per sink type, in the order of `sink_types`.
    pub queues: Vec<Sender<Batch>>,
    /// Messages accepted this burst, per type, not yet sent to the queue.
    pub pending: Vec<Batch>,
    /// Most messages queued per type (`VIGIL_QUEUE_CAPACITY`).
    pub queue_capacity: usize,
    pub sink_types: Vec<String>,
    pub table: ClientTable,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownWatch,
    pub router_name: String,
    pub max_message_bytes: usize,
    pub stats_interval: Option<Duration>,
    /// Back-pressure per type, in the order of `sink_types`.
    pub gates: Vec<Gate>,
    /// How the sink threads wake this thread while it waits for room.
    pub room: Arc<RoomBell>,
    /// Longest wait for room without progress (`VIGIL_OVERLOAD_WAIT_MS`).
    pub overload_wait: Duration,
    pub overload_replies: OverloadReplies,
    pub reject_log: RejectLog,
    /// The clock read once per burst (and after a wait), as the
    /// `received_at` of the burst's messages: one system call per burst,
    /// and runs of equal metadata the sink threads can reuse.
    pub burst_ms: u64,
    /// The peer address of the last copied frame, shared by the next ones
    /// from the same address instead of allocated per message.
    pub last_peer: Option<Arc<str>>,
    /// Under CURVE, the key set every message's connection is checked
    /// against; `None` in plaintext.
    pub access: Option<Arc<Access>>,
    /// The last peer found allowed under the current `access` (cleared
    /// when it changes): a burst mostly comes from few connections, and
    /// the check costs a SHA-256 per message in derived mode.
    pub last_allowed: Option<Peer>,
}

/// When the periodic work is next due.
struct Timers {
    housekeeping: Instant,
    stats: Option<Instant>,
}

impl ClientThread {
    pub fn run(mut self) -> Result<(), zmq::Error> {
        let start = Instant::now();
        let mut timers = Timers {
            housekeeping: start + HOUSEKEEPING,
            stats: self.stats_interval.map(|d| start + d),
        };
        loop {
            let readable = self.wait(&timers)?;
            if self.shutdown.is_set() {
                break;
            }
            self.serve_commands();
            if readable {
                self.read_burst()?;
            }
            self.periodic(&mut timers);
        }
        log::info!("client socket closing; {}", self.metrics.summary_line());
        Ok(())
    }

    /// Sleeps until the socket is readable, the bell rings or a timer is due.
    fn wait(&mut self, timers: &Timers) -> Result<bool, zmq::Error> {
        let next = timers
            .stats
            .map_or(timers.housekeeping, |s| s.min(timers.housekeeping));
        let timeout = next.saturating_duration_since(Instant::now()).as_millis() as i64;
        self.bell.wait(&self.socket, zmq::POLLIN, timeout)
    }

    fn periodic(&mut self, timers: &mut Timers) {
        let now = Instant::now();
        if now >= timers.housekeeping {
            let expired = self.table.expire(unix_ms() / 1000);
            if expired > 0 {
                log::debug!("expired {expired} idle client routes");
            }
            self.publish_clients();
            timers.housekeeping = now + HOUSEKEEPING;
        }
        if let (Some(due), Some(every)) = (timers.stats, self.stats_interval) {
            if now >= due {
                log::info!("{}", self.metrics.summary_line());
                timers.stats = Some(now + every);
            }
        }
    }

    fn read_burst(&mut self) -> Result<(), zmq::Error> {
        let result = self.read_messages();
        // Even after an error: what was accepted must not be lost.
        self.flush_batches();
        result
    }

    fn read_messages(&mut self) -> Result<(), zmq::Error> {
        self.burst_ms = unix_ms();
        for n in 1..=BURST {
            let mut routing_id = Message::new();
            match self.socket.recv(&mut routing_id, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
                Err(e) => return Err(e),
            }
            let (mut body, extra) = self.recv_body()?;
            let speaker = match self.access.is_some() {
                false => None,
                true => match self.authenticate(&routing_id, &mut body, extra) {
                    Some(peer) => Some(peer),
                    None => continue,
                },
            };
            if let Err(rejection) = self.handle(&routing_id, body, extra, speaker) {
                self.metrics.reject(rejection.code);
                self.reject_log
                    .note(rejection.code, &rejection.detail, &routing_id);
                self.reply(&routing_id, rejection.to_frame());
            }
            if n % DELIVERY_CHECK_EVERY == 0 && !self.commands.is_empty() {
                self.serve_commands();
            }
        }
        Ok(())
    }

    /// Hands each type's batch to its sink thread.
    fn flush_batches(&mut self) {
        for (index, pending) in self.pending.iter_mut().enumerate() {
            if pending.is_empty() {
                continue;
            }
            let batch = std::mem::replace(pending, Vec::with_capacity(BATCH_START));
            let count = batch.len();
            let stats = &self.metrics.types[index];
            stats.queued.fetch_add(count, Relaxed);
            // The channel is unbounded (`queued` bounds it); it is
            // disconnected only if the sink thread died, which stops the
            // router.
            if self.queues[index].try_send(batch).is_err() {
                stats.queued.fetch_sub(count, Relaxed);
                log::error!("{}: sink thread gone; {count} message(s) lost", stats.name);
            }
        }
    }

    /// Reads the rest of a message whose routing id was just read: the
    /// first body frame, and the size and count of any further ones (which
    /// make it invalid, but must be consumed).
    fn recv_body(&mut self) -> Result<(Message, Extra), zmq::Error> {
        let mut body = Message::new();
        // A ROUTER delivers a whole message at once: the parts are there.
        self.socket.recv(&mut body, 0)?;
        let mut extra = Extra::default();
        let mut more = body.get_more();
        while more {
            let mut part = Message::new();
            self.socket.recv(&mut part, 0)?;
            extra.frames += 1;
            extra.bytes += part.len();
            more = part.get_more();
        }
        Ok((body, extra))
    }

    /// Under CURVE: who sent this message, if it may be handled at all.
    /// A frame without the ZAP handler's User-Id is ROUTER_NOTIFY's
    /// disconnect notification (libzmq attaches no metadata to it, and
    /// every authenticated message has some), whose route goes. A message
    /// from a connection whose key has since been removed, or now speaks as
    /// another UUID, is dropped without a reply: nothing reaches it.
    fn authenticate(
        &mut self,
        routing_id: &Message,
        body: &mut Message,
        extra: Extra,
    ) -> Option<Peer> {
        let access = Arc::clone(self.access.as_ref()?);
        // The body frame carries the connection's metadata (the routing-id
        // frame libzmq makes does not, in 4.3.4).
        let bodiless = body.is_empty() && extra.frames == 0;
        let peer = Peer::of(body);
        match judge(&access, &mut self.last_allowed, peer, bodiless) {
            Speaker::Allowed(peer) => return Some(peer),
            Speaker::Gone => {
                if self.table.connection_gone(routing_id) {
                    self.publish_clients();
                }
                return None;
            }
            Speaker::NoIdentity => {
                self.drop_revoked(routing_id, "carries no authenticated identity")
            }
            Speaker::Revoked => self.drop_revoked(routing_id, REVOKED),
        }
        None
    }

    /// Under CURVE: whether `speaker`, allowed when its message was read,
    /// is still allowed by the current key set, which a wait for room may
    /// have replaced (it serves the back end's commands). Always true in
    /// plaintext.
    fn still_allowed(&mut self, speaker: Option<Peer>) -> bool {
        let (Some(peer), Some(access)) = (speaker, &self.access) else {
            return true;
        };
        let speaker = judge(access, &mut self.last_allowed, Some(peer), false);
        matches!(speaker, Speaker::Allowed(_))
    }

    /// Drops a message for its connection's key, without a reply: nothing
    /// may reach a connection whose key is not (or no longer) allowed.
    fn drop_revoked(&mut self, routing_id: &[u8], why: &str) {
        self.reject_log.revoked(routing_id, why);
        self.metrics.forbidden.fetch_add(1, Relaxed);
    }

    /// Validates and routes one client message.
    fn handle(
        &mut self,
        routing_id: &[u8],
        body: Message,
        extra: Extra,
        speaker: Option<Peer>,
    ) -> Result<(), Rejection> {
        self.metrics.received.fetch_add(1, Relaxed);
        let received_at_ms = self.burst_ms;
        let expected = speaker.map(|p| p.uuid);
        let Accepted { uuid, target, id } = admit::admit(
            &body,
            extra,
            self.max_message_bytes,
            &self.sink_types,
            expected.as_ref(),
        )?;
        let key = speaker.map(|p| p.key);
        match target {
            Target::Hello => {
                self.learn(uuid, routing_id, received_at_ms, key);
                self.reply(
                    routing_id,
                    protocol::welcome_frame(&uuid, &self.router_name),
                );
                Ok(())
            }
            Target::Sink(index) => {
                let room = self.make_room(index);
                // A wait for room may have applied a new key set that
                // revokes this speaker (and dropped its route): it must
                // neither be forwarded, nor answered, nor relearn a route
                // the back end would then deliver through.
                if !self.still_allowed(speaker) {
                    self.drop_revoked(routing_id, REVOKED);
                    return Ok(());
                }
                if !room {
                    self.refuse_overloaded(routing_id, index, id);
                    return Ok(());
                }
                let depth = self.depth(index);
                let forward = if depth < self.queue_capacity / COPY_SHARE {
                    Forward {
                        frame: body,
                        received_at_ms,
                        peer: None,
                    }
                } else {
                    detach(body, received_at_ms, &mut self.last_peer)
                };
                self.pending[index].push(forward);
                self.learn(uuid, routing_id, received_at_ms, key);
                Ok(())
            }
        }
    }

    fn learn(&mut self, uuid: Uuid, routing_id: &[u8], now_ms: u64, key: Option<PublicKey>) {
        self.table.learn(uuid, routing_id, now_ms / 1000, key);
        self.publish_clients();
    }

    /// Publishes the table's size for `status`, only when it changed: a
    /// store dirties the cache line even when the value is the same, and
    /// `learn` runs per message.
    fn publish_clients(&self) {
        let clients = self.table.len();
        if self.metrics.clients.load(Relaxed) != clients {
            self.metrics.clients.store(clients, Relaxed);
        }
    }

    /// Messages of type `index` accepted and not yet handed to its PUSH.
    fn depth(&self, index: usize) -> usize {
        // SeqCst, like the sink thread's decrement and the room bell's
        // flag: a re-check after `want` must see a chunk freed before the
        // sink thread looked at the flag (a plain load on x86).
        self.metrics.types[index].queued.load(SeqCst) + self.pending[index].len()
    }

    /// Whether a message of type `index` may be queued now, waiting for
    /// room first if its queue is full (see `pressure.rs`).
    fn make_room(&mut self, index: usize) -> bool {
        let may_wait = !self.overload_wait.is_zero();
        let depth = self.depth(index);
        match self.gates[index].admit(depth, self.queue_capacity, may_wait) {
            Admission::Admit => true,
            Admission::Refuse => false,
            Admission::Wait => {
                let room = self.wait_for_room(index);
                self.gates[index].waited(room) == Admission::Admit
            }
        }
    }

    /// Stops reading client input until `index`'s queue has room, for at
    /// most `overload_wait`; deliveries are still served meanwhile.
    /// Returns whether room came.
    fn wait_for_room(&mut self, index: usize) -> bool {
        // What this burst accepted must reach the sink thread to drain.
        self.flush_batches();
        let stats = &self.metrics.types[index];
        stats.waits.fetch_add(1, Relaxed);
        let deadline = Instant::now() + self.overload_wait;
        let room = loop {
            self.room.want(index);
            if self.depth(index) < self.queue_capacity {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.shutdown.is_set() {
                break false;
            }
            let timeout = left.as_millis() as i64 + 1;
            if let Err(e) = self.bell.wait_alone(timeout) {
                log::error!(
                    "waiting for room in the {} queue: {e}",
                    self.sink_types[index]
                );
                break false;
            }
            self.serve_commands();
        };
        self.room.cancel(index);
        self.burst_ms = unix_ms();
        // At shutdown the wait ends early; the type is then marked stuck
        // and answered `overloaded` (the client resends), but its sinks
        // are not to blame.
        if !room && !self.shutdown.is_set() {
            log::warn!(
                "{}: queue full for {} ms; answering overloaded until it drains \
                 (its sinks are absent or stuck)",
                self.sink_types[index],
                self.overload_wait.as_millis()
            );
        }
        room
    }

    /// Answers `overloaded` with the type's prebuilt frame.
    fn refuse_overloaded(&mut self, routing_id: &[u8], index: usize, raw_id: Option<&str>) {
        self.metrics.reject(RejectCode::Overloaded);
        let detail = self.overload_replies.detail(index);
        self.reject_log
            .note(RejectCode::Overloaded, detail, routing_id);
        let frame = self.overload_replies.frame(index, raw_id);
        self.reply(routing_id, frame);
    }

    /// Answers a client. A reply libzmq will not take (the client is gone or
    /// not reading) is counted and dropped: it must not stall other clients.
    fn reply(&self, routing_id: &[u8], frame: Vec<u8>) {
        let sent = self
            .socket
            .send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| self.socket.send(frame, zmq::DONTWAIT));
        if sent.is_err() {
            self.metrics.replies_dropped.fetch_add(1, Relaxed);
        }
    }

    fn serve_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Deliver {
                    to,
                    frame,
                    reply,
                    deadline,
                } => {
                    let outcome = if Instant::now() < deadline {
                        self.deliver(to, frame)
                    } else {
                        Delivery::Unreachable
                    };
                    let counter = match outcome {
                        Delivery::Sent => &self.metrics.delivered,
                        _ => &self.metrics.undeliverable,
                    };
                    counter.fetch_add(1, Relaxed);
                    // The back-end thread may have given up waiting; fine.
                    let _ = reply.try_send(outcome);
                }
                Command::Access(access) => {
                    let dropped = self.table.retain_keys(|uuid, key| {
                        access.client_allows(&Peer {
                            uuid: *uuid,
                            key: *key,
                        })
                    });
                    if dropped > 0 {
                        log::info!("dropped {dropped} route(s) of keys no longer allowed");
                    }
                    self.publish_clients();
                    self.access = Some(access);
                    self.last_allowed = None;
                }
            }
        }
    }

    /// Sends a back-end frame to a client: through its learned route, else
    /// (or when that route is dead) to the routing id equal to its UUID text.
    /// Under CURVE only the learned route counts: it was learned from a
    /// message the connection's key was allowed to send as `to`, whereas a
    /// routing id is whatever a peer announced.
    fn deliver(&mut self, to: Uuid, frame: Message) -> Delivery {
        let text = protocol::uuid_text(&to);
        let learned = self.table.route(&to, unix_ms() / 1000).map(<[u8]>::to_vec);
        let mut frame = Some(frame);
        if self.access.is_some() {
            let Some(routing_id) = learned else {
                return Delivery::UnknownClient;
            };
            return match self.send_to(&routing_id, &mut frame) {
                Ok(()) => Delivery::Sent,
                Err(_) => Delivery::Unreachable,
            };
        }
        if let Some(routing_id) = &learned {
            match self.send_to(routing_id, &mut frame) {
                Ok(()) => return Delivery::Sent,
                Err(zmq::Error::EHOSTUNREACH) if routing_id != text.as_bytes() => {}
                Err(_) => return Delivery::Unreachable,
            }
        }
        match self.send_to(text.as_bytes(), &mut frame) {
            Ok(()) => Delivery::Sent,
            Err(zmq::Error::EHOSTUNREACH) if learned.is_none() => Delivery::UnknownClient,
            Err(_) => Delivery::Unreachable,
        }
    }

    /// With ROUTER_MANDATORY an unknown or full peer fails on the routing-id
    /// frame, before `frame` is consumed, so the caller may try another id.
    fn send_to(&self, routing_id: &[u8], frame: &mut Option<Message>) -> Result<(), zmq::Error> {
        // Taken only by a send that got past the routing id; libzmq never
        // fails the body then, but if it did there is nothing left to send.
        if frame.is_none() {
            return Err(zmq::Error::EFAULT);
        }
        self.socket.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)?;
        let body = frame.take().expect("checked above");
        self.socket.send(body, zmq::DONTWAIT)
    }
}

/// Logs refusals at most once per code per window, so a hostile or broken
/// client cannot flood the log; the counters keep the full tally.
pub struct RejectLog {
    by_code: [RateLimit; RejectCode::ALL.len()],
    revoked: RateLimit,
}

impl Default for RejectLog {
    fn default() -> RejectLog {
        RejectLog {
            by_code: std::array::from_fn(|_| RateLimit::new(REJECT_LOG_WINDOW)),
            revoked: RateLimit::new(REJECT_LOG_WINDOW),
        }
    }
}

impl RejectLog {
    fn note(&mut self, code: RejectCode, detail: &str, routing_id: &[u8]) {
        let Some(held_back) = self.by_code[code as usize].allow() else {
            return;
        };
        log::warn!(
            "refused a message from client {}: {}: {} ({held_back} more like it not logged)",
            String::from_utf8_lossy(routing_id).escape_debug(),
            code.as_str(),
            detail,
        );
    }

    /// A message dropped for its connection's key (counted as `forbidden`).
    fn revoked(&mut self, routing_id: &[u8], why: &str) {
        let Some(held_back) = self.revoked.allow() else {
            return;
        };
        log::warn!(
            "dropped a message from connection {}: it {why} ({held_back} more like it not logged)",
            String::from_utf8_lossy(routing_id).escape_debug(),
        );
    }
}

/// [`admit::judge`] against `access`, remembering in `last_allowed` the
/// peer it allowed: the next message of the same connection is then
/// judged by a comparison alone.
fn judge(
    access: &Access,
    last_allowed: &mut Option<Peer>,
    peer: Option<Peer>,
    bodiless: bool,
) -> Speaker {
    let speaker = admit::judge(peer, bodiless, *last_allowed, |p| access.client_allows(p));
    if let Speaker::Allowed(peer) = speaker {
        *last_allowed = Some(peer);
    }
    speaker
}

/// A forward whose frame is a copy of `body`, with the peer address read
/// now. A received frame points into the connection's 8 KiB read buffer and
/// keeps all of it alive while queued; a frame that will wait behind others
/// is copied so that it holds only its own bytes. The address text is
/// shared with the previous copy's when equal (`last_peer`), so a burst
/// from one connection allocates it once.
fn detach(mut body: Message, received_at_ms: u64, last_peer: &mut Option<Arc<str>>) -> Forward {
    let peer = match body.gets("Peer-Address").filter(|p| !p.is_empty()) {
        None => None,
        Some(text) => match last_peer {
            Some(last) if **last == *text => Some(Arc::clone(last)),
            _ => {
                let shared: Arc<str> = Arc::from(text);
                *last_peer = Some(Arc::clone(&shared));
                Some(shared)
            }
        },
    };
    Forward {
        frame: Message::from(&body[..]),
        received_at_ms,
        peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doorbell::Ringer;
    use crate::router::auth::Access;
    use crate::signals::Shutdown;
    use crossbeam_channel::{bounded, unbounded};

    /// Bounds every wait here; a test that needs it has failed.
    const WAIT: Duration = Duration::from_secs(30);

    /// A client thread under CURVE with `access`, and one type, `stats`,
    /// whose queue holds at most one message. Its socket is never read.
    fn thread(ctx: &zmq::Context, access: Access) -> (ClientThread, Sender<Command>, Ringer) {
        let (bell, ringer) = Doorbell::new().unwrap();
        let (command_tx, commands) = bounded(8);
        let sink_types = vec!["stats".to_string()];
        let thread = ClientThread {
            socket: ctx.socket(zmq::ROUTER).unwrap(),
            bell,
            commands,
            queues: vec![unbounded().0],
            pending: vec![Vec::new()],
            queue_capacity: 1,
            sink_types: sink_types.clone(),
            table: ClientTable::new(10, 60),
            metrics: Arc::new(Metrics::new(sink_types.clone())),
            shutdown: Shutdown::new(Vec::new()).watch(),
            router_name: "test".to_string(),
            max_message_bytes: 1024,
            stats_interval: None,
            gates: vec![Gate::default()],
            room: Arc::new(RoomBell::new(1, ringer.clone())),
            overload_wait: WAIT,
            overload_replies: OverloadReplies::new(&sink_types, 1, WAIT.as_millis() as u64),
            reject_log: RejectLog::default(),
            burst_ms: 0,
            last_peer: None,
            access: Some(Arc::new(access)),
            last_allowed: None,
        };
        (thread, command_tx, ringer)
    }

    #[test]
    fn a_key_revoked_while_its_message_waits_for_room_is_dropped_and_gets_no_route() {
        let peer = Peer {
            uuid: Uuid::from_u128(7),
            key: PublicKey([7; 32]),
        };
        let mut allowing = Access::default();
        allowing.clients.insert(peer.key, peer.uuid);
        let ctx = zmq::Context::new();
        let (mut t, commands, ringer) = thread(&ctx, allowing);
        // The connection spoke before, and its message now was allowed
        // when read (as `authenticate` records); the queue is full.
        t.learn(peer.uuid, b"conn", 0, Some(peer.key));
        t.last_allowed = Some(peer);
        t.metrics.types[0].queued.store(1, SeqCst);
        // Waiting for room, the thread serves: the key's removal, then a
        // delivery whose answer tells the "sink" below to free room only
        // once the removal is applied.
        let (reply_tx, reply_rx) = bounded(1);
        commands
            .send(Command::Access(Arc::new(Access::default())))
            .unwrap();
        commands
            .send(Command::Deliver {
                to: peer.uuid,
                frame: Message::from("to the client"),
                reply: reply_tx,
                deadline: Instant::now() + WAIT,
            })
            .unwrap();
        ringer.ring();
        let (metrics, room) = (Arc::clone(&t.metrics), Arc::clone(&t.room));
        let sink = std::thread::spawn(move || {
            let delivery = reply_rx.recv_timeout(WAIT);
            metrics.types[0].queued.fetch_sub(1, SeqCst);
            room.freed(0);
            delivery
        });
        let body = format!(
            r#"{{"uuid":"{}","type":"stats","metrics":{{"load":1}}}}"#,
            peer.uuid
        );
        let handled = t.handle(
            b"conn",
            Message::from(&body[..]),
            Extra::default(),
            Some(peer),
        );
        assert_eq!(
            sink.join().unwrap(),
            Ok(Delivery::UnknownClient),
            "the removal dropped the route"
        );
        assert!(handled.is_ok());
        assert_eq!(t.metrics.types[0].waits.load(Relaxed), 1, "it waited");
        assert_eq!(t.metrics.types[0].queued.load(SeqCst), 0, "room came");
        assert!(t.pending[0].is_empty(), "the message was forwarded");
        assert_eq!(t.table.route(&peer.uuid, 0), None, "the route came back");
        assert_eq!(t.metrics.forbidden.load(Relaxed), 1);
        let overloaded = &t.metrics.rejected[RejectCode::Overloaded as usize];
        assert_eq!(overloaded.load(Relaxed), 0, "it was answered");
    }
}
