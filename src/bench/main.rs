//! `vigil-bench`: the benchmarks of every part, each against real processes.
//!
//! A binary of its own, so the production `vigil` carries no benchmark code.
//! It starts the real `vigil` (the binary beside it in `target/release/`)
//! for routers, agents, sinks and schedulers, and itself for its helpers.
//!
//! `bench router` measures the router against libzmq's own `zmq_proxy`, on
//! the same machine and in the same run, so the figures stay comparable on a
//! noisy host; `proxy` and `clients` are hidden helpers it
//! starts as child processes, so that the baseline and the scale-test
//! clients each get their own process, file descriptor limit and RSS, like
//! the router does. `bench agent`, `bench sinks` and `bench scheduler`
//! (with its hidden `sched-agents` fleet) measure the other parts;
//! `bench scan` the router's validating scan against serde_json, in-process.

mod agent;
mod backend;
mod child;
mod clients;
mod curve;
mod fleet;
mod latency;
mod load;
mod options;
mod payload;
mod pin;
mod proxy;
mod report;
mod scale;
mod scan;
mod scheduler;
mod sinks;
mod suite;
mod web;

use std::fmt;
use std::time::Duration;

/// Counts allocations for `vigil-bench scan` (a thread-local add per call).
#[global_allocator]
static ALLOC: scan::CountingAlloc = scan::CountingAlloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("VIGIL_LOG", "info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("vigil-bench: {e}");
        std::process::exit(if e.is_usage() { 2 } else { 1 });
    }
}

/// `args` are the words after `vigil-bench`, e.g. ["router", "--seconds", "5"].
pub fn run(args: &[String]) -> Result<(), BenchError> {
    let Some((which, rest)) = args.split_first() else {
        return Err(BenchError::usage(
            "missing benchmark name: try `vigil-bench router`",
        ));
    };
    match which.as_str() {
        "router" => suite::run(rest),
        "agent" => agent::run(rest),
        "proxy" => proxy::run(rest),
        "clients" => clients::run(rest),
        "sinks" => sinks::run(rest),
        "scheduler" => scheduler::run(rest),
        "sched-agents" => scheduler::agents(rest),
        "web" => web::run(rest),
        "scan" => scan::run(rest),
        "-h" | "--help" | "help" => {
            print!("{}", options::ROUTER_USAGE);
            Ok(())
        }
        other => Err(BenchError::usage(format!(
            "unknown benchmark {other:?}: try router, agent, sinks, scheduler, web or scan"
        ))),
    }
}

/// Why a benchmark could not run or finish.
///
/// The underlying error's text is part of `Display` (and `source` is `None`)
/// so that printing the error once tells the whole story.
#[derive(Debug)]
pub struct BenchError {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
enum ErrorKind {
    /// Bad command line or VIGIL_* value: exit status 2.
    Usage(String),
    Zmq {
        doing: String,
        source: zmq::Error,
    },
    Io {
        doing: String,
        source: std::io::Error,
    },
    /// A child process failed to start or to report ready; `log_tail` is the
    /// end of its stderr, which usually says why.
    Child {
        name: String,
        detail: String,
        log_tail: Vec<String>,
    },
    Timeout {
        doing: String,
    },
    /// A peer answered something the protocol does not allow.
    Protocol {
        doing: String,
        detail: String,
    },
    ThreadPanicked {
        name: String,
    },
}

impl BenchError {
    /// True for a bad command line or environment value (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(self.kind, ErrorKind::Usage(_))
    }

    fn usage(message: impl Into<String>) -> Self {
        BenchError {
            kind: ErrorKind::Usage(message.into()),
        }
    }

    fn zmq(doing: impl Into<String>, source: zmq::Error) -> Self {
        let doing = doing.into();
        BenchError {
            kind: ErrorKind::Zmq { doing, source },
        }
    }

    fn child(name: &str, detail: String, log_tail: Vec<String>) -> Self {
        let name = name.to_string();
        BenchError {
            kind: ErrorKind::Child {
                name,
                detail,
                log_tail,
            },
        }
    }

    fn timeout(doing: impl Into<String>) -> Self {
        let doing = doing.into();
        BenchError {
            kind: ErrorKind::Timeout { doing },
        }
    }

    fn protocol(doing: impl Into<String>, detail: impl Into<String>) -> Self {
        let (doing, detail) = (doing.into(), detail.into());
        BenchError {
            kind: ErrorKind::Protocol { doing, detail },
        }
    }

    fn thread_panicked(name: &str) -> Self {
        let name = name.to_string();
        BenchError {
            kind: ErrorKind::ThreadPanicked { name },
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Usage(message) => {
                write!(f, "{message} (see `vigil-bench router --help`)")
            }
            ErrorKind::Zmq { doing, source } => write!(f, "{doing}: {source}"),
            ErrorKind::Io { doing, source } => write!(f, "{doing}: {source}"),
            ErrorKind::Child {
                name,
                detail,
                log_tail,
            } => {
                write!(f, "{name}: {detail}")?;
                for line in log_tail {
                    write!(f, "\n  {name} | {line}")?;
                }
                Ok(())
            }
            ErrorKind::Timeout { doing } => write!(f, "timed out {doing}"),
            ErrorKind::Protocol { doing, detail } => write!(f, "{doing}: {detail}"),
            ErrorKind::ThreadPanicked { name } => write!(f, "thread {name} panicked"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Attaches what we were doing to a zmq or I/O error.
trait Doing<T> {
    fn doing(self, what: &str) -> Result<T, BenchError>;
}

impl<T> Doing<T> for Result<T, zmq::Error> {
    fn doing(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::zmq(what, source))
    }
}

impl<T> Doing<T> for Result<T, std::io::Error> {
    fn doing(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|source| BenchError {
            kind: ErrorKind::Io {
                doing: what.to_string(),
                source,
            },
        })
    }
}

/// `zmq::poll` with a `Duration`; a signal interrupting it counts as a
/// timeout, because every caller polls in a loop with its own deadline.
fn poll(items: &mut [zmq::PollItem], timeout: Duration) -> Result<bool, BenchError> {
    let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    match zmq::poll(items, millis) {
        Ok(ready) => Ok(ready > 0),
        Err(zmq::Error::EINTR) => Ok(false),
        Err(e) => Err(BenchError::zmq("polling sockets", e)),
    }
}

/// Waits until `socket` has a message to read, for at most `timeout`.
fn readable(socket: &zmq::Socket, timeout: Duration) -> Result<bool, BenchError> {
    poll(&mut [socket.as_poll_item(zmq::POLLIN)], timeout)
}

/// Joins a benchmark thread, turning its panic into an error.
fn join<T>(handle: std::thread::JoinHandle<T>) -> Result<T, BenchError> {
    let name = handle.thread().name().unwrap_or("unnamed").to_string();
    handle
        .join()
        .map_err(|_| BenchError::thread_panicked(&name))
}

/// Spawns a named benchmark thread.
fn spawn<T, F>(name: &str, body: F) -> Result<std::thread::JoinHandle<T>, BenchError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .doing(&format!("starting thread {name}"))
}
