//! `vigil-bench scheduler`: what one `vigil scheduler` drives, and what a
//! simulated fleet answering it costs the router.
//!
//! Each phase builds a fresh store with N clients (fresh heartbeats) and P
//! plugins each, starts a real `vigil router`, a load generator (`vigil
//! bench sched-agents`, a hidden helper: one process holding N DEALERs
//! whose routing ids are the clients' UUIDs, answering every `run_plugin`
//! with a `result`), a stand-in result sink in this process (PULLs results
//! and sets `runs.completed_at`, as `vigil sink result` does), and a real
//! `vigil scheduler`. After a warm-up it measures, over a window: runs the
//! scheduler recorded per second, results that came back, and the CPU and
//! memory of the router and the scheduler (read from /proc, as the router
//! benchmark does).
//!
//! Phases: `saturation` asks for far more runs per second than one
//! scheduler can send (interval 1 s), so the rate measured is its ceiling;
//! `fleet` is a steady fleet (default 5,000 clients) at a realistic rate.
//!
//! With `--db postgres://...` every phase runs twice, on SQLite and on a
//! fresh database of that PostgreSQL server (its user needs CREATEDB),
//! and the closing note gives both rates and their ratio.

use super::child::{self, ChildProc, Shutdown};
use super::fleet::{self, ContextPool, Dealer};
use super::{join, spawn, BenchError, Doing};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::params;
use vigil::store::scratch::ScratchDb;
use vigil::store::{self, Store, Target};

const USAGE: &str = "usage: vigil-bench scheduler [--seconds S] [--fleet N] [--fleet-interval S]
                              [--saturation-clients N] [--saturation-plugins P]
                              [--db postgres://USER@HOST:PORT/DB]

Measures one vigil scheduler: the (client, plugin) pairs it drives per
second at saturation, and a simulated fleet of N clients answering
run_plugin through one router (router CPU and RSS). Defaults: --seconds 8,
--fleet 5000, --fleet-interval 5, --saturation-clients 200,
--saturation-plugins 50. With --db, each phase runs on SQLite and again on
a fresh database of that PostgreSQL server (CREATEDB needed), and the
closing note compares them. The last stdout line is JSON.
";

const READY_LIMIT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The load generator's pause between poll rounds.
const ANSWER_PAUSE: Duration = Duration::from_millis(20);
/// Clients connected per batch, each batch awaiting its welcomes.
const CONNECT_BATCH: usize = 100;

#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    fleet: usize,
    fleet_interval: u64,
    saturation_clients: usize,
    saturation_plugins: usize,
    /// A PostgreSQL server to measure beside SQLite.
    db: Option<String>,
}

fn parse(args: &[String]) -> Result<Option<Options>, BenchError> {
    let mut o = Options {
        seconds: 8,
        fleet: 5_000,
        fleet_interval: 5,
        saturation_clients: 200,
        saturation_plugins: 50,
        db: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| BenchError::usage(format!("{arg} needs a value")))?;
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| BenchError::usage(format!("{arg} {value:?}: expected 1 to {max}")))
        };
        match arg.as_str() {
            "--seconds" => o.seconds = number(3_600)?,
            "--fleet" => o.fleet = number(20_000)? as usize,
            "--fleet-interval" => o.fleet_interval = number(3_600)?,
            "--saturation-clients" => o.saturation_clients = number(20_000)? as usize,
            "--saturation-plugins" => o.saturation_plugins = number(1_000)? as usize,
            "--db" => match Target::parse(value, None, None) {
                Ok(Target::Postgres(_)) => o.db = Some(value.clone()),
                _ => {
                    return Err(BenchError::usage(format!(
                        "--db {value:?}: expected a postgres:// URL"
                    )))
                }
            },
            other => return Err(BenchError::usage(format!("unknown option {other:?}"))),
        }
    }
    Ok(Some(o))
}

