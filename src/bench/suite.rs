//! `vigil-bench router`: starts the router and the zmq_proxy baseline as
//! child processes, runs the phases in order (throughput for each client
//! count, the same with CURVE on both, delivery latency, connection scale
//! on a fresh router), and prints the report. Every phase has its own time limit, and every child is
//! reaped on the way out, so a run always ends by itself.

use super::child::{self, ChildProc, Shutdown};
use super::curve::Curve;
use super::latency;
use super::load::{self, Ledger, LoadSpec, Target, TargetKind};
use super::options::{self, Parsed, RouterOptions};
use super::payload;
use super::pin;
use super::report::{self, Report, Row};
use super::scale;
use super::BenchError;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Every bind is on loopback with a port the kernel picks.
const EPHEMERAL: &str = "tcp://127.0.0.1:*";
/// The router's default sink types, so its configuration looks like a real one.
const SINK_TYPES: [&str; 5] = [
    "heartbeat",
    "stats",
    "registration",
    "notification",
    "result",
];
/// The variables the benchmark always sets for the router itself.
const BIND_VARS: [&str; 3] = [
    "VIGIL_CLIENT_BIND",
    "VIGIL_BACKEND_BIND",
    "VIGIL_SINK_BINDS",
];
/// Settings for the router unless the environment says otherwise: info
/// logging is needed for the `ready:` line, and periodic stats would only
/// add noise.
const ROUTER_DEFAULTS: [(&str, &str); 2] =
    [("VIGIL_LOG", "info"), ("VIGIL_STATS_INTERVAL_SECS", "0")];
const READY_LIMIT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running router and what its `ready:` line said.
struct Router {
    proc: ChildProc,
    target: Target,
    backend: String,
}

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let opts = match options::parse_router(args)? {
        Parsed::Help => {
            print!("{}", options::ROUTER_USAGE);
            return Ok(());
        }
        Parsed::Run(opts) => opts,
    };
    let io_threads = options::env_positive("VIGIL_IO_THREADS", 1)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(target) = opts.pin_target {
        // Before any thread starts, so every one of them inherits it.
        pin::pin_self_away_from(target, cores)?;
    }
    // Refuse a too-small --size before starting anything.
    payload::stats_body(&uuid::Uuid::nil().to_string(), 0, opts.size).map_err(BenchError::usage)?;
    let mut report = Report::new(opts.clone(), io_threads, vigil_env());
    report.loadavg = load_average();
    report.cores = cores;

    let router = start_router(None, opts.pin_target)?;
    let (proxy, proxy_target) = start_proxy(None, opts.pin_target)?;
    throughput(&opts, &proxy_target, &router, &mut report)?;
    drop(proxy.stop(Shutdown::CloseStdin, STOP_GRACE));
    if !opts.curve_clients.is_empty() {
        curve_phase(&opts, &mut report)?;
    }
    report.rss_peak_mib = child::memory_mib(router.proc.pid(), "VmHWM");
    if opts.latency_requests > 0 {
        report.latency = Some(latency_phase(&opts, &router, None)?);
        if opts.latency_rate > 0 {
            let rate = Some(opts.latency_rate);
            report.latency_paced = Some(latency_phase(&opts, &router, rate)?);
        }
    }
    report.router_stop = Some(router.proc.stop(Shutdown::Terminate, STOP_GRACE));
    if opts.scale_clients > 0 {
        scale_phase(&opts, &mut report)?;
    }
    print!("{}", report::render_text(&report));
    println!("{}", report::render_json(&report));
    Ok(())
}

/// Proxy then router for each client count, so each row's two figures
/// come from the same minute on a noisy machine.
fn throughput(
    opts: &RouterOptions,
    proxy: &Target,
    router: &Router,
    report: &mut Report,
) -> Result<(), BenchError> {
    let backing_off = opts.clients.iter().map(|&c| (c, false));
    let flooding = opts.flood_clients.iter().map(|&c| (c, true));
    for (clients, flood) in backing_off.chain(flooding) {
        let row = paired_row(opts, proxy, router, clients, flood, false)?;
        report.rows.push(row);
    }
    Ok(())
}

