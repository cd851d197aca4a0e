//! The throughput engine: a fleet of DEALERs streams `stats` messages at a
//! target (the router, or the zmq_proxy baseline) while PULL sinks count the
//! message sets that come out. One sender thread and one receiver thread, so
//! the load generator takes as little CPU from the target as it can on a
//! small machine, and both targets face exactly the same generator.
//!
//! The sender is closed-loop: at most `IN_FLIGHT_LIMIT` messages may be on
//! their way (sent, and neither arrived at a sink nor refused by the target)
//! whatever the client count. High-water marks alone cannot bound that:
//! each connection adds its kernel socket buffers and the target's receive
//! queue, so with 1000 clients the fleet buried the target under more than
//! a whole run's worth of messages, the sender never had to wait, and the
//! figure measured how the two cores happened to be shared (and, for the
//! router, how much of the backlog it refused) rather than the target.
//!
//! The DEALERs read what the router answers: `error` replies to refused
//! messages, counted by code, so that no libzmq queue fills with unread
//! replies and a refused message counts as settled. On `overloaded` the
//! sender halves its limit and raises it again slowly, as a client that
//! honours "retry later" would; the proxy never refuses, so it always has
//! the full limit.
//!
//! After the timed window the run is drained and accounted for: every
//! message sent must come out at a sink, or (for the router) be counted as
//! rejected, so a loss shows up as a loss and not as a guess. CPU time over
//! the window (the target's, ours, the machine's) is read from /proc: the
//! target's CPU per message says more about its cost than its rate does
//! when the load generator shares its two cores, and the machine's says
//! whether other processes took a share.

use super::backend::{self, Status};
use super::child;
use super::curve::Curve;
use super::fleet::{self, ContextPool, Dealer};
use super::{join, payload, poll, spawn, BenchError, Doing};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Time allowed for connecting, handshakes and warm-up before a run.
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Warm-up leftovers count as gone after this long without an arrival.
const WARM_UP_QUIET: Duration = Duration::from_millis(300);
/// Upper bound on draining the pipeline after the timed window...
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// ...and the drain gives up sooner if nothing moves for this long.
const STALL_LIMIT: Duration = Duration::from_secs(3);
/// How often the drain looks at the counters (the router's are in another
/// process, so they can only be polled).
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Frames read from one sink before looking at the others and the clock.
const BURST: usize = 2048;
/// Messages the whole fleet may hold queued client-side, shared out as
/// each DEALER's sndhwm.
const FLEET_BUFFER: usize = 50_000;
/// Messages that may be on their way at once, for any client count: as
/// many as the fleet's own queues hold, about 70 ms of the proxy's work,
/// which keeps every stage of either target busy.
const IN_FLIGHT_LIMIT: u64 = FLEET_BUFFER as u64;
/// Messages a client sends in a row when its turn comes. With one, at
/// 1000 clients nearly every message became a TCP write of its own, and a
/// few system calls on each side: the load generator then used more CPU
/// than the target, and how the I/O threads happened to batch (so the
/// figure) changed from run to run. A short burst makes each write carry
/// several messages, whatever the scheduling.
const CLIENT_BURST: u64 = 8;
/// The least the limit falls to when the router says `overloaded`.
const MIN_IN_FLIGHT: u64 = 2_048;
/// After halving the limit, the sender waits this long before halving it
/// again: replies to messages refused before the cut are still coming.
const BACKOFF_GAP: Duration = Duration::from_millis(100);
/// How fast the limit grows back while nothing is refused, in messages per
/// second. Slowly: undoing one halving from the top takes longer than a
/// run, so the limit settles below the level that overflowed the router's
/// queue instead of climbing back into it again and again.
const GROWTH_PER_S: f64 = 5_000.0;
/// Longest wait for room. The receiver ends a wait as soon as there is
/// room; a wait this long with nothing arriving means the messages in
/// flight may have been refused, so replies are read.
const ROOM_WAIT: Duration = Duration::from_millis(10);
/// Replies are read this often while sending. Reading costs a system call
/// per DEALER, over a millisecond for 1000 of them, so not more often.
const REPLY_SWEEP_EVERY: Duration = Duration::from_millis(50);
/// The reply code that asks clients to slow down.
const OVERLOADED: &str = "overloaded";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetKind {
    /// Forwards [routing id, body]; has no handshake.
    Proxy,
    /// Forwards [body, metadata]; answers `hello` with `welcome`.
    Router,
}