/// One phase's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    clients: usize,
    plugins: usize,
    interval: u64,
    warmup: Duration,
    window: Duration,
}

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct PhaseResult {
    phase: &'static str,
    /// "sqlite" or "postgres".
    store: &'static str,
    clients: usize,
    plugins_per_client: usize,
    interval_s: u64,
    welcomed: usize,
    demand_per_s: f64,
    runs_per_s: f64,
    results_per_s: f64,
    /// Runs sent in the window still without result 2 s after it.
    unanswered: i64,
    /// Runs sent in a slot that already had one (must be 0).
    duplicates: usize,
    window_s: f64,
    router_cpu_pct: f64,
    router_rss_mib: Option<f64>,
    router_peak_mib: Option<f64>,
    scheduler_cpu_pct: f64,
    scheduler_rss_mib: Option<f64>,
    router_undeliverable: u64,
    scheduler_warnings: u64,
    /// Runs the scheduler dropped because their slot ended before it could
    /// send them (its own count, whole run).
    dropped_late: Option<u64>,
}

/// The scheduler's `dropped late: N` from its last summary line.
fn dropped_late<'a>(lines: impl Iterator<Item = &'a String>) -> Option<u64> {
    lines
        .filter_map(|line| line.split("dropped late: ").nth(1))
        .filter_map(|rest| rest.trim().parse().ok())
        .last()
}

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some(o) = parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let window = Duration::from_secs(o.seconds);
    let phases = [
        Shape {
            name: "saturation",
            clients: o.saturation_clients,
            plugins: o.saturation_plugins,
            interval: 1,
            warmup: Duration::from_secs(2),
            window,
        },
        Shape {
            name: "fleet",
            clients: o.fleet,
            plugins: 1,
            interval: o.fleet_interval,
            warmup: Duration::from_secs(2 * o.fleet_interval),
            window,
        },
    ];
    let mut results = Vec::new();
    let stores: Vec<Option<&str>> = std::iter::once(None)
        .chain(o.db.as_deref().map(Some))
        .collect();
    for shape in phases {
        for server in &stores {
            eprintln!(
                "phase {} on {}: {} clients x {} plugins every {} s ...",
                shape.name,
                if server.is_some() {
                    "postgres"
                } else {
                    "sqlite"
                },
                shape.clients,
                shape.plugins,
                shape.interval
            );
            let result = phase(shape, *server)?;
            println!(
            "{:<10} {:<8} demand {:>8.0}/s  runs sent {:>8.0}/s  results {:>8.0}/s  unanswered {:>5}  duplicates {}  \
             router CPU {:>5.1}% RSS {:>6.1} MiB (peak {:>6.1})  scheduler CPU {:>5.1}% RSS {:>6.1} MiB",
            result.phase,
            result.store,
            result.demand_per_s,
            result.runs_per_s,
            result.results_per_s,
            result.unanswered,
            result.duplicates,
            result.router_cpu_pct,
            result.router_rss_mib.unwrap_or(f64::NAN),
            result.router_peak_mib.unwrap_or(f64::NAN),
            result.scheduler_cpu_pct,
            result.scheduler_rss_mib.unwrap_or(f64::NAN),
        );
            println!(
            "{:<10} scheduler dropped {} run(s) late over the whole phase (first round included)",
            "",
            result
                .dropped_late
                .map_or("?".to_string(), |n| n.to_string())
        );
            results.push(result);
        }
    }
    if o.db.is_some() {
        // The closing note: each phase on both stores, and the ratio.
        for pair in results.chunks(2) {
            if let [lite, pg] = pair {
                println!(
                    "{:<10} scheduler pairs/s: sqlite {:.0}, postgres {:.0}, postgres/sqlite {:.2}",
                    lite.phase,
                    lite.runs_per_s,
                    pg.runs_per_s,
                    pg.runs_per_s / lite.runs_per_s.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    let json = serde_json::to_string(&results).unwrap_or_default();
    println!("{json}");
    Ok(())
}

fn phase(shape: Shape, server: Option<&str>) -> Result<PhaseResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-sched-{}", uuid::Uuid::new_v4()));
    let result = phase_in(&dir, shape, server);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn phase_in(dir: &Path, shape: Shape, server: Option<&str>) -> Result<PhaseResult, BenchError> {
    std::fs::create_dir_all(dir).doing("creating the bench directory")?;
    // `_scratch` drops the PostgreSQL database at the end of the phase.
    let (db_value, _scratch) = match server {
        None => (dir.join("vigil.db").display().to_string(), None),
        Some(server) => {
            let scratch = ScratchDb::create(server)
                .map_err(|e| BenchError::protocol("creating a database for the phase", e))?;
            (scratch.url.clone(), Some(scratch))
        }
    };
    let db =
        Target::parse(&db_value, None, None).map_err(|e| BenchError::protocol("the store", e))?;
    let uuids = populate(&db, shape)?;
    let uuid_file = dir.join("uuids");
    std::fs::write(&uuid_file, uuids.join("\n")).doing("writing the client list")?;

    let (mut router, client_ep, backend_ep, result_ep) = start_router()?;
    let mut agents = ChildProc::spawn("sched-agents", {
        let file = uuid_file.display().to_string();
        child::vigil_command(&[
            "bench",
            "sched-agents",
            "--connect",
            &client_ep,
            "--uuids",
            &file,
        ])?
    })?;
    let ready = agents.wait_ready(READY_LIMIT)?;
    let welcomed = ready
        .get("welcomed")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);

    let sink = ResultSink::start(&db, &result_ep)?;
    let mut command = child::vigil_command(&["scheduler"])?;
    command
        .env("VIGIL_DB", &db_value)
        .env("VIGIL_BACKENDS", &backend_ep)
        .env("VIGIL_SCHEDULER_RELOAD_MS", "1000")
        .env("VIGIL_RESULT_GRACE_SECS", "30")
        .env("VIGIL_LOG", "info");
    let mut scheduler = ChildProc::spawn("scheduler", command)?;
    scheduler.wait_ready(READY_LIMIT)?;

    let store = std::cell::RefCell::new(
        Store::open(&db).map_err(|e| BenchError::protocol("opening the store", e.to_string()))?,
    );
    let count = |what: &str, sql: &str, params: &[store::Val]| -> Result<i64, BenchError> {
        let mut store = store.borrow_mut();
        store
            .read()
            .and_then(|tx| tx.query_value(sql, params))
            .map_err(|e| BenchError::protocol(what, e.to_string()))
    };
    let count_runs = || count("counting runs", "SELECT COUNT(*) FROM runs", &[]);
    // Warm-up: a fresh store's first round goes out as one burst; measure
    // the steady state after it (at saturation, the ceiling either way).
    let first_round = (shape.clients * shape.plugins).min(shape.clients * 10) as i64;
    let warm_by = Instant::now() + READY_LIMIT;
    while count_runs()? < first_round && Instant::now() < warm_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(shape.warmup);
    let (rpid, spid) = (router.pid(), scheduler.pid());
    let cpu = |pid| child::cpu_time(pid).unwrap_or_default();
    let (results0, rcpu0, scpu0) = (sink.results(), cpu(rpid), cpu(spid));
    let began = Instant::now();
    let started_at = store::now();
    std::thread::sleep(shape.window);
    let (results1, rcpu1, scpu1) = (sink.results(), cpu(rpid), cpu(spid));
    let wall = began.elapsed().as_secs_f64();
    let ended_at = store::now();
    let router_rss = child::memory_mib(rpid, "VmRSS");
    let router_peak = child::memory_mib(rpid, "VmHWM");
    let scheduler_rss = child::memory_mib(spid, "VmRSS");
    let undeliverable = super::backend::status(&backend_ep)
        .map(|s| s.counters.undeliverable)
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    let unanswered = count(
        "counting unanswered runs",
        "SELECT COUNT(*) FROM runs WHERE completed_at IS NULL AND sent_at >= ?1 AND sent_at < ?2",
        params![started_at, ended_at],
    )?;
    // Rows of runs not sent (late or undeliverable) are deleted after their
    // batch, so the runs sent are counted once that has settled.
    let sent_in_window = count(
        "counting runs sent",
        "SELECT COUNT(*) FROM runs WHERE sent_at >= ?1 AND sent_at < ?2",
        params![started_at, ended_at],
    )?;

    let duplicates = duplicate_slots(&mut store.borrow_mut(), shape.interval as f64)?;
    let stopped = scheduler.stop(Shutdown::Terminate, STOP_GRACE);
    for line in stopped
        .log
        .notable
        .iter()
        .chain(stopped.log.tail.iter().rev().take(1))
    {
        eprintln!("  scheduler | {line}");
    }
    agents.stop(Shutdown::CloseStdin, STOP_GRACE);
    sink.stop()?;
    router.stop_now();
    Ok(PhaseResult {
        phase: shape.name,
        store: if server.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        clients: shape.clients,
        plugins_per_client: shape.plugins,
        interval_s: shape.interval,
        welcomed,
        demand_per_s: (shape.clients * shape.plugins) as f64 / shape.interval as f64,
        runs_per_s: sent_in_window as f64 / (ended_at - started_at),
        results_per_s: (results1 - results0) as f64 / wall,
        unanswered,
        duplicates,
        window_s: wall,
        router_cpu_pct: (rcpu1 - rcpu0).as_secs_f64() / wall * 100.0,
        router_rss_mib: router_rss,
        router_peak_mib: router_peak,
        scheduler_cpu_pct: (scpu1 - scpu0).as_secs_f64() / wall * 100.0,
        scheduler_rss_mib: scheduler_rss,
        router_undeliverable: undeliverable,
        scheduler_warnings: stopped.log.warnings,
        dropped_late: dropped_late(stopped.log.tail.iter()),
    })
}

/// Counts runs that share a (client, plugin, slot) with an earlier one.
fn duplicate_slots(store: &mut Store, interval: f64) -> Result<usize, BenchError> {
    let fail = |e: store::DbError| BenchError::protocol("reading runs", e.to_string());
    let rows = store
        .read()
        .and_then(|tx| tx.query("SELECT uuid, plugin, sent_at FROM runs", &[]))
        .map_err(fail)?;
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for row in rows {
        let (uuid, plugin, sent_at): (String, String, f64) = (
            row.get(0).map_err(fail)?,
            row.get(1).map_err(fail)?,
            row.get(2).map_err(fail)?,
        );
        let phase = vigil::scheduler::plan::phase(&uuid, &plugin, interval);
        let slot = ((sent_at - phase) / interval).floor() as i64;
        if !seen.insert((uuid, plugin, slot)) {
            duplicates += 1;
        }
    }
    Ok(duplicates)
}

/// Creates the store with the phase's clients and plugins; returns the UUIDs.
fn populate(db: &Target, shape: Shape) -> Result<Vec<String>, BenchError> {
    let fail =
        |e: &dyn std::fmt::Display| BenchError::protocol("populating the store", e.to_string());
    let mut store = Store::open(db).map_err(|e| fail(&e))?;
    let now = store::now();
    let uuids: Vec<String> = (0..shape.clients)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let tx = store.write().map_err(|e| fail(&e))?;
    for (n, uuid) in uuids.iter().enumerate() {
        tx.execute(
            "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_heartbeat, heartbeat_interval_s, liveness)
             VALUES (?1, ?2, ?3, ?3, ?3, 3600, 'up')",
            params![uuid, &format!("bench-{n:05}"), now],
        )
        .map_err(|e| fail(&e))?;
        for p in 0..shape.plugins {
            tx.execute(
                "INSERT INTO plugins (uuid, name, process, command, interval_s, timeout_s, registered_at)
                 VALUES (?1, ?2, 'vigil-agent', 'true', ?3, 10, ?4)",
                params![uuid, &format!("check_{p}"), shape.interval as f64, now],
            )
            .map_err(|e| fail(&e))?;
        }
    }
    tx.commit().map_err(|e| fail(&e))?;
    Ok(uuids)
}

struct RouterChild(Option<ChildProc>);

impl RouterChild {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, ChildProc::pid)
    }

    fn stop_now(&mut self) {
        if let Some(proc) = self.0.take() {
            proc.stop(Shutdown::Terminate, STOP_GRACE);
        }
    }
}

