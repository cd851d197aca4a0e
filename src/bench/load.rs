//! The throughput engine: a fleet of DEALERs streams `stats` messages at a
//! target (the router, or the zmq_proxy baseline) while PULL sinks count the
//! message sets that come out. One sender thread and one receiver thread, so
//! the load generator takes as little CPU from the target as it can on a
//! small machine, and both targets face exactly the same generator.
//!
//! After the timed window the run is drained and accounted for: every
//! message sent must come out at a sink, or (for the router) be counted as
//! rejected, so a loss shows up as a loss and not as a guess.

use super::backend::{self, Status};
use super::fleet::{self, ContextPool, Dealer};
use super::{join, payload, poll, spawn, BenchError, Doing};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
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
/// Messages the whole fleet may hold queued client-side. Enough to keep
/// the target busy through the sender's short back-offs, small enough that
/// the sender blocks instead of running a core flat out to fill queues.
const FLEET_BUFFER: usize = 50_000;

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
}

#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    pub clients: usize,
    pub sinks: usize,
    pub size: usize,
}

/// How to tell that everything sent during a run has come out.
pub enum Ledger {
    /// zmq_proxy forwards everything, so the sinks must get all of it.
    AllSent,
    /// The router forwards or rejects; its counters since `before` say how
    /// many the sinks must get.
    Router { backend: String, before: Status },
}

impl Ledger {
    /// Reads the router's counters now, as the zero of a run.
    pub fn router(backend: &str) -> Result<Ledger, BenchError> {
        let before = backend::status(backend)?;
        let backend = backend.to_string();
        Ok(Ledger::Router { backend, before })
    }

    /// The router's counters since the start, if there is a router.
    fn router_counts(&self) -> Option<Status> {
        match self {
            Ledger::AllSent => None,
            Ledger::Router { backend, before } => {
                backend::status(backend).ok().map(|now| now.since(before))
            }
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub clients: usize,
    /// Messages the DEALERs accepted.
    pub sent: u64,
    /// Times the sender waited because the DEALERs were (nearly) all full.
    pub waits: u64,
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
}

/// Clients and sinks, connected and warmed up, not yet timed.
pub struct Prepared {
    dealers: Vec<Dealer>,
    bodies: Vec<Vec<u8>>,
    sinks: Vec<zmq::Socket>,
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
        .map(|_| connect_sink(&mut sink_pool, &target.sink))
        .collect::<Result<Vec<_>, _>>()?;
    let sndhwm = dealer_hwm(spec.clients);
    let mut pool = ContextPool::default();
    let dealers = fleet::connect_all(&mut pool, &target.client, spec.clients, sndhwm)?;
    let bodies = dealers
        .iter()
        .enumerate()
        .map(|(i, d)| payload::stats_body(&d.uuid, i, spec.size).map_err(BenchError::usage))
        .collect::<Result<Vec<_>, _>>()?;
    if target.kind == TargetKind::Router {
        handshake(&dealers, deadline)?;
    }
    let prepared = Prepared {
        dealers,
        bodies,
        sinks,
    };
    prepared.warm_up(target.kind, deadline)?;
    Ok(prepared)
}

/// Each DEALER's share of `FLEET_BUFFER`, within sane bounds.
fn dealer_hwm(clients: usize) -> i32 {
    let share = FLEET_BUFFER / clients.max(1);
    share.clamp(10, fleet::DEFAULT_HWM as usize) as i32
}

fn connect_sink(pool: &mut ContextPool, endpoint: &str) -> Result<zmq::Socket, BenchError> {
    let sink = pool.socket(zmq::PULL)?;
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
        let clients = self.dealers.len();
        let clock = Arc::new(Clock::new(length));
        let (dealers, bodies, sinks) = (self.dealers, self.bodies, self.sinks);
        let sender_clock = Arc::clone(&clock);
        let sender = spawn("bench-sender", move || {
            let sent = send_loop(&dealers, &bodies, &sender_clock);
            // The DEALERs go back to the caller so their queued messages can
            // still flow while the pipeline drains.
            sent.map(|stats| (stats, dealers))
        })?;
        let receiver_clock = Arc::clone(&clock);
        let receiver = spawn("bench-receiver", move || {
            receive_loop(&sinks, &receiver_clock)
        })?;
        Ok(Running {
            clients,
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
/// sender and receiver close on the same condition, and the arrival count
/// the drain watches.
struct Clock {
    start: Instant,
    end: Instant,
    stopped: AtomicBool,
    drained: AtomicBool,
    arrived: AtomicU64,
}

impl Clock {
    fn new(length: Duration) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            end: start + length,
            stopped: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            arrived: AtomicU64::new(0),
        }
    }

    fn is_due(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || Instant::now() >= self.end
    }
}

#[derive(Debug, Default)]
struct SendStats {
    sent: u64,
    waits: u64,
}

/// Round-robin over the DEALERs with DONTWAIT until the window closes.
/// When (nearly) every DEALER is full it waits briefly instead of spinning:
/// on a small machine a spinning sender starves the very I/O threads that
/// would empty the queues.
fn send_loop(
    dealers: &[Dealer],
    bodies: &[Vec<u8>],
    clock: &Clock,
) -> Result<SendStats, BenchError> {
    let mut stats = SendStats::default();
    while !clock.is_due() {
        let mut sent = 0;
        for (dealer, body) in dealers.iter().zip(bodies) {
            sent += usize::from(try_send(dealer, body)?);
        }
        stats.sent += sent as u64;
        if sent == 0 {
            // Wakes as soon as a DEALER has room again.
            stats.waits += 1;
            let mut items: Vec<zmq::PollItem> = dealers
                .iter()
                .map(|d| d.socket.as_poll_item(zmq::POLLOUT))
                .collect();
            poll(&mut items, Duration::from_millis(5))?;
        } else if sent * 4 < dealers.len() {
            // With many DEALERs one of them always has a little room, so
            // polling would return at once; a short sleep lets the queues
            // refill the I/O threads' work instead.
            stats.waits += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(stats)
}

#[derive(Debug, Default)]
struct Received {
    window: Duration,
    in_window: u64,
    total: u64,
    per_sink: Vec<u64>,
}

/// Counts message sets at the sinks: those before the window closes, then
/// the rest until the drain says everything is in (or gives up).
fn receive_loop(sinks: &[zmq::Socket], clock: &Clock) -> Result<Received, BenchError> {
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
        clock.arrived.store(got.total, Ordering::Release);
        if window_open {
            got.in_window += arrived;
            if clock.is_due() {
                got.window = clock.start.elapsed();
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
            (Some(run), _) if run.counters.received >= sent => Some(run.counters.forwarded),
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
        let drained = match &sent {
            Ok((stats, _)) => await_drain(&self.clock, stats.sent, ledger),
            Err(_) => Drained {
                complete: false,
                router: None,
            },
        };
        self.clock.drained.store(true, Ordering::Release);
        let got = join(receiver)??;
        let (stats, _dealers) = sent?;
        Ok(LoadResult {
            clients: self.clients,
            sent: stats.sent,
            waits: stats.waits,
            window: got.window,
            in_window: got.in_window,
            total: got.total,
            per_sink: got.per_sink,
            drained: drained.complete,
            router: drained.router,
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
}