/// Where a run sends and where it collects.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: TargetKind,
    pub client: String,
    pub sink: String,
    /// The process doing the forwarding, whose CPU time a run measures.
    pub pid: Option<u32>,
    /// Under CURVE, the keys every socket of the run uses.
    pub curve: Option<Arc<Curve>>,
}

#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    pub clients: usize,
    pub sinks: usize,
    pub size: usize,
    /// Clients that never back off: no in-flight limit, replies never
    /// read, as a third-party client that ignores `overloaded` would.
    pub flood: bool,
    /// At most this many messages per second in all, evenly spread; `None`
    /// sends as fast as the target takes them.
    pub rate: Option<u64>,
}

/// How to tell that everything sent during a run has come out.
pub enum Ledger {
    /// zmq_proxy forwards everything, so the sinks must get all of it.
    AllSent,
    /// The router forwards or rejects; its counters since `before` say how
    /// many the sinks must get.
    Router {
        backend: String,
        before: Status,
        curve: Option<Arc<Curve>>,
    },
}

impl Ledger {
    /// Reads the router's counters now, as the zero of a run.
    pub fn router(backend: &str, curve: Option<Arc<Curve>>) -> Result<Ledger, BenchError> {
        let before = backend::status_with(backend, curve.as_deref())?;
        let backend = backend.to_string();
        Ok(Ledger::Router {
            backend,
            before,
            curve,
        })
    }

    /// The router's counters since the start, if there is a router.
    fn router_counts(&self) -> Option<Status> {
        match self {
            Ledger::AllSent => None,
            Ledger::Router {
                backend,
                before,
                curve,
            } => backend::status_with(backend, curve.as_deref())
                .ok()
                .map(|now| now.since(before)),
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub clients: usize,
    /// Messages the DEALERs accepted.
    pub sent: u64,
    /// Times the sender waited: for room under the in-flight limit, or
    /// because the DEALERs were (nearly) all full.
    pub waits: u64,
    /// Times the sender halved its in-flight limit on `overloaded` replies.
    pub backoffs: u64,
    pub window: Duration,
    /// Message sets that reached the sinks within the window.
    pub in_window: u64,
    /// All message sets the sinks got, including the drain after the window.
    pub total: u64,
    pub per_sink: Vec<u64>,
    /// Every message sent was accounted for before the drain gave up.
    pub drained: bool,
    /// The router's counters over the run, for a router target.
    pub router: Option<Status>,
    /// The router's counters from the start until just after the window
    /// closed, to compare with `in_window`.
    pub router_window: Option<Status>,
    /// What the clients got back: the router's answers to refused messages.
    pub replies: Replies,
    /// CPU time used during the window.
    pub cpu: CpuUse,
}

impl LoadResult {
    pub fn msgs_per_s(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.in_window as f64 / secs
        } else {
            0.0
        }
    }

    /// The target's CPU time per message that reached a sink in the window,
    /// in microseconds.
    pub fn cpu_us_per_msg(&self) -> Option<f64> {
        per_msg_us(self.cpu.target, self.in_window)
    }

    /// The same for the load generator.
    pub fn loadgen_cpu_us_per_msg(&self) -> Option<f64> {
        per_msg_us(self.cpu.loadgen, self.in_window)
    }

    /// How many cores, on average, other processes kept busy during the
    /// window.
    pub fn other_cores(&self) -> Option<f64> {
        let window = self.window.as_secs_f64();
        (window > 0.0).then(|| self.cpu.others().map(|cpu| cpu.as_secs_f64() / window))?
    }
}

fn per_msg_us(cpu: Option<Duration>, messages: u64) -> Option<f64> {
    match (cpu, messages) {
        (Some(cpu), 1..) => Some(cpu.as_secs_f64() * 1e6 / messages as f64),
        _ => None,
    }
}

/// Replies the DEALERs read during a run, by `error` code; anything else a
/// client was sent counts as `other`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replies {
    pub by_code: BTreeMap<String, u64>,
    pub other: u64,
    /// The sum of `by_code`: messages refused, hence settled.
    refused: u64,
}