/// Starts a router on ephemeral ports: (router, client, backend, result sink).
fn start_router() -> Result<(RouterChild, String, String, String), BenchError> {
    let mut command = child::vigil_command(&["router"])?;
    command
        .env("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:*")
        .env("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:*")
        .env("VIGIL_SINK_BINDS", "result=tcp://127.0.0.1:*")
        .env("VIGIL_LOG", "info");
    let mut proc = ChildProc::spawn("router", command)?;
    let ready = proc.wait_ready(READY_LIMIT)?;
    let result = ready
        .get("sinks")
        .and_then(|s| s.strip_prefix("result="))
        .map(str::to_string);
    match (ready.get("client"), ready.get("backend"), result) {
        (Some(client), Some(backend), Some(result)) => {
            let (client, backend) = (client.clone(), backend.clone());
            Ok((RouterChild(Some(proc)), client, backend, result))
        }
        _ => Err(BenchError::protocol(
            "reading the router's ready line",
            format!("{ready:?}"),
        )),
    }
}

/// A stand-in result sink: PULLs results and marks their runs completed,
/// in one transaction per burst.
struct ResultSink {
    stop: Arc<AtomicBool>,
    results: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<(), BenchError>>,
}

impl ResultSink {
    fn start(db: &Target, endpoint: &str) -> Result<ResultSink, BenchError> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::PULL).doing("creating the result PULL")?;
        socket.set_linger(0).doing("setting linger")?;
        socket.set_rcvhwm(100_000).doing("setting rcvhwm")?;
        socket
            .connect(endpoint)
            .doing("connecting the result PULL")?;
        let db = db.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            spawn("bench-result-sink", move || {
                sink_loop(&socket, &db, &stop, &results)
            })?
        };
        Ok(ResultSink {
            stop,
            results,
            thread,
        })
    }

    fn results(&self) -> u64 {
        self.results.load(Ordering::SeqCst)
    }

    fn stop(self) -> Result<(), BenchError> {
        self.stop.store(true, Ordering::SeqCst);
        join(self.thread)?
    }
}