/// One row of the table: the proxy, then the router, under the same load.
fn paired_row(
    opts: &RouterOptions,
    proxy: &Target,
    router: &Router,
    clients: usize,
    flood: bool,
    curve: bool,
) -> Result<Row, BenchError> {
    let spec = LoadSpec {
        clients,
        sinks: opts.sinks,
        size: opts.size,
        flood,
        rate: None,
    };
    let mode = if curve { " curve" } else { "" };
    let proxy_result = timed_run(&format!("proxy{mode}"), proxy, &spec, opts.seconds, None)?;
    let vigil_result = timed_run(
        &format!("vigil{mode}"),
        &router.target,
        &spec,
        opts.seconds,
        Some(&router.backend),
    )?;
    Ok(Row {
        clients,
        flood,
        curve,
        proxy: proxy_result,
        vigil: vigil_result,
    })
}

/// The router and zmq_proxy, both with CURVE, each on its own fresh
/// process (so the plaintext ones' figures stand alone), proxy then router
/// for each client count.
fn curve_phase(opts: &RouterOptions, report: &mut Report) -> Result<(), BenchError> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-curve-{}", std::process::id()));
    let curve = Arc::new(Curve::create(&dir)?);
    let router = start_router(Some(&curve), opts.pin_target)?;
    let (proxy, proxy_target) = start_proxy(Some(&curve), opts.pin_target)?;
    for &clients in &opts.curve_clients {
        let row = paired_row(opts, &proxy_target, &router, clients, false, true)?;
        report.rows.push(row);
    }
    drop(proxy.stop(Shutdown::CloseStdin, STOP_GRACE));
    drop(router.proc.stop(Shutdown::Terminate, STOP_GRACE));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One timed run. For the router, its counters are read after the hellos
/// and warm-up, so they account for exactly the timed messages.
fn timed_run(
    name: &str,
    target: &Target,
    spec: &LoadSpec,
    length: Duration,
    backend: Option<&str>,
) -> Result<load::LoadResult, BenchError> {
    let clients = report::clients(spec.clients);
    log::info!("bench: {name}, {clients}, {:.1} s", length.as_secs_f64());
    let prepared = load::prepare(target, spec)?;
    let ledger = match backend {
        Some(backend) => Ledger::router(backend, target.curve.clone())?,
        None => Ledger::AllSent,
    };
    let result = prepared.start(length)?.finish(&ledger)?;
    log::info!("bench: {name}, {clients}: {:.0} msg/s", result.msgs_per_s());
    Ok(result)
}

fn latency_phase(
    opts: &RouterOptions,
    router: &Router,
    rate: Option<u64>,
) -> Result<latency::LatencyResult, BenchError> {
    let spec = LoadSpec {
        clients: opts.latency_clients,
        sinks: opts.sinks,
        size: opts.size,
        flood: false,
        rate,
    };
    let pace = rate.map_or("at full speed".to_string(), |r| format!("at {r} msg/s"));
    log::info!(
        "bench: delivery latency, {} requests while {} clients stream {pace}",
        opts.latency_requests,
        spec.clients
    );
    latency::measure(
        &router.target,
        &router.backend,
        &spec,
        opts.latency_requests,
    )
}

/// On a fresh router, so its memory figures are not those of the
/// throughput runs' queues and UUID table.
fn scale_phase(opts: &RouterOptions, report: &mut Report) -> Result<(), BenchError> {
    log::info!("bench: connection scale, {} clients", opts.scale_clients);
    let router = start_router(None, opts.pin_target)?;
    let pid = router.proc.pid();
    let measured = scale::measure(
        pid,
        &router.target.client,
        &router.backend,
        opts.scale_clients,
    );
    report.scale_router_stop = Some(router.proc.stop(Shutdown::Terminate, STOP_GRACE));
    report.scale = Some(measured?);
    Ok(())
}