impl Replies {
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn count(&self, code: &str) -> u64 {
        self.by_code.get(code).copied().unwrap_or(0)
    }

    fn record(&mut self, frame: &[u8]) {
        match error_code(frame) {
            Some(code) => {
                self.refused += 1;
                match self.by_code.get_mut(code) {
                    Some(n) => *n += 1,
                    None => {
                        self.by_code.insert(code.to_string(), 1);
                    }
                }
            }
            None => self.other += 1,
        }
    }
}

/// The `error` code of the router's error reply, found without parsing the
/// JSON: the router writes `{"type":"error","error":"<code>",...}` compactly
/// and codes are plain words.
fn error_code(frame: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""error":""#;
    let start = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = frame[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&frame[start..start + len]).ok()
}

/// Reads every reply waiting at `dealers`.
fn read_replies(dealers: &[Dealer], replies: &mut Replies) -> Result<(), BenchError> {
    let mut msg = zmq::Message::new();
    for dealer in dealers {
        loop {
            match dealer.socket.recv(&mut msg, zmq::DONTWAIT) {
                Ok(()) => replies.record(&msg),
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(BenchError::zmq("reading replies at a client", e)),
            }
        }
    }
    Ok(())
}

/// Clients and sinks, connected and warmed up, not yet timed.
pub struct Prepared {
    kind: TargetKind,
    target_pid: Option<u32>,
    dealers: Vec<Dealer>,
    bodies: Vec<Vec<u8>>,
    sinks: Vec<zmq::Socket>,
    flood: bool,
    rate: Option<u64>,
}

/// Connects `spec.clients` DEALERs and `spec.sinks` PULLs to `target` and
/// makes sure every one of them carries traffic, so the timed window
/// measures forwarding, not connection set-up.
pub fn prepare(target: &Target, spec: &LoadSpec) -> Result<Prepared, BenchError> {
    let deadline = Instant::now() + SETUP_LIMIT;
    // Sinks get their own context, hence their own I/O thread, as separate
    // processes would.
    let mut sink_pool = ContextPool::default();
    let sinks = (0..spec.sinks)
        .map(|_| connect_sink(&mut sink_pool, target))
        .collect::<Result<Vec<_>, _>>()?;
    let sndhwm = dealer_hwm(spec.clients);
    let mut pool = ContextPool::default();
    let curve = target.curve.as_deref();
    let dealers = fleet::connect_all(&mut pool, &target.client, spec.clients, sndhwm, curve)?;
    let bodies = dealers
        .iter()
        .enumerate()
        .map(|(i, d)| payload::stats_body(&d.uuid, i, spec.size).map_err(BenchError::usage))
        .collect::<Result<Vec<_>, _>>()?;
    if target.kind == TargetKind::Router {
        handshake(&dealers, deadline)?;
    }
    let prepared = Prepared {
        kind: target.kind,
        target_pid: target.pid,
        dealers,
        bodies,
        sinks,
        flood: spec.flood,
        rate: spec.rate,
    };
    prepared.warm_up(target.kind, deadline)?;
    Ok(prepared)
}

/// Each DEALER's share of `FLEET_BUFFER`, within sane bounds.
fn dealer_hwm(clients: usize) -> i32 {
    let share = FLEET_BUFFER / clients.max(1);
    share.clamp(10, fleet::DEFAULT_HWM as usize) as i32
}

fn connect_sink(pool: &mut ContextPool, target: &Target) -> Result<zmq::Socket, BenchError> {
    let endpoint = &target.sink;
    let sink = pool.socket(zmq::PULL)?;
    if let Some(curve) = &target.curve {
        curve.sink_client(&sink)?;
    }
    sink.connect(endpoint)
        .doing(&format!("connecting a sink to {endpoint}"))?;
    Ok(sink)
}

fn handshake(dealers: &[Dealer], deadline: Instant) -> Result<(), BenchError> {
    for dealer in dealers {
        dealer.send_hello()?;
    }
    let welcomed = fleet::await_welcomes(dealers, deadline)?;
    if welcomed < dealers.len() {
        let what = format!(
            "waiting for welcomes: {welcomed} of {} arrived",
            dealers.len()
        );
        return Err(BenchError::timeout(what));
    }
    Ok(())
}

