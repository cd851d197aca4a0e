//! `vigil-bench sinks`: how many messages per second the sinks sustain,
//! end to end through a real router: stats into a real carbon-cache,
//! registrations into SQLite, and acks through the REQ/REP path back to the
//! client.
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
//! Rerun: `cargo run --release -- bench sinks [--messages N]`. Needs
//! Debian's graphite-carbon and python3-whisper.

use super::child::{vigil_command, ChildProc, Shutdown};
use super::{BenchError, Doing};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const READY_LIMIT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest one phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

pub const USAGE: &str = "usage: vigil-bench sinks [--messages N]

Measures, through a real router: stats messages/s into a real carbon-cache,
registrations/s into SQLite, and acks/s through the REQ/REP path.
N messages per phase (default 20000; acks use N/2, registrations N/4).";

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some(messages) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("vigil-bench-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).doing("creating the bench directory")?;
    let result = run_in(&dir, messages);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The message count, or `None` when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<usize>, BenchError> {
    match args {
        [] => Ok(Some(20_000)),
        [flag, n] if flag == "--messages" => n
            .parse()
            .ok()
            .filter(|n| (100..=10_000_000).contains(n))
            .map(Some)
            .ok_or_else(|| BenchError::usage("--messages takes a number from 100 to 10000000")),
        [flag] if flag == "--help" || flag == "-h" => Ok(None),
        _ => Err(BenchError::usage(format!(
            "unexpected arguments {args:?}\n{USAGE}"
        ))),
    }
}

fn run_in(dir: &Path, n: usize) -> Result<(), BenchError> {
    let carbon = Carbon::start(dir)?;
    let (mut router, router_ready) = start_router()?;
    let mut sink = start_sink(dir, &router_ready, &carbon)?;
    let agent = Agent::connect(&router_ready.client)?;

    let stats = agent.phase("stats", n, 1, |i, last| stats_message(&agent.uuid, i, last))?;
    let to_carbon = carbon.wait_for_point("vigil.bench-end.done", stats.started)?;
    let regs = n / 4;
    let registrations = agent.phase("registration", regs, 1, |i, last| {
        registration_message(&agent.uuid, i, last)
    })?;
    let acks = n / 2;
    let acked = agent.phase("heartbeat", acks, acks, |i, _| {
        heartbeat_message(&agent.uuid, i)
    })?;

    let sink_stop = sink.take().map(|s| s.stop(Shutdown::Terminate, STOP_GRACE));
    router.stop_router();
    drop(carbon);
    let graphite_line = sink_stop
        .as_ref()
        .and_then(|s| {
            s.log
                .tail
                .iter()
                .find(|l| l.contains("graphite before the flush"))
        })
        .map(|l| l[l.find("GraphiteStats").unwrap_or(0)..].to_string())
        .unwrap_or_else(|| "(not in the log)".to_string());
    let clean = sink_stop.is_some_and(|s| s.status.is_some_and(|st| st.success()));

    let stats_rate = n as f64 / stats.took.as_secs_f64();
    let carbon_rate = n as f64 / to_carbon.as_secs_f64();
    let reg_rate = regs as f64 / registrations.took.as_secs_f64();
    let ack_rate = acked.acks as f64 / acked.took.as_secs_f64();
    println!(
        "vigil-bench sinks: one agent → one router → one `vigil sink stats registration heartbeat`"
    );
    println!(
        "  stats        {n} msgs (10 metrics each) handled in {:.2} s: {stats_rate:.0} msgs/s ({:.0} lines/s); last point on carbon's disk after {:.2} s: {carbon_rate:.0} msgs/s",
        stats.took.as_secs_f64(),
        stats_rate * 10.0,
        to_carbon.as_secs_f64()
    );
    println!(
        "  registration {regs} msgs (5 plugins each) into SQLite in {:.2} s: {reg_rate:.0} msgs/s",
        registrations.took.as_secs_f64()
    );
    println!(
        "  acks         {} of {acks} heartbeats acked through REQ/REP in {:.2} s: {ack_rate:.0} acks/s",
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
               "acks_received": acked.acks, "acks_expected": acks, "clean_exit": clean})
    );
    Ok(())
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
            "heartbeat=tcp://127.0.0.1:*,stats=tcp://127.0.0.1:*,registration=tcp://127.0.0.1:*",
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