fn sink_loop(
    socket: &zmq::Socket,
    db: &Target,
    stop: &AtomicBool,
    results: &AtomicU64,
) -> Result<(), BenchError> {
    let fail = |e: &dyn std::fmt::Display| BenchError::protocol("recording results", e.to_string());
    let mut store = Store::open(db).map_err(|e| fail(&e))?;
    while !stop.load(Ordering::SeqCst) {
        if !super::readable(socket, Duration::from_millis(100))? {
            continue;
        }
        let mut run_ids = Vec::new();
        while run_ids.len() < 5_000 {
            let frames = match socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(BenchError::zmq("receiving a result", e)),
            };
            let msg: serde_json::Value = serde_json::from_slice(&frames[0]).unwrap_or_default();
            if let Some(id) = msg.get("run_id").and_then(|v| v.as_str()) {
                run_ids.push(id.to_string());
            }
        }
        let now = store::now();
        let tx = store.write().map_err(|e| fail(&e))?;
        for id in &run_ids {
            tx.execute(
                "UPDATE runs SET completed_at = ?2 WHERE run_id = ?1",
                params![id, now],
            )
            .map_err(|e| fail(&e))?;
        }
        tx.commit().map_err(|e| fail(&e))?;
        results.fetch_add(run_ids.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}

/// `vigil-bench sched-agents --connect EP --uuids FILE`: the load
/// generator. Holds one welcomed DEALER per UUID and answers every
/// run_plugin with a result until its stdin closes.
pub fn agents(args: &[String]) -> Result<(), BenchError> {
    let (mut connect, mut file) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--connect" => connect = it.next().cloned(),
            "--uuids" => file = it.next().cloned(),
            other => {
                return Err(BenchError::usage(format!(
                    "sched-agents: unknown option {other:?}"
                )))
            }
        }
    }
    let (Some(endpoint), Some(file)) = (connect, file) else {
        return Err(BenchError::usage(
            "sched-agents needs --connect EP --uuids FILE",
        ));
    };
    let text = std::fs::read_to_string(&file).doing("reading the client list")?;
    let mut pool = ContextPool::default();
    let mut dealers = Vec::new();
    let mut welcomed = 0;
    let deadline = Instant::now() + Duration::from_secs(100);
    let uuids: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    for chunk in uuids.chunks(CONNECT_BATCH) {
        let mut batch = Vec::with_capacity(chunk.len());
        for uuid in chunk {
            let socket = pool.socket(zmq::DEALER)?;
            socket
                .set_identity(uuid.as_bytes())
                .doing("setting a routing id")?;
            socket.connect(&endpoint).doing("connecting a DEALER")?;
            let dealer = Dealer {
                socket,
                uuid: uuid.to_string(),
            };
            dealer.send_hello()?;
            batch.push(dealer);
        }
        welcomed += fleet::await_welcomes(&batch, deadline)?;
        dealers.extend(batch);
    }
    eprintln!("ready: welcomed={welcomed}");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        spawn("stdin-watch", move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::SeqCst);
        })?;
    }
    let (mut answered, mut dropped) = (0u64, 0u64);
    while !stop.load(Ordering::SeqCst) {
        let mut items: Vec<zmq::PollItem> = dealers
            .iter()
            .map(|d| d.socket.as_poll_item(zmq::POLLIN))
            .collect();
        if !super::poll(&mut items, Duration::from_millis(100))? {
            continue;
        }
        let ready: Vec<bool> = items.iter().map(zmq::PollItem::is_readable).collect();
        drop(items);
        // One poll scans every socket, so polling per message would make
        // this generator, not the router, the machine's main CPU user;
        // pausing lets messages gather (a few ms of latency, no loss).
        std::thread::sleep(ANSWER_PAUSE);
        for (dealer, _) in dealers.iter().zip(ready).filter(|(_, r)| *r) {
            while let Ok(frame) = dealer.socket.recv_bytes(zmq::DONTWAIT) {
                let Some(reply) = answer(&dealer.uuid, &frame) else {
                    continue;
                };
                match dealer.socket.send(reply.as_bytes(), zmq::DONTWAIT) {
                    Ok(()) => answered += 1,
                    Err(_) => dropped += 1,
                }
            }
        }
    }
    eprintln!("done: answered={answered} dropped={dropped}");
    let _ = std::io::stderr().flush();
    Ok(())
}