impl Prepared {
    /// Each client sends one message; then, whenever the sinks are idle,
    /// one more, until every sink has had a message and (for the proxy,
    /// which has no handshake) every client's message came out.
    fn warm_up(&self, kind: TargetKind, deadline: Instant) -> Result<(), BenchError> {
        for (dealer, body) in self.dealers.iter().zip(&self.bodies) {
            try_send(dealer, body)?;
        }
        let mut unseen: HashSet<&[u8]> = match kind {
            TargetKind::Proxy => self.dealers.iter().map(|d| d.uuid.as_bytes()).collect(),
            TargetKind::Router => HashSet::new(),
        };
        let mut sink_seen = vec![false; self.sinks.len()];
        let mut extra = 0;
        while !(unseen.is_empty() && sink_seen.iter().all(|seen| *seen)) {
            if Instant::now() >= deadline {
                let what = format!(
                    "warming up: {} clients and {} sinks still silent",
                    unseen.len(),
                    sink_seen.iter().filter(|seen| !**seen).count()
                );
                return Err(BenchError::timeout(what));
            }
            if !self.sinks_readable(Duration::from_millis(50))? {
                let n = self.dealers.len();
                try_send(&self.dealers[extra % n], &self.bodies[extra % n])?;
                extra += 1;
            }
            for (index, sink) in self.sinks.iter().enumerate() {
                while let Some(first) = recv_first_frame(sink)? {
                    sink_seen[index] = true;
                    unseen.remove(first.as_slice());
                }
            }
        }
        self.drain_until_quiet(deadline)
    }

    fn sinks_readable(&self, timeout: Duration) -> Result<bool, BenchError> {
        let mut items: Vec<zmq::PollItem> = self
            .sinks
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        poll(&mut items, timeout)
    }

    /// Throws away warm-up messages still in flight, so none is counted.
    fn drain_until_quiet(&self, deadline: Instant) -> Result<(), BenchError> {
        let mut msg = zmq::Message::new();
        while Instant::now() < deadline && self.sinks_readable(WARM_UP_QUIET)? {
            for sink in &self.sinks {
                drain_burst(sink, &mut msg)?;
            }
        }
        Ok(())
    }

    /// Starts the sender and receiver threads; the window closes after
    /// `length`, or earlier at `Running::stop`.
    pub fn start(self, length: Duration) -> Result<Running, BenchError> {
        if self.kind == TargetKind::Router {
            // Answers to warm-up messages, if any, are not the run's.
            read_replies(&self.dealers, &mut Replies::default())?;
        }
        let clients = self.dealers.len();
        let clock = Arc::new(Clock::new(length, self.target_pid));
        let reads_replies = self.kind == TargetKind::Router && !self.flood;
        let mut sender = Sender {
            dealers: self.dealers,
            bodies: self.bodies,
            next: 0,
            reads_replies,
            last_sweep: Instant::now(),
            // A flood is limited only by what libzmq's queues take.
            limit: if self.flood {
                u64::MAX
            } else {
                IN_FLIGHT_LIMIT
            },
            last_backoff: None,
            pace: self.rate.map(Pace::new),
            stats: SendStats::default(),
        };
        let sinks = self.sinks;
        let sender_clock = Arc::clone(&clock);
        let sender = spawn("bench-sender", move || {
            let outcome = sender.run(&sender_clock);
            // The DEALERs go back to the caller so their queued messages can
            // still flow while the pipeline drains.
            outcome.map(|()| (sender.stats, sender.dealers))
        })?;
        let waker = sender.thread().clone();
        let receiver_clock = Arc::clone(&clock);
        let receiver = spawn("bench-receiver", move || {
            receive_loop(&sinks, &receiver_clock, &waker)
        })?;
        Ok(Running {
            clients,
            reads_replies,
            clock,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }
}

/// Sends without blocking; a full DEALER just skips this message.
fn try_send(dealer: &Dealer, body: &[u8]) -> Result<bool, BenchError> {
    match dealer.socket.send(body, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(e) => Err(BenchError::zmq("sending a stats message", e)),
    }
}

/// The first frame of the next whole message at `sink`, if one is waiting.
fn recv_first_frame(sink: &zmq::Socket) -> Result<Option<Vec<u8>>, BenchError> {
    match sink.recv_multipart(zmq::DONTWAIT) {
        Ok(frames) => Ok(frames.into_iter().next()),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(BenchError::zmq("receiving at a sink", e)),
    }
}

/// Reads up to `BURST` frames and returns how many message sets ended.
fn drain_burst(sink: &zmq::Socket, msg: &mut zmq::Message) -> Result<u64, BenchError> {
    let mut ended = 0;
    for _ in 0..BURST {
        match sink.recv(msg, zmq::DONTWAIT) {
            Ok(()) => ended += u64::from(!msg.get_more()),
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => return Err(BenchError::zmq("receiving at a sink", e)),
        }
    }
    Ok(ended)
}

/// The state of a run shared between its threads: the timed window, which
/// sender and receiver close on the same condition, the arrival count the
/// sender's flow control and the drain watch, and the CPU meter.
struct Clock {
    start: Instant,
    end: Instant,
    stopped: AtomicBool,
    drained: AtomicBool,
    arrived: AtomicU64,
    /// The arrival count at which the waiting sender wants to be woken;
    /// `u64::MAX` while it is not waiting.
    wake_sender_at: AtomicU64,
    cpu: CpuMeter,
}

impl Clock {
    fn new(length: Duration, target_pid: Option<u32>) -> Clock {
        let cpu = CpuMeter::start(target_pid);
        let start = Instant::now();
        Clock {
            start,
            end: start + length,
            stopped: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            arrived: AtomicU64::new(0),
            wake_sender_at: AtomicU64::new(u64::MAX),
            cpu,
        }
    }

    fn is_due(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || Instant::now() >= self.end
    }

    fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::SeqCst)
    }
}

