//! Harness for the `vigil sink` integration tests: the sink process, a
//! real carbon-cache, a temporary directory, and polling with a deadline.
//!
//! Like the router harness beside it, everything is real and bounded: the
//! sink is the `vigil` binary, started with its endpoints pointing at real
//! routers and its store in a fresh temporary directory; its `ready:` line
//! is read from stderr; its stderr is printed when a test fails; it is
//! killed when dropped. Carbon is Debian's `carbon-cache`, configured into a
//! temporary directory with a 1 s retention and read back with
//! `whisper-fetch`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::daemon::{output_within, vigil_command, Daemon};
use crate::util::{Router, START_WAIT};

/// How long a condition the tests wait for may take.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

pub use crate::util::daemon::wait_for;

/// What a test server logged, once it holds at least `n` entries (within
/// [`EVENTUALLY`]). Its output is read by a thread, which may lag behind
/// what the sink saw.
pub fn at_least<T>(n: usize, what: &str, read: impl Fn() -> Vec<T>) -> Vec<T> {
    wait_for(what, EVENTUALLY, || Some(read()).filter(|v| v.len() >= n))
}

pub use vigil::testkit::{free_port, TempDir};

/// A `vigil sink` process being configured.
pub struct SinkBuilder {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

impl SinkBuilder {
    /// `vigil sink ARGS` reading from every router in `routers`, writing
    /// the store `db` (`VIGIL_DB`: a SQLite path or a PostgreSQL URL).
    pub fn new(args: &[&str], routers: &[&Router], db: impl AsRef<std::ffi::OsStr>) -> SinkBuilder {
        let mut connect = Vec::new();
        for router in routers {
            for (ty, endpoint) in &router.sinks {
                connect.push(format!("{ty}={endpoint}"));
            }
        }
        let backends: Vec<&str> = routers.iter().map(|r| r.backend.as_str()).collect();
        let mut env = BTreeMap::new();
        env.insert("VIGIL_SINK_CONNECT".to_string(), connect.join(","));
        env.insert("VIGIL_BACKENDS".to_string(), backends.join(","));
        env.insert(
            "VIGIL_DB".to_string(),
            db.as_ref().to_string_lossy().into_owned(),
        );
        env.insert("VIGIL_LOG".to_string(), "info".to_string());
        // Nobody listens here unless a test starts carbon.
        env.insert(
            "VIGIL_GRAPHITE".to_string(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert("VIGIL_HEARTBEAT_SWEEP_MS".to_string(), "100".to_string());
        env.insert("VIGIL_OUTBOX_POLL_MS".to_string(), "200".to_string());
        env.insert("VIGIL_NOTIFY_RETRY_MS".to_string(), "200".to_string());
        env.insert("VIGIL_NOTIFY_RETRY_MAX_MS".to_string(), "1000".to_string());
        env.insert("VIGIL_ACK_TIMEOUT_MS".to_string(), "1000".to_string());
        SinkBuilder {
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> SinkBuilder {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    fn command(&self) -> Command {
        let mut sink_args = vec!["sink"];
        sink_args.extend(self.args.iter().map(String::as_str));
        let mut cmd = vigil_command(&sink_args);
        cmd.envs(&self.env);
        cmd
    }

    /// Starts the sink and waits (bounded) for its `ready:` line.
    pub fn start(self) -> SinkProc {
        let daemon = Daemon::spawn("vigil sink", self.command());
        SinkProc { daemon }
    }

    /// Runs a sink expected to stop at once; returns status and stderr.
    pub fn run_to_exit(self) -> (ExitStatus, String) {
        let out = output_within(self.command(), START_WAIT);
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A running `vigil sink` (a [`Daemon`]).
pub struct SinkProc {
    daemon: Daemon,
}

impl SinkProc {
    pub fn log_text(&self) -> String {
        self.daemon.log_lines().join("\n")
    }

    pub fn sigterm(&self) {
        self.daemon.sigterm();
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP` to freeze it, `SIGCONT` to resume).
    pub fn signal(&self, sig: i32) {
        self.daemon.signal(sig);
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the status and
    /// the whole stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.sigterm();
        let status = self
            .daemon
            .wait_exit(START_WAIT)
            .unwrap_or_else(|| panic!("the sink still runs {START_WAIT:?} after SIGTERM"));
        (status, self.log_text())
    }

    /// [`SinkProc::stop`], which must end well and log `summary` (its
    /// exit summary's counters); returns the log.
    pub fn stop_saying(self, summary: &str) -> String {
        let log = self.stop_ok();
        assert!(log.contains(summary), "no {summary:?} in the log:\n{log}");
        log
    }

    /// [`SinkProc::stop`], which must end well; returns the log.
    pub fn stop_ok(self) -> String {
        let (status, log) = self.stop();
        assert!(status.success(), "exit status {status}\n{log}");
        log
    }
}

pub use vigil::testkit::aiosmtpd::Aiosmtpd;
pub use vigil::testkit::carbon::Carbon;

/// A local HTTP server for the webhook: answers each POST with the next
/// status of its script (the last one repeats) and keeps the bodies.
pub struct WebhookServer {
    pub port: u16,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookServer {
    pub fn start(statuses: &[u16]) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook listener");
        let port = listener.local_addr().expect("local addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        let statuses = statuses.to_vec();
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let status = statuses[n.min(statuses.len() - 1)];
                // Kept before the reply: once the sink has its answer (and
                // acks), the test must find the body here.
                if let Some((body, stream)) = read_request(stream) {
                    kept.lock().expect("bodies lock").push(body);
                    reply(stream, status);
                }
            }
        });
        WebhookServer { port, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v2/enqueue", self.port)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("bodies lock").clone()
    }
}

/// Reads one request: headers, then Content-Length bytes of body.
fn read_request(stream: TcpStream) -> Option<(String, TcpStream)> {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((String::from_utf8_lossy(&body).into_owned(), stream))
}

fn reply(mut stream: TcpStream, status: u16) {
    use std::io::Write;
    let reply =
        format!("HTTP/1.1 {status} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    let _ = stream.write_all(reply.as_bytes());
}
