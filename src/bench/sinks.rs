//! `vigil-bench sinks`: how many messages per second the sinks sustain,
//! end to end through a real router: stats into a real carbon-cache,
//! registrations, results and acked notifications into the store, and acks
//! through the back end (pipelined acks) back to the client. With `--db postgres://...`
//! the whole run is made twice, on SQLite and on a fresh database of that
//! PostgreSQL server (its user needs CREATEDB), and the closing note gives
//! both rates and their ratio, with the CPU the sink and the PostgreSQL
//! server processes used (what bounds the rate on this machine).
//!
//! Method: one simulated agent (a DEALER whose routing id is its UUID)
//! sends a backlog of N messages through one `vigil router` to one
//! `vigil sink` process. One DEALER, one router, one PUSH and one PULL keep
//! the order, so when the ack of the last message (the only one asking for
//! an ack) comes back, every message before it has been committed: N over
//! that time is the rate the sink drains a backlog at, which is what it
//! sustains. The router's queue is made large enough that nothing is
//! refused (a refusal fails the run). For acks, every message asks for one
//! and the acks are counted as they arrive at the agent. For stats, the
//! time until carbon has written the last point to its whisper file is
//! reported too.
//!
//! With `--sinks S --agents K`, K agents (K client rows) send in turn to S
//! sink processes on one store; every message then asks for an ack and the
//! phase ends when all are counted. The note gives the CPU the sinks and
//! PostgreSQL used and how busy the whole machine was: what bounds the rate.
//!
//! Rerun: `cargo run --release --bin vigil-bench -- sinks [--messages N]
//! [--db postgres://USER:PASS@HOST:PORT/DB] [--sinks S] [--agents K]`.
//! Needs Debian's graphite-carbon and python3-whisper.

use super::child::{vigil_command, ChildProc, Shutdown};
use super::{BenchError, Doing};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vigil::testkit::carbon::Carbon;

const READY_LIMIT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest one phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

pub const USAGE: &str =
    "usage: vigil-bench sinks [--messages N] [--db postgres://...] [--sinks S] [--agents K]

Measures, through a real router: stats messages/s into a real carbon-cache,
registrations/s, results/s and acked notifications/s into the store, and
acks/s through the back end (pipelined). N messages per phase (default 20000; acks
and results use N/2, registrations and notifications N/4). With --db, the
run is made on SQLite and again on a fresh database of that PostgreSQL
server (CREATEDB needed), and compared. --sinks S runs S sink processes on
the one store (every message then asks for an ack, and the acks are
counted); --agents K sends from K simulated agents (K client rows) in turn.";

#[derive(Debug, Clone, Default)]
struct Options {
    messages: usize,
    db: Option<String>,
    /// Sink processes on the one store (`--sinks`).
    sinks: usize,
    /// Simulated agents (`--agents`), each its own client row.
    agents: usize,
}

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some(o) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let mut figures = Vec::new();
    for server in std::iter::once(None).chain(o.db.as_deref().map(Some)) {
        let dir = std::env::temp_dir().join(format!(
            "vigil-bench-sinks-{}-{}",
            std::process::id(),
            figures.len()
        ));
        std::fs::create_dir_all(&dir).doing("creating the bench directory")?;
        let result = run_in(&dir, &o, server);
        let _ = std::fs::remove_dir_all(&dir);
        figures.push(result?);
    }
    if let [lite, pg] = figures.as_slice() {
        println!(
            "closing note: PostgreSQL against SQLite, {} sink process(es) each, {} agent(s)",
            o.sinks, o.agents
        );
        for (what, a, b) in [
            ("stats msgs/s", lite.stats, pg.stats),
            ("registrations/s", lite.registrations, pg.registrations),
            ("results/s", lite.results, pg.results),
            (
                "acked notifications/s",
                lite.notifications,
                pg.notifications,
            ),
            ("heartbeat acks/s", lite.acks, pg.acks),
        ] {
            println!(
                "  {what:<24} sqlite {a:>8.0}  postgres {b:>8.0}  ratio {:.2}",
                b / a.max(f64::MIN_POSITIVE)
            );
        }
        println!(
            "  CPU over the store phases: sink {:.1} s (sqlite) / {:.1} s (postgres), postgres server {:.1} s, wall {:.1} s / {:.1} s",
            lite.sink_cpu, pg.sink_cpu, pg.server_cpu, lite.wall, pg.wall
        );
        println!(
            "  machine busy over the store phases (all processes, {} cores): {:.0}% (sqlite) / {:.0}% (postgres)",
            cores(),
            lite.busy * 100.0,
            pg.busy * 100.0
        );
    }
    Ok(())
}