/// CPU time of the target process, of this one and of the whole machine,
/// counted from when the window opens. /proc gives it in clock ticks
/// (10 ms), fine enough over a window of seconds.
struct CpuMeter {
    target: Option<(u32, Duration)>,
    own: Option<Duration>,
    machine: Option<Duration>,
}

/// CPU time used during a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuUse {
    /// By the target process, all its threads.
    pub target: Option<Duration>,
    /// By this process: the load generator (and its idle helper threads).
    pub loadgen: Option<Duration>,
    /// By the whole machine, every core.
    pub machine: Option<Duration>,
}

impl CpuUse {
    /// What neither the target nor the load generator used: other
    /// processes, and the hypervisor's steal. Tick rounding makes a few
    /// tens of milliseconds of it noise.
    pub fn others(&self) -> Option<Duration> {
        Some(self.machine?.saturating_sub(self.target? + self.loadgen?))
    }
}

impl CpuMeter {
    fn start(target_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            target: target_pid.and_then(|pid| Some((pid, child::cpu_time(pid)?))),
            own: child::cpu_time(std::process::id()),
            machine: child::machine_busy(),
        }
    }

    fn read(&self) -> CpuUse {
        let since =
            |zero: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(zero?));
        CpuUse {
            target: self
                .target
                .and_then(|(pid, zero)| since(Some(zero), child::cpu_time(pid))),
            loadgen: since(self.own, child::cpu_time(std::process::id())),
            machine: since(self.machine, child::machine_busy()),
        }
    }
}

#[derive(Debug, Default)]
struct SendStats {
    sent: u64,
    waits: u64,
    /// Times the in-flight limit was halved after `overloaded` replies.
    backoffs: u64,
    replies: Replies,
}

/// The sender thread: the fleet, where its round-robin stands, and what it
/// has counted.
struct Sender {
    dealers: Vec<Dealer>,
    bodies: Vec<Vec<u8>>,
    /// The DEALER the next round starts with, so that a round cut short by
    /// the in-flight limit does not favour the first clients.
    next: usize,
    /// Only the router answers clients; the proxy never does.
    reads_replies: bool,
    last_sweep: Instant,
    /// The in-flight limit now, and when it was last halved.
    limit: u64,
    last_backoff: Option<Instant>,
    /// The rate cap, if the run has one.
    pace: Option<Pace>,
    stats: SendStats,
}

/// A rate cap: how many messages may have been sent by now.
struct Pace {
    per_s: u64,
    since: Instant,
}

/// How long a paced sender sleeps when it is ahead of its rate.
const PACE_STEP: Duration = Duration::from_micros(200);