/// The result for a run_plugin frame; None for anything else.
fn answer(uuid: &str, frame: &[u8]) -> Option<String> {
    let msg: serde_json::Value = serde_json::from_slice(frame).ok()?;
    if msg.get("type")?.as_str()? != "run_plugin" {
        return None;
    }
    let result = serde_json::json!({
        "uuid": uuid, "type": "result", "plugin": msg.get("plugin")?, "status": 0,
        "output": "OK", "run_id": msg.get("run_id")?, "duration_ms": 1,
    });
    Some(result.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_run_plugin() {
        let frame = br#"{"type":"run_plugin","to":"u","plugin":"disk","run_id":"r1"}"#;
        let reply: serde_json::Value = serde_json::from_str(&answer("u", frame).unwrap()).unwrap();
        assert_eq!(reply["run_id"], "r1");
        assert_eq!(reply["plugin"], "disk");
        assert_eq!(reply["type"], "result");
        assert_eq!(answer("u", br#"{"type":"ack","to":"u","id":"x"}"#), None);
        assert_eq!(answer("u", b"garbage"), None);
    }

    #[test]
    fn reads_the_late_count() {
        let lines = [
            "x".to_string(),
            "[t WARN  vigil::scheduler::dispatch] dispatcher stopped; runs sent: 5, not delivered: 0, dropped late: 17".to_string(),
        ];
        assert_eq!(dropped_late(lines.iter()), Some(17));
        assert_eq!(dropped_late([].iter()), None);
    }

    #[test]
    fn options() {
        let args: Vec<String> = ["--fleet", "100", "--seconds", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse(&args).unwrap().unwrap();
        assert_eq!((o.fleet, o.seconds), (100, 3));
        assert!(parse(&["--fleet".to_string()]).is_err());
        assert!(parse(&["--fleet".to_string(), "0".to_string()]).is_err());
    }
}
