//! `vigil-bench agent`: what one agent sustains, measured from outside.
//!
//! A real `vigil router` and a real `vigil agent` run as child processes
//! on loopback, with the agent's state in a temporary directory. Then:
//!
//! 1. acked notifications: SENDERS threads, each a REQ on the agent's ipc
//!    socket (as `vigil send` is), send `ack:true` notifications for
//!    SECONDS; each reply means the message was fsynced into the spool, so
//!    replies/s is the spool's acceptance rate (group commit shares one
//!    fsync between the senders waiting at once). A PULL on the router's
//!    notification endpoint drains them, without acking.
//! 2. stats: the same senders send unacked `stats` for SECONDS; a PULL on
//!    the router's stats endpoint counts what arrives: messages/s through
//!    agent and router to a sink.
//!
//! The agent's RSS is read idle (after start) and sampled under load.
//! The last stdout line is JSON.

use super::child::{memory_mib, vigil_command, ChildProc, Shutdown};
use super::{spawn, BenchError, Doing};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: vigil-bench agent [--seconds N] [--senders K]

Runs a router and an agent on loopback and measures acked notifications/s
accepted into the agent's spool, stats messages/s through the agent to a
sink, and the agent's RSS idle and under load. Defaults: 3 s per phase,
8 senders. The last stdout line is JSON.";

const START_WAIT: Duration = Duration::from_secs(20);

struct Options {
    seconds: u64,
    senders: usize,
}