impl Pace {
    fn new(per_s: u64) -> Pace {
        Pace {
            per_s,
            since: Instant::now(),
        }
    }

    /// Messages that may go now, given `sent` so far.
    fn budget(&self, sent: u64) -> u64 {
        self.budget_after(self.since.elapsed(), sent)
    }

    fn budget_after(&self, elapsed: Duration, sent: u64) -> u64 {
        let due = self.per_s as f64 * elapsed.as_secs_f64();
        (due as u64).saturating_sub(sent)
    }
}

impl Sender {
    /// Round-robin over the DEALERs with DONTWAIT until the window closes,
    /// keeping at most `limit` messages on their way. On a small machine a
    /// sender that never waits starves the very threads (the target's, the
    /// I/O threads, the receiver) that would settle them.
    fn run(&mut self, clock: &Clock) -> Result<(), BenchError> {
        while !clock.is_due() {
            if self.reads_replies && self.last_sweep.elapsed() >= REPLY_SWEEP_EVERY {
                self.sweep_replies()?;
            }
            let mut room = self.limit.saturating_sub(self.in_flight(clock.arrived()));
            if let Some(pace) = &self.pace {
                let budget = pace.budget(self.stats.sent);
                if budget == 0 {
                    std::thread::sleep(PACE_STEP);
                    continue;
                }
                room = room.min(budget);
            }
            if room == 0 {
                self.wait_for_room(clock)?;
                continue;
            }
            let (offered, sent) = self.send_round(room)?;
            if sent == 0 {
                // Every DEALER is full: wake as soon as one has room again.
                self.stats.waits += 1;
                let mut items: Vec<zmq::PollItem> = self
                    .dealers
                    .iter()
                    .map(|d| d.socket.as_poll_item(zmq::POLLOUT))
                    .collect();
                poll(&mut items, Duration::from_millis(5))?;
            } else if sent * 4 < offered as u64 {
                // With many DEALERs one of them always has a little room, so
                // polling would return at once; a short sleep lets the I/O
                // threads empty the queues instead.
                self.stats.waits += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// Sent, and neither arrived at a sink nor refused.
    fn in_flight(&self, arrived: u64) -> u64 {
        let settled = arrived + self.stats.replies.refused();
        self.stats.sent.saturating_sub(settled)
    }

    /// Offers `CLIENT_BURST` messages to each DEALER in turn, from where
    /// the last round stopped, until `room` are sent or every DEALER had its
    /// turn. Returns (DEALERs offered, messages sent).
    fn send_round(&mut self, room: u64) -> Result<(usize, u64), BenchError> {
        let n = self.dealers.len();
        let (mut offered, mut sent) = (0, 0);
        while offered < n && sent < room {
            let i = self.next;
            self.next = (i + 1) % n;
            offered += 1;
            for _ in 0..CLIENT_BURST.min(room - sent) {
                if !try_send(&self.dealers[i], &self.bodies[i])? {
                    break;
                }
                sent += 1;
            }
        }
        self.stats.sent += sent;
        Ok((offered, sent))
    }

    /// Waits, for at most `ROOM_WAIT`, until a quarter of the limit is free
    /// again, so that it wakes for a sizeable batch rather than for every
    /// burst at the sinks; the receiver wakes it. If nothing arrived
    /// meanwhile, the messages in flight may have been refused instead,
    /// which only the replies tell.
    fn wait_for_room(&mut self, clock: &Clock) -> Result<(), BenchError> {
        self.stats.waits += 1;
        let arrived_before = clock.arrived();
        let unsettled = self.stats.sent.saturating_sub(self.stats.replies.refused());
        let wake_at = unsettled.saturating_sub(self.limit - self.limit / 4);
        clock.wake_sender_at.store(wake_at, Ordering::SeqCst);
        // After publishing `wake_at`: either the receiver sees it and
        // unparks us, or we see its count here.
        if clock.arrived() < wake_at {
            std::thread::park_timeout(ROOM_WAIT);
        }
        clock.wake_sender_at.store(u64::MAX, Ordering::SeqCst);
        if self.reads_replies && clock.arrived() == arrived_before {
            self.sweep_replies()?;
        }
        Ok(())
    }

    /// Reads the replies, and adjusts the in-flight limit the way a client
    /// that honours `overloaded` ("retry later") would: halved when the
    /// router refuses, grown back slowly while it does not. Without this,
    /// refusals feed on themselves: each costs the router a reply and the
    /// load generator a read, CPU the router's sink thread then lacks, so
    /// yet more are refused and the run measures the collapse.
    fn sweep_replies(&mut self) -> Result<(), BenchError> {
        let before = self.stats.replies.count(OVERLOADED);
        read_replies(&self.dealers, &mut self.stats.replies)?;
        let now = Instant::now();
        if self.stats.replies.count(OVERLOADED) > before {
            let may_cut = self
                .last_backoff
                .is_none_or(|at| now.duration_since(at) >= BACKOFF_GAP);
            if may_cut {
                self.limit = (self.limit / 2).max(MIN_IN_FLIGHT);
                self.last_backoff = Some(now);
                self.stats.backoffs += 1;
            }
        } else {
            let grown = GROWTH_PER_S * now.duration_since(self.last_sweep).as_secs_f64();
            self.limit = (self.limit + grown as u64).min(IN_FLIGHT_LIMIT);
        }
        self.last_sweep = now;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Received {
    window: Duration,
    in_window: u64,
    total: u64,
    per_sink: Vec<u64>,
    cpu: CpuUse,
}

/// Counts message sets at the sinks: those before the window closes, then
/// the rest until the drain says everything is in (or gives up). Wakes the
/// sender once enough have arrived for it to send again.
fn receive_loop(
    sinks: &[zmq::Socket],
    clock: &Clock,
    sender: &Thread,
) -> Result<Received, BenchError> {
    let mut got = Received {
        per_sink: vec![0; sinks.len()],
        ..Received::default()
    };
    let mut msg = zmq::Message::new();
    let mut window_open = true;
    // A backstop in case the drain never says so (it always should).
    let give_up = clock.end + DRAIN_LIMIT + DRAIN_LIMIT;
    while !clock.drained.load(Ordering::Acquire) && Instant::now() < give_up {
        let mut arrived = 0;
        for (index, sink) in sinks.iter().enumerate() {
            let n = drain_burst(sink, &mut msg)?;
            got.per_sink[index] += n;
            arrived += n;
        }
        got.total += arrived;
        clock.arrived.store(got.total, Ordering::SeqCst);
        if got.total >= clock.wake_sender_at.load(Ordering::SeqCst) {
            sender.unpark();
        }
        if window_open {
            got.in_window += arrived;
            if clock.is_due() {
                got.window = clock.start.elapsed();
                got.cpu = clock.cpu.read();
                window_open = false;
            }
        }
        if arrived == 0 {
            let mut items: Vec<zmq::PollItem> =
                sinks.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
            poll(&mut items, Duration::from_millis(20))?;
        }
    }
    Ok(got)
}

/// What the drain found.
struct Drained {
    complete: bool,
    router: Option<Status>,
}

/// Waits until the sinks have everything `ledger` says they should get,
/// or until nothing has moved for `STALL_LIMIT`, or `DRAIN_LIMIT`.
fn await_drain(clock: &Clock, sent: u64, ledger: &Ledger) -> Drained {
    let began = Instant::now();
    let mut last = None;
    let mut last_change = began;
    loop {
        let arrived = clock.arrived.load(Ordering::Acquire);
        let router = ledger.router_counts();
        let expected = match (&router, ledger) {
            (_, Ledger::AllSent) => Some(sent),
            // Everything received is either refused or handed to a sink
            // (nothing still queued in the router) before it counts.
            (Some(run), _)
                if run.counters.received >= sent
                    && run.counters.forwarded + run.counters.rejected >= run.counters.received =>
            {
                Some(run.counters.forwarded)
            }
            _ => None,
        };
        if expected.is_some_and(|expected| arrived >= expected) {
            return Drained {
                complete: true,
                router,
            };
        }
        let now = router
            .as_ref()
            .map(|run| (arrived, run.counters.received, run.counters.forwarded));
        let now = now.unwrap_or((arrived, 0, 0));
        if last != Some(now) {
            (last, last_change) = (Some(now), Instant::now());
        }
        if last_change.elapsed() >= STALL_LIMIT || began.elapsed() >= DRAIN_LIMIT {
            return Drained {
                complete: false,
                router,
            };
        }
        std::thread::sleep(DRAIN_POLL);
    }
}

/// What the sender thread hands back: its figures, and the DEALERs, kept
/// open until the drain is over so their queued messages still flow.
type SenderOutcome = Result<(SendStats, Vec<Dealer>), BenchError>;

/// A run in progress. Dropping it closes the window and ends the drain, so
/// the threads end soon even when the caller bails out with an error.
pub struct Running {
    clients: usize,
    reads_replies: bool,
    clock: Arc<Clock>,
    sender: Option<JoinHandle<SenderOutcome>>,
    receiver: Option<JoinHandle<Result<Received, BenchError>>>,
}

impl Running {
    /// Closes the window now rather than at the end of its length.
    pub fn stop(&self) {
        self.clock.stopped.store(true, Ordering::Release);
    }

    /// Waits for the window to close, drains the pipeline and accounts
    /// for what was sent according to `ledger`.
    pub fn finish(mut self, ledger: &Ledger) -> Result<LoadResult, BenchError> {
        let (Some(sender), Some(receiver)) = (self.sender.take(), self.receiver.take()) else {
            return Err(BenchError::protocol("finishing a run", "finished twice"));
        };
        let sent = join(sender)?;
        // The sender stops within `ROOM_WAIT` of the window's end.
        let router_window = ledger.router_counts();
        let drained = match &sent {
            Ok((stats, _)) => await_drain(&self.clock, stats.sent, ledger),
            Err(_) => Drained {
                complete: false,
                router: None,
            },
        };
        self.clock.drained.store(true, Ordering::Release);
        let got = join(receiver)??;
        let (mut stats, dealers) = sent?;
        if self.reads_replies {
            // Replies to messages refused near the end of the window or
            // during the drain.
            read_replies(&dealers, &mut stats.replies)?;
        }
        Ok(LoadResult {
            clients: self.clients,
            sent: stats.sent,
            waits: stats.waits,
            backoffs: stats.backoffs,
            window: got.window,
            in_window: got.in_window,
            total: got.total,
            per_sink: got.per_sink,
            drained: drained.complete,
            router: drained.router,
            router_window,
            replies: stats.replies,
            cpu: got.cpu,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
        self.clock.drained.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_shares_one_client_side_buffer() {
        assert_eq!(dealer_hwm(1), 1000);
        assert_eq!(dealer_hwm(100), 500);
        assert_eq!(dealer_hwm(1000), 50);
        assert_eq!(dealer_hwm(100_000), 10);
    }

    #[test]
    fn replies_are_counted_by_error_code() {
        let mut replies = Replies::default();
        replies.record(br#"{"type":"error","error":"overloaded","detail":"full","id":null}"#);
        replies.record(br#"{"type":"error","error":"overloaded","detail":"x","id":"7"}"#);
        replies.record(br#"{"type":"error","error":"bad_json","detail":"y","id":null}"#);
        replies.record(br#"{"type":"welcome","uuid":"u"}"#);
        assert_eq!(replies.refused(), 3);
        assert_eq!(replies.other, 1);
        let expected = BTreeMap::from([("bad_json".into(), 1), ("overloaded".into(), 2)]);
        assert_eq!(replies.by_code, expected);
        assert_eq!(error_code(br#"{"error":"unterminated"#), None);
    }

    #[test]
    fn a_paced_sender_may_send_what_its_rate_has_earned() {
        let pace = Pace::new(100_000);
        assert_eq!(pace.budget_after(Duration::ZERO, 0), 0);
        assert_eq!(pace.budget_after(Duration::from_millis(10), 0), 1_000);
        assert_eq!(pace.budget_after(Duration::from_millis(10), 400), 600);
        // Ahead of the rate: nothing, not a negative number.
        assert_eq!(pace.budget_after(Duration::from_millis(10), 5_000), 0);
    }

    #[test]
    fn cpu_per_message_needs_messages() {
        let cpu = Some(Duration::from_millis(1500));
        assert_eq!(per_msg_us(cpu, 1_000_000), Some(1.5));
        assert_eq!(per_msg_us(cpu, 0), None);
        assert_eq!(per_msg_us(None, 10), None);
    }
}