/// The options, or `None` when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<Options>, BenchError> {
    let mut o = Options {
        messages: 20_000,
        db: None,
        sinks: 1,
        agents: 1,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--messages" => {
                o.messages = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (100..=10_000_000).contains(n))
                    .ok_or_else(|| {
                        BenchError::usage("--messages takes a number from 100 to 10000000")
                    })?
            }
            "--sinks" | "--agents" => {
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        BenchError::usage(format!("{arg} takes a number from 1 to 1000"))
                    })?;
                if arg == "--sinks" {
                    o.sinks = n;
                } else {
                    o.agents = n;
                }
            }
            "--db" => {
                let url = it.next().cloned().unwrap_or_default();
                match vigil::store::Target::parse(&url, None, None) {
                    Ok(vigil::store::Target::Postgres(_)) => o.db = Some(url),
                    _ => {
                        return Err(BenchError::usage(format!(
                            "--db {url:?}: expected a postgres:// URL"
                        )))
                    }
                }
            }
            _ => {
                return Err(BenchError::usage(format!(
                    "unexpected arguments {args:?}\n{USAGE}"
                )))
            }
        }
    }
    Ok(Some(o))
}

/// One run's rates, per second, and CPU seconds over the store phases.
struct Figures {
    stats: f64,
    registrations: f64,
    results: f64,
    notifications: f64,
    acks: f64,
    sink_cpu: f64,
    server_cpu: f64,
    wall: f64,
    /// The machine's busy share of all its cores over the store phases.
    busy: f64,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time used so far by every `postgres` process on the machine.
fn postgres_cpu() -> f64 {
    let Ok(dirs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dirs.flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(super::child::cpu_time)
        .map(|d| d.as_secs_f64())
        .sum()
}

fn run_in(dir: &Path, o: &Options, server: Option<&str>) -> Result<Figures, BenchError> {
    let n = o.messages;
    // Dropped at the end of the run: the database goes with it.
    let scratch = match server {
        Some(server) => Some(
            vigil::store::scratch::ScratchDb::create(server)
                .map_err(|e| BenchError::protocol("creating the bench database", e))?,
        ),
        None => None,
    };
    let db = match &scratch {
        Some(s) => s.url.clone(),
        None => dir.join("vigil.db").display().to_string(),
    };
    let store_name = if server.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let carbon = start_carbon(dir)?;
    let (mut router, router_ready) = start_router()?;
    let mut sinks = (0..o.sinks)
        .map(|_| start_sink(&db, &router_ready, &carbon))
        .collect::<Result<Vec<_>, _>>()?;
    let agent = Agents::connect(&router_ready.client, o.agents, o.sinks > 1)?;
    let sink_pids: Vec<u32> = sinks
        .iter()
        .map(|s| s.0.as_ref().map_or(0, ChildProc::pid))
        .collect();
    let sink_cpu_now = || -> f64 {
        sink_pids
            .iter()
            .filter_map(|pid| super::child::cpu_time(*pid))
            .map(|d| d.as_secs_f64())
            .sum()
    };
    // With several sinks only counted acks say every message was handled.
    let all = |k: usize| if o.sinks > 1 { k } else { 1 };

    let stats = agent.phase("stats", n, all(n), stats_message)?;
    let to_carbon = wait_for_point(&carbon, "vigil.bench-end.done", stats.started)?;
    let (cpu0, server0, wall0, busy0) = (
        sink_cpu_now(),
        postgres_cpu(),
        Instant::now(),
        super::child::machine_busy(),
    );
    let regs = n / 4;
    let registrations = agent.phase("registration", regs, all(regs), registration_message)?;
    let results_n = n / 2;
    let results = agent.phase("result", results_n, all(results_n), result_message)?;
    let notes = n / 4;
    let notified = agent.phase("notification", notes, notes, |u, i, _| {
        notification_message(u, i)
    })?;
    let acks = n / 2;
    let acked = agent.phase("heartbeat", acks, acks, |u, i, _| heartbeat_message(u, i))?;
    let sink_cpu = sink_cpu_now() - cpu0;
    let server_cpu = postgres_cpu() - server0;
    let wall = wall0.elapsed().as_secs_f64();
    let busy = match (busy0, super::child::machine_busy()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / (wall * cores() as f64),
        _ => 0.0,
    };

    let stops: Vec<_> = sinks
        .iter_mut()
        .filter_map(SinkProc::take)
        .map(|s| s.stop(Shutdown::Terminate, STOP_GRACE))
        .collect();
    let sink_stop = stops.first();
    router.stop_router();
    drop(carbon);
    let graphite_line = sink_stop
        .and_then(|s| {
            s.log
                .tail
                .iter()
                .find(|l| l.contains("graphite before the flush"))
        })
        .map(|l| l[l.find("GraphiteStats").unwrap_or(0)..].to_string())
        .unwrap_or_else(|| "(not in the log)".to_string());
    let clean = !stops.is_empty()
        && stops
            .iter()
            .all(|s| s.status.is_some_and(|st| st.success()));

    let stats_rate = n as f64 / stats.took.as_secs_f64();
    let carbon_rate = n as f64 / to_carbon.as_secs_f64();
    let reg_rate = regs as f64 / registrations.took.as_secs_f64();
    let ack_rate = acked.acks as f64 / acked.took.as_secs_f64();
    let result_rate = results_n as f64 / results.took.as_secs_f64();
    let note_rate = notified.acks as f64 / notified.took.as_secs_f64();
    println!(
        "vigil-bench sinks on {store_name}: {} agent(s) → one router → {} `vigil sink stats registration heartbeat result notification`",
        o.agents, o.sinks
    );
    println!(
        "  stats        {n} msgs (10 metrics each) handled in {:.2} s: {stats_rate:.0} msgs/s ({:.0} lines/s); last point on carbon's disk after {:.2} s: {carbon_rate:.0} msgs/s",
        stats.took.as_secs_f64(),
        stats_rate * 10.0,
        to_carbon.as_secs_f64()
    );
    println!(
        "  registration {regs} msgs (5 plugins each) into {store_name} in {:.2} s: {reg_rate:.0} msgs/s",
        registrations.took.as_secs_f64()
    );
    println!(
        "  result       {results_n} msgs (50 plugins, status changes) in {:.2} s: {result_rate:.0} msgs/s",
        results.took.as_secs_f64()
    );
    println!(
        "  notification {} of {notes} acked (each recorded, deduplicated, no handler) in {:.2} s: {note_rate:.0} acks/s",
        notified.acks,
        notified.took.as_secs_f64()
    );
    println!(
        "  CPU over registration..heartbeat: sink(s) {sink_cpu:.1} s, postgres processes {server_cpu:.1} s, wall {wall:.1} s, machine busy {:.0}% of {} cores",
        busy * 100.0,
        cores()
    );
    println!(
        "  acks         {} of {acks} heartbeats acked through the back end in {:.2} s: {ack_rate:.0} acks/s",
        acked.acks,
        acked.took.as_secs_f64()
    );
    println!("  graphite writer at exit: {graphite_line}");
    println!("  sink exited cleanly on SIGTERM: {clean}");
    println!(
        "{}",
        json!({"bench": "sinks", "messages": n,
               "stats_msgs_per_s": stats_rate.round(), "stats_to_carbon_msgs_per_s": carbon_rate.round(),
               "registrations_per_s": reg_rate.round(), "acks_per_s": ack_rate.round(),
               "results_per_s": result_rate.round(), "acked_notifications_per_s": note_rate.round(),
               "store": store_name, "sink_cpu_s": sink_cpu, "postgres_cpu_s": server_cpu,
               "sinks": o.sinks, "agents": o.agents, "machine_busy": busy,
               "acks_received": acked.acks, "acks_expected": acks, "clean_exit": clean})
    );
    drop(scratch);
    Ok(Figures {
        stats: stats_rate,
        registrations: reg_rate,
        results: result_rate,
        notifications: note_rate,
        acks: ack_rate,
        sink_cpu,
        server_cpu,
        wall,
        busy,
    })
}

/// The router's endpoints, from its ready line.
struct RouterReady {
    client: String,
    backend: String,
    sinks: String,
}

struct RouterProc(Option<ChildProc>);

impl RouterProc {
    fn stop_router(&mut self) {
        if let Some(proc) = self.0.take() {
            proc.stop(Shutdown::Terminate, STOP_GRACE);
        }
    }
}

fn start_router() -> Result<(RouterProc, RouterReady), BenchError> {
    let mut command = vigil_command(&["router"])?;
    command
        .env("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:*")
        .env("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:*")
        .env(
            "VIGIL_SINK_BINDS",
            "heartbeat=tcp://127.0.0.1:*,stats=tcp://127.0.0.1:*,registration=tcp://127.0.0.1:*,result=tcp://127.0.0.1:*,notification=tcp://127.0.0.1:*",
        )
        // Room for the whole backlog: the run measures the sink, so the
        // router must refuse nothing.
        .env("VIGIL_QUEUE_CAPACITY", "10000000")
        .env("VIGIL_STATS_INTERVAL_SECS", "0")
        .env("VIGIL_LOG", "info");
    let mut proc = ChildProc::spawn("router", command)?;
    let ready = proc.wait_ready(READY_LIMIT)?;
    let field = |key: &str| {
        ready.get(key).cloned().ok_or_else(|| {
            BenchError::protocol(
                "reading the router's ready line",
                format!("no {key} in {ready:?}"),
            )
        })
    };
    let endpoints = RouterReady {
        client: field("client")?,
        backend: field("backend")?,
        sinks: field("sinks")?,
    };
    Ok((RouterProc(Some(proc)), endpoints))
}

/// The sink process; `take` hands it over for a clean stop.
struct SinkProc(Option<ChildProc>);

impl SinkProc {
    fn take(&mut self) -> Option<ChildProc> {
        self.0.take()
    }
}

fn start_sink(db: &str, router: &RouterReady, carbon: &Carbon) -> Result<SinkProc, BenchError> {
    let mut command = vigil_command(&[
        "sink",
        "stats",
        "registration",
        "heartbeat",
        "result",
        "notification",
    ])?;
    command
        .env("VIGIL_SINK_CONNECT", &router.sinks)
        .env("VIGIL_BACKENDS", &router.backend)
        .env("VIGIL_DB", db)
        .env("VIGIL_GRAPHITE", carbon.address())
        // Room for every line, so the carbon figure is of full delivery.
        .env("VIGIL_GRAPHITE_BUFFER", "10000000")
        .env("VIGIL_STATS_INTERVAL_SECS", "0")
        .env("VIGIL_LOG", "info");
    let mut proc = ChildProc::spawn("sink", command)?;
    proc.wait_ready(READY_LIMIT)?;
    Ok(SinkProc(Some(proc)))
}

/// The simulated agents: DEALERs whose routing ids are their UUIDs, each
/// its own client (so several sinks do not meet on one client row).
struct Agents {
    _ctx: zmq::Context,
    sockets: Vec<(zmq::Socket, String)>,
    /// Every message asks for an ack (several sinks: the ack of the last
    /// message no longer says every one before it was handled).
    ack_all: bool,
}

/// How a phase went.
struct Phase {
    started: Instant,
    took: Duration,
    acks: usize,
}

impl Agents {
    fn connect(endpoint: &str, n: usize, ack_all: bool) -> Result<Agents, BenchError> {
        let ctx = zmq::Context::new();
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = ctx
                .socket(zmq::DEALER)
                .doing("creating the agent's DEALER")?;
            let uuid = uuid::Uuid::new_v4().to_string();
            socket.set_linger(0).doing("setting linger")?;
            socket
                .set_identity(uuid.as_bytes())
                .doing("setting the routing id")?;
            socket.set_rcvhwm(0).doing("setting rcvhwm")?;
            socket.connect(endpoint).doing("connecting to the router")?;
            sockets.push((socket, uuid));
        }
        Ok(Agents {
            _ctx: ctx,
            sockets,
            ack_all,
        })
    }

    /// Sends `n` messages made by `make(uuid, i, is_last)`, message i from
    /// agent i mod the number of agents, as fast as the sockets take them,
    /// reading replies as they come, until `acks_wanted` acks arrived. Any
    /// error reply fails the run.
    fn phase(
        &self,
        what: &str,
        n: usize,
        acks_wanted: usize,
        make: impl Fn(&str, usize, bool) -> Vec<u8>,
    ) -> Result<Phase, BenchError> {
        let k = self.sockets.len();
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let frame = make(&self.sockets[i % k].1, i, i + 1 == n);
                if self.ack_all {
                    acked(frame, what, i)
                } else {
                    frame
                }
            })
            .collect();
        let started = Instant::now();
        let deadline = started + PHASE_LIMIT;
        let (mut sent, mut acks) = (0, 0);
        while acks < acks_wanted {
            if Instant::now() > deadline {
                return Err(BenchError::timeout(format!(
                    "waiting for {what} acks ({acks} of {acks_wanted} after sending {sent} of {n})"
                )));
            }
            let events = if sent < n {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            let mut items: Vec<zmq::PollItem> = self
                .sockets
                .iter()
                .map(|(s, _)| s.as_poll_item(events))
                .collect();
            super::poll(&mut items, Duration::from_millis(500))?;
            while sent < n {
                match self.sockets[sent % k].0.send(&frames[sent], zmq::DONTWAIT) {
                    Ok(()) => sent += 1,
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(BenchError::zmq("sending", e)),
                }
                if sent % 256 == 0 {
                    break;
                }
            }
            for (socket, _) in &self.sockets {
                loop {
                    match socket.recv_bytes(zmq::DONTWAIT) {
                        Ok(reply) if reply.starts_with(br#"{"type":"ack""#) => acks += 1,
                        Ok(reply) => {
                            return Err(BenchError::protocol(
                                format!("sending {what}"),
                                String::from_utf8_lossy(&reply).into_owned(),
                            ))
                        }
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => return Err(BenchError::zmq("receiving", e)),
                    }
                }
            }
        }
        Ok(Phase {
            started,
            took: started.elapsed(),
            acks,
        })
    }
}

/// `frame` asking for an ack, with an id if it had none.
fn acked(frame: Vec<u8>, what: &str, i: usize) -> Vec<u8> {
    let Ok(mut msg) = serde_json::from_slice::<serde_json::Value>(&frame) else {
        return frame;
    };
    if msg.get("id").is_none() {
        msg["id"] = json!(format!("{what}-{i}"));
    }
    msg["ack"] = json!(true);
    msg.to_string().into_bytes()
}

fn now_s() -> f64 {
    vigil::store::now()
}

/// Stats of ten hosts with ten metrics each (a fixed set of series, as a
/// fleet has); the last carries the sentinel metric `bench-end.done`.
fn stats_message(uuid: &str, i: usize, last: bool) -> Vec<u8> {
    let metrics: serde_json::Map<String, serde_json::Value> = (0..10)
        .map(|m| (format!("m{m}.value"), json!(i % 1000)))
        .collect();
    let mut msg = json!({"uuid": uuid, "type": "stats", "hostname": format!("bench-h{}", i % 10),
                         "ts": now_s().floor(), "metrics": metrics});
    if last {
        msg = json!({"uuid": uuid, "type": "stats", "hostname": "bench-end", "ts": now_s().floor(),
                     "metrics": {"done": 1}, "id": "stats-end", "ack": true});
    }
    msg.to_string().into_bytes()
}

fn registration_message(uuid: &str, i: usize, last: bool) -> Vec<u8> {
    let plugins: Vec<serde_json::Value> = (0..5)
        .map(|p| json!({"name": format!("check_{p}"), "command": format!("/usr/lib/nagios/plugins/check_{p} -w 1 -c 2"),
                        "interval_s": 60, "timeout_s": 10}))
        .collect();
    let mut msg = json!({"uuid": uuid, "type": "registration", "hostname": "bench",
                         "process": {"name": format!("proc-{}", i % 50), "pid": i, "version": "1"},
                         "plugins": plugins});
    if last {
        msg["id"] = json!("registration-end");
        msg["ack"] = json!(true);
    }
    msg.to_string().into_bytes()
}

/// Results of 50 plugins, each alternating OK and WARNING every 10 results
/// (so some raise a state-change notification).
fn result_message(uuid: &str, i: usize, last: bool) -> Vec<u8> {
    let status = (i / 500) % 2;
    let mut msg = json!({"uuid": uuid, "type": "result", "hostname": "bench",
                         "plugin": format!("check_{}", i % 50), "status": status,
                         "output": "BENCH OK", "perfdata": {"v": i % 100}, "duration_ms": 3});
    if last {
        msg["id"] = json!("result-end");
        msg["ack"] = json!(true);
    }
    msg.to_string().into_bytes()
}

fn notification_message(uuid: &str, i: usize) -> Vec<u8> {
    json!({"uuid": uuid, "type": "notification", "hostname": "bench", "severity": "info",
           "source": "bench", "message": format!("bench notification {i}"),
           "id": format!("n-{i}-{}", std::process::id()), "ack": true})
    .to_string()
    .into_bytes()
}

fn heartbeat_message(uuid: &str, i: usize) -> Vec<u8> {
    json!({"uuid": uuid, "type": "heartbeat", "hostname": "bench", "interval_s": 30,
           "id": format!("hb-{i}"), "ack": true})
    .to_string()
    .into_bytes()
}

/// A real carbon-cache (`vigil::testkit`'s) in the bench directory, with
/// 1 s retention, running.
fn start_carbon(dir: &Path) -> Result<Carbon, BenchError> {
    if !Carbon::installed() {
        return Err(BenchError::usage(
            "bench sinks needs a real carbon-cache: apt-get install graphite-carbon python3-whisper",
        ));
    }
    let mut carbon = Carbon::configure(&dir.join("carbon")).doing("configuring carbon-cache")?;
    carbon.run().doing("starting carbon-cache")?;
    Ok(carbon)
}

/// Waits until carbon holds a point of `metric` from the last minute;
/// returns the time since `since`.
fn wait_for_point(carbon: &Carbon, metric: &str, since: Instant) -> Result<Duration, BenchError> {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let now = now_s() as i64;
        if !carbon.points(metric, now - 60, now + 1).is_empty() {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            return Err(BenchError::timeout(format!(
                "waiting for carbon to write {metric}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let messages = |a: &[&str]| parse_args(&args(a)).unwrap().map(|o| o.messages);
        assert_eq!(messages(&[]), Some(20_000));
        assert_eq!(messages(&["--messages", "500"]), Some(500));
        assert_eq!(messages(&["--help"]), None);
        let o = parse_args(&args(&["--db", "postgres://u@h/d"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.db.as_deref(), Some("postgres://u@h/d"));
        assert!(parse_args(&args(&["--db", "/tmp/x.db"]))
            .unwrap_err()
            .is_usage());
        assert!(parse_args(&args(&["--messages", "5"]))
            .unwrap_err()
            .is_usage());
        assert!(parse_args(&args(&["--seconds", "5"]))
            .unwrap_err()
            .is_usage());
    }

    #[test]
    fn only_the_last_message_asks_for_an_ack() {
        let u = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";
        let body = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        assert_eq!(body(stats_message(u, 3, false)).get("ack"), None);
        assert_eq!(body(stats_message(u, 3, true))["ack"], true);
        assert_eq!(body(registration_message(u, 3, false)).get("ack"), None);
        assert_eq!(
            body(registration_message(u, 3, true))["id"],
            "registration-end"
        );
        assert_eq!(body(heartbeat_message(u, 7))["id"], "hb-7");
    }
}