fn parse(args: &[String]) -> Result<Option<Options>, BenchError> {
    let mut opts = Options {
        seconds: 3,
        senders: 8,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| (1..=3600).contains(v))
                .ok_or_else(|| BenchError::usage(format!("{name} needs a number from 1 to 3600")))
        };
        match arg.as_str() {
            "--seconds" => opts.seconds = value("--seconds")?,
            "--senders" => opts.senders = value("--senders")? as usize,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => {
                return Err(BenchError::usage(format!(
                    "unknown argument {other:?}\n{USAGE}"
                )))
            }
        }
    }
    Ok(Some(opts))
}

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!(
        "vigil-bench-agent-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).doing("creating the temporary state directory")?;
    let result = measure(&opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(opts: &Options, dir: &std::path::Path) -> Result<(), BenchError> {
    let mut router_cmd = vigil_command(&["router"])?;
    router_cmd
        .env("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:*")
        .env("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:*")
        .env(
            "VIGIL_SINK_BINDS",
            "heartbeat=tcp://127.0.0.1:*,stats=tcp://127.0.0.1:*,registration=tcp://127.0.0.1:*,\
             notification=tcp://127.0.0.1:*,result=tcp://127.0.0.1:*",
        )
        .env("VIGIL_LOG", "info");
    let mut router = ChildProc::spawn("router", router_cmd)?;
    let r = router.wait_ready(START_WAIT)?;
    let sinks: std::collections::BTreeMap<&str, &str> = r["sinks"]
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let ctx = zmq::Context::new();
    let notifications = pull(&ctx, sinks["notification"])?;
    let stats_sink = pull(&ctx, sinks["stats"])?;
    std::fs::write(dir.join("machine-id"), "bench\n").doing("writing machine-id")?;
    let local = format!("ipc://{}", dir.join("agent.sock").display());
    let mut agent_cmd = vigil_command(&["agent"])?;
    agent_cmd
        .env("VIGIL_ROUTERS", &r["client"])
        .env("VIGIL_STATE_DIR", dir.join("state"))
        .env("VIGIL_MACHINE_ID_FILE", dir.join("machine-id"))
        .env("VIGIL_AGENT_LOCAL", &local)
        .env("VIGIL_STATSD_BIND", "off")
        .env("VIGIL_PLUGIN_DIR", dir.join("plugins.d"))
        .env("VIGIL_SPOOL_MAX_BYTES", (1u64 << 32).to_string())
        .env("VIGIL_RESEND_MIN_MS", "600000")
        .env("VIGIL_RESEND_MAX_MS", "600000")
        .env("VIGIL_LOG", "info");
    let mut agent = ChildProc::spawn("agent", agent_cmd)?;
    agent.wait_ready(START_WAIT)?;
    let pid = agent.pid();
    // Let start-up allocations settle before reading the idle figure.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = memory_mib(pid, "VmRSS").unwrap_or(f64::NAN);

    let window = Duration::from_secs(opts.seconds);
    let drained = drain(notifications)?;
    let (acked, acked_refused, peak1) =
        load(&local, opts.senders, window, pid, Kind::Notification)?;
    let stats_count = drain(stats_sink)?;
    let before = stats_count.0.load(Ordering::Relaxed);
    let (sent_stats, stats_refused, peak2) = load(&local, opts.senders, window, pid, Kind::Stats)?;
    // Messages still in flight when the senders stop are counted until
    // the sink goes quiet, within a bound.
    let quiet_deadline = Instant::now() + Duration::from_secs(5);
    let mut last = stats_count.0.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = stats_count.0.load(Ordering::Relaxed);
        if now == last || Instant::now() > quiet_deadline {
            break;
        }
        last = now;
    }
    let received = stats_count.0.load(Ordering::Relaxed) - before;
    let hwm = memory_mib(pid, "VmHWM").unwrap_or(f64::NAN);
    let stopped_agent = agent.stop(Shutdown::Terminate, Duration::from_secs(10));
    let _ = router.stop(Shutdown::Terminate, Duration::from_secs(10));
    stats_count.1.store(true, Ordering::Relaxed);
    drained.1.store(true, Ordering::Relaxed);

    let secs = window.as_secs_f64();
    let acked_rate = acked as f64 / secs;
    let stats_rate = received as f64 / secs;
    println!(
        "vigil-bench agent: {} senders, {} s per phase",
        opts.senders, opts.seconds
    );
    println!("  acked notifications accepted into the spool: {acked_rate:.0}/s ({acked} in {secs} s, {acked_refused} refused)");
    println!(
        "  stats through agent and router to a sink:    {stats_rate:.0}/s ({received} received of {sent_stats} accepted, {stats_refused} refused)"
    );
    println!(
        "  agent RSS: idle {idle_rss:.1} MiB, under load peak {:.1} MiB (VmHWM {hwm:.1} MiB)",
        peak1.max(peak2)
    );
    println!(
        "  agent exit: {:?} after {:?}, {} warnings",
        stopped_agent.status, stopped_agent.took, stopped_agent.log.warnings
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "agent",
            "senders": opts.senders,
            "seconds": opts.seconds,
            "acked_notifications_per_s": acked_rate.round(),
            "stats_per_s": stats_rate.round(),
            "stats_received": received,
            "stats_accepted": sent_stats,
            "rss_idle_mib": (idle_rss * 10.0).round() / 10.0,
            "rss_load_peak_mib": (peak1.max(peak2) * 10.0).round() / 10.0,
            "rss_hwm_mib": (hwm * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

fn pull(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, BenchError> {
    let s = ctx.socket(zmq::PULL).doing("creating a sink PULL")?;
    s.set_linger(0).doing("linger")?;
    s.set_rcvhwm(100_000).doing("rcvhwm")?;
    s.connect(endpoint).doing("connecting the sink")?;
    Ok(s)
}

/// Reads and counts messages on `sink` until told to stop.
fn drain(sink: zmq::Socket) -> Result<(Arc<AtomicU64>, Arc<AtomicBool>), BenchError> {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
    spawn("bench-sink", move || {
        let mut msg = zmq::Message::new();
        while !s.load(Ordering::Relaxed) {
            if sink.poll(zmq::POLLIN, 100).unwrap_or(0) == 0 {
                continue;
            }
            while sink.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                if !msg.get_more() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })?;
    Ok((count, stop))
}

#[derive(Clone, Copy)]
enum Kind {
    Notification,
    Stats,
}

/// Runs `senders` REQ loops for `window`; returns (accepted, refused, peak
/// RSS in MiB sampled meanwhile).
fn load(
    local: &str,
    senders: usize,
    window: Duration,
    pid: u32,
    kind: Kind,
) -> Result<(u64, u64, f64), BenchError> {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut handles = Vec::new();
    for n in 0..senders {
        let (ok, refused, local) = (Arc::clone(&ok), Arc::clone(&refused), local.to_string());
        handles.push(spawn(&format!("bench-sender-{n}"), move || -> Result<(), BenchError> {
            let ctx = zmq::Context::new();
            let req = ctx.socket(zmq::REQ).doing("creating a sender REQ")?;
            req.set_linger(0).doing("linger")?;
            req.connect(&local).doing("connecting to the agent")?;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = match kind {
                    Kind::Notification => format!(
                        r#"{{"type":"notification","ack":true,"severity":"warning","source":"bench","message":"sender {n} message {i}"}}"#
                    ),
                    Kind::Stats => format!(
                        r#"{{"type":"stats","metrics":{{"bench.sender":{n},"bench.seq":{i}}}}}"#
                    ),
                };
                req.send(body.as_bytes(), 0).doing("sending to the agent")?;
                if req.poll(zmq::POLLIN, 10_000).doing("waiting for the agent")? == 0 {
                    return Err(BenchError::timeout("waiting 10 s for the agent's reply"));
                }
                let reply = req.recv_bytes(0).doing("reading the agent's reply")?;
                if reply.starts_with(br#"{"id""#) || reply.windows(9).any(|w| w == br#""ok":true"#) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            Ok(())
        })?);
    }
    let mut peak: f64 = 0.0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(rss) = memory_mib(pid, "VmRSS") {
            peak = peak.max(rss);
        }
    }
    for h in handles {
        super::join(h)??;
    }
    Ok((
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        peak,
    ))
}