/// A router; with `curve`, CURVE on every socket and derived client
/// UUIDs, its key files from the benchmark's scratch directory.
fn start_router(curve: Option<&Arc<Curve>>, pin: Option<usize>) -> Result<Router, BenchError> {
    let mut command = child::vigil_command(&["router"])?;
    if let Some(core) = pin {
        pin::pin_child(&mut command, core);
    }
    if let Some(curve) = curve {
        command.envs(curve.router_env());
    }
    command.env("VIGIL_CLIENT_BIND", EPHEMERAL);
    command.env("VIGIL_BACKEND_BIND", EPHEMERAL);
    command.env("VIGIL_SINK_BINDS", sink_binds());
    for (name, value) in ROUTER_DEFAULTS {
        if env_is_unset(name) {
            command.env(name, value);
        }
    }
    let mut proc = ChildProc::spawn("router", command)?;
    let ready = proc.wait_ready(READY_LIMIT)?;
    let stats = ready
        .get("sinks")
        .and_then(|sinks| sink_endpoint(sinks, "stats"));
    let (Some(client), Some(backend), Some(stats)) =
        (ready.get("client"), ready.get("backend"), stats)
    else {
        return Err(BenchError::protocol(
            "reading the router's ready line",
            format!("{ready:?}"),
        ));
    };
    Ok(Router {
        target: Target {
            kind: TargetKind::Router,
            client: client.clone(),
            sink: stats,
            pid: Some(proc.pid()),
            curve: curve.cloned(),
        },
        backend: backend.clone(),
        proc,
    })
}

fn start_proxy(
    curve: Option<&Arc<Curve>>,
    pin: Option<usize>,
) -> Result<(ChildProc, Target), BenchError> {
    let key = curve.map(|c| c.server_key_path().display().to_string());
    let mut args = vec![
        "bench",
        "proxy",
        "--client-bind",
        EPHEMERAL,
        "--sink-bind",
        EPHEMERAL,
    ];
    if let Some(key) = &key {
        args.extend(["--curve-key", key.as_str()]);
    }
    let mut command: Command = child::vigil_command(&args)?;
    if let Some(core) = pin {
        pin::pin_child(&mut command, core);
    }
    let mut proc = ChildProc::spawn("proxy", command)?;
    let ready = proc.wait_ready(READY_LIMIT)?;
    let target = proxy_target(&ready, proc.pid(), curve.cloned()).ok_or_else(|| {
        BenchError::protocol("reading the proxy's ready line", format!("{ready:?}"))
    })?;
    Ok((proc, target))
}

fn proxy_target(
    ready: &BTreeMap<String, String>,
    pid: u32,
    curve: Option<Arc<Curve>>,
) -> Option<Target> {
    Some(Target {
        kind: TargetKind::Proxy,
        client: ready.get("client")?.clone(),
        sink: ready.get("sink")?.clone(),
        pid: Some(pid),
        curve,
    })
}

fn sink_binds() -> String {
    let binds: Vec<String> = SINK_TYPES
        .iter()
        .map(|kind| format!("{kind}={EPHEMERAL}"))
        .collect();
    binds.join(",")
}

/// The endpoint of `kind` in a `type=endpoint,type=endpoint` list.
fn sink_endpoint(sinks: &str, kind: &str) -> Option<String> {
    sinks
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == kind)
        .map(|(_, endpoint)| endpoint.to_string())
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Empty means "use the default" for the router, as for unset.
fn env_is_unset(name: &str) -> bool {
    std::env::var(name).map_or(true, |value| value.trim().is_empty())
}

/// The VIGIL_* settings the router will see from the environment (the bind
/// variables excepted: the benchmark overrides them).
fn vigil_env() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(name, value)| {
            name.starts_with("VIGIL_")
                && !BIND_VARS.contains(&name.as_str())
                && !value.trim().is_empty()
        })
        // The report is shared: a URL's password must not be in it.
        .map(|(name, value)| format!("{name}={}", vigil::store::target::redact(&value)))
        .collect();
    vars.sort();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_endpoint_is_found_in_the_sinks_list() {
        let sinks = "heartbeat=tcp://127.0.0.1:4003,stats=tcp://127.0.0.1:4004";
        assert_eq!(
            sink_endpoint(sinks, "stats").as_deref(),
            Some("tcp://127.0.0.1:4004")
        );
        assert_eq!(sink_endpoint(sinks, "result"), None);
    }

    #[test]
    fn every_sink_type_binds_an_ephemeral_port() {
        let binds = sink_binds();
        assert!(binds.starts_with("heartbeat=tcp://127.0.0.1:*,stats=tcp://127.0.0.1:*"));
        assert_eq!(binds.matches(EPHEMERAL).count(), SINK_TYPES.len());
    }
}