fn start_sink(dir: &Path, router: &RouterReady, carbon: &Carbon) -> Result<SinkProc, BenchError> {
    let mut command = vigil_command(&["sink", "stats", "registration", "heartbeat"])?;
    command
        .env("VIGIL_SINK_CONNECT", &router.sinks)
        .env("VIGIL_BACKENDS", &router.backend)
        .env("VIGIL_DB", dir.join("vigil.db"))
        .env("VIGIL_GRAPHITE", carbon.0.address())
        // Room for every line, so the carbon figure is of full delivery.
        .env("VIGIL_GRAPHITE_BUFFER", "10000000")
        .env("VIGIL_STATS_INTERVAL_SECS", "0")
        .env("VIGIL_LOG", "info");
    let mut proc = ChildProc::spawn("sink", command)?;
    proc.wait_ready(READY_LIMIT)?;
    Ok(SinkProc(Some(proc)))
}

/// The simulated agent.
struct Agent {
    _ctx: zmq::Context,
    socket: zmq::Socket,
    uuid: String,
}

/// How a phase went.
struct Phase {
    started: Instant,
    took: Duration,
    acks: usize,
}

impl Agent {
    fn connect(endpoint: &str) -> Result<Agent, BenchError> {
        let ctx = zmq::Context::new();
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
        Ok(Agent {
            _ctx: ctx,
            socket,
            uuid,
        })
    }

    /// Sends `n` messages made by `make(i, is_last)` as fast as the socket
    /// takes them, reading replies as they come, until `acks_wanted` acks
    /// arrived. Any error reply fails the run.
    fn phase(
        &self,
        what: &str,
        n: usize,
        acks_wanted: usize,
        make: impl Fn(usize, bool) -> Vec<u8>,
    ) -> Result<Phase, BenchError> {
        let frames: Vec<Vec<u8>> = (0..n).map(|i| make(i, i + 1 == n)).collect();
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
            let mut items = [self.socket.as_poll_item(events)];
            super::poll(&mut items, Duration::from_millis(500))?;
            while sent < n {
                match self.socket.send(&frames[sent], zmq::DONTWAIT) {
                    Ok(()) => sent += 1,
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(BenchError::zmq("sending", e)),
                }
                if sent % 256 == 0 {
                    break;
                }
            }
            loop {
                match self.socket.recv_bytes(zmq::DONTWAIT) {
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
        Ok(Phase {
            started,
            took: started.elapsed(),
            acks,
        })
    }
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

fn heartbeat_message(uuid: &str, i: usize) -> Vec<u8> {
    json!({"uuid": uuid, "type": "heartbeat", "hostname": "bench", "interval_s": 30,
           "id": format!("hb-{i}"), "ack": true})
    .to_string()
    .into_bytes()
}

/// The library's carbon-cache (`vigil::testkit`), in the bench directory.
struct Carbon(vigil::testkit::carbon::Carbon);

impl Carbon {
    fn start(dir: &Path) -> Result<Carbon, BenchError> {
        if !vigil::testkit::carbon::Carbon::installed() {
            return Err(BenchError::usage(
                "bench sinks needs a real carbon-cache: apt-get install graphite-carbon python3-whisper",
            ));
        }
        let mut carbon = vigil::testkit::carbon::Carbon::configure(&dir.join("carbon"))
            .doing("configuring carbon-cache")?;
        carbon.run().doing("starting carbon-cache")?;
        Ok(Carbon(carbon))
    }

    /// Waits until the whisper file of `metric` holds a point of the last
    /// minute; returns the time since `since`.
    fn wait_for_point(&self, metric: &str, since: Instant) -> Result<Duration, BenchError> {
        let deadline = Instant::now() + PHASE_LIMIT;
        loop {
            let now = now_s() as i64;
            if !self.0.points(metric, now - 60, now + 60).is_empty() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_args(&[]).unwrap(), Some(20_000));
        assert_eq!(
            parse_args(&args(&["--messages", "500"])).unwrap(),
            Some(500)
        );
        assert_eq!(parse_args(&args(&["--help"])).unwrap(), None);
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
