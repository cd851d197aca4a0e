//! `vigil-bench proxy`: the baseline, libzmq's own `zmq_proxy` from a
//! ROUTER (client side) to a PUSH (sink side), run in a child process like
//! the router, with the router's I/O threads and high-water marks, so that
//! the ratio between the two is the cost of what vigil adds.

use super::options::{self, Parsed};
use super::{BenchError, Doing};
use std::io;

const HELP: &str = "usage: vigil-bench proxy --client-bind EP --sink-bind EP [--curve-key PATH]
(started by `vigil-bench router`; runs zmq_proxy until its stdin closes)
";

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let opts = match options::parse_proxy(args)? {
        Parsed::Help => {
            print!("{HELP}");
            return Ok(());
        }
        Parsed::Run(opts) => opts,
    };
    let io_threads = options::env_positive("VIGIL_IO_THREADS", 1)?;
    let client_hwm = options::env_positive("VIGIL_CLIENT_HWM", 1000)?;
    let sink_hwm = options::env_positive("VIGIL_SINK_HWM", 10_000)?;

    let ctx = zmq::Context::new();
    ctx.set_io_threads(io_threads)
        .doing("setting the proxy's I/O threads")?;
    let frontend = ctx.socket(zmq::ROUTER).doing("creating the proxy ROUTER")?;
    frontend
        .set_rcvhwm(client_hwm)
        .doing("setting ROUTER rcvhwm")?;
    frontend
        .set_sndhwm(client_hwm)
        .doing("setting ROUTER sndhwm")?;
    let backend = ctx.socket(zmq::PUSH).doing("creating the proxy PUSH")?;
    backend.set_sndhwm(sink_hwm).doing("setting PUSH sndhwm")?;
    for socket in [&frontend, &backend] {
        socket.set_linger(0).doing("setting linger")?;
        if let Some(path) = &opts.curve_key {
            super::curve::serve(socket, std::path::Path::new(path))?;
        }
    }
    let client = bind(&frontend, &opts.client_bind)?;
    let sink = bind(&backend, &opts.sink_bind)?;
    eprintln!("ready: client={client} sink={sink}");

    exit_when_stdin_closes()?;
    let Err(e) = zmq::proxy(&frontend, &backend) else {
        return Ok(());
    };
    Err(BenchError::zmq("running zmq_proxy", e))
}

/// Binds and returns the endpoint actually bound (the port of `:*`).
fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, BenchError> {
    socket
        .bind(endpoint)
        .doing(&format!("binding {endpoint}"))?;
    match socket
        .get_last_endpoint()
        .doing("reading the bound endpoint")?
    {
        Ok(bound) => Ok(bound),
        Err(raw) => Ok(String::from_utf8_lossy(&raw).into_owned()),
    }
}

/// `zmq_proxy` returns only when its context is terminated, which rust-zmq
/// 0.10 cannot do safely from another thread; so the parent ends the proxy
/// by closing our stdin (or by dying), and this watcher exits the process.
fn exit_when_stdin_closes() -> Result<(), BenchError> {
    let watcher = std::thread::Builder::new().name("bench-proxy-stdin".into());
    let spawned = watcher.spawn(|| {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        std::process::exit(0);
    });
    spawned.map(drop).doing("starting the stdin watcher")
}
