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
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::daemon::{output_within, vigil_command, Daemon};
use crate::util::{Router, START_WAIT};

/// How long a condition the tests wait for may take.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

pub use crate::util::daemon::wait_for;

pub use crate::util::scratch::{free_port, TempDir};

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
    #[allow(dead_code)] // tests/overload.rs uses it, tests/sinks.rs not
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
}

/// A real carbon-cache in a temporary directory.
pub struct Carbon {
    child: Child,
    pub dir: TempDir,
    pub port: u16,
}

impl Carbon {
    pub fn start() -> Carbon {
        let dir = TempDir::new("carbon");
        let d = dir.0.display();
        let port = free_port();
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {d}/storage\nLOCAL_DATA_DIR = {d}/whisper\n\
             WHITELISTS_DIR = {d}/lists\nLOG_DIR = {d}/log\nPID_DIR = {d}/run\nCONF_DIR = {d}\n\
             USER =\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 100000\n\
             MAX_CREATES_PER_MINUTE = 100000\nENABLE_TAGS = False\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {port}\n\
             ENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {}\nCACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {}\n\
             LOG_LISTENER_CONN_SUCCESS = False\n",
            free_port(),
            free_port()
        );
        std::fs::write(dir.join("carbon.conf"), conf).expect("write carbon.conf");
        std::fs::write(
            dir.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:1h\n",
        )
        .expect("write storage-schemas.conf");
        let child = Command::new("/usr/bin/carbon-cache")
            .arg(format!("--config={d}/carbon.conf"))
            .args(["--nodaemon", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn carbon-cache (Debian graphite-carbon)");
        let carbon = Carbon { child, dir, port };
        wait_for("carbon-cache to listen", EVENTUALLY, || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        carbon
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The whisper file of a dotted metric path.
    pub fn wsp(&self, metric: &str) -> PathBuf {
        let mut path = self.dir.join("whisper");
        for part in metric.split('.') {
            path.push(part);
        }
        path.set_extension("wsp");
        path
    }

    /// The non-empty points of `metric` around `ts` (±30 s), read with
    /// `whisper-fetch`; empty while carbon has not written the file.
    pub fn points(&self, metric: &str, ts: i64) -> Vec<(i64, f64)> {
        let path = self.wsp(metric);
        if !path.exists() {
            return Vec::new();
        }
        let out = Command::new("/usr/bin/whisper-fetch")
            .arg(format!("--from={}", ts - 30))
            .arg(format!("--until={}", ts + 30))
            .arg(&path)
            .output()
            .expect("run whisper-fetch (Debian python3-whisper)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let (t, v) = line.split_once('\t')?;
                Some((t.trim().parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits until `metric` has the point (`ts`, `value`).
    pub fn expect_point(&self, metric: &str, ts: i64, value: f64) {
        wait_for(
            &format!("carbon to store {metric} = {value} at {ts}"),
            EVENTUALLY,
            || {
                self.points(metric, ts)
                    .into_iter()
                    .find(|(t, v)| *t == ts && (*v - value).abs() < 1e-9)
            },
        );
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines a child process prints on stdout, collected by a thread.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines lock").push(line);
        }
    });
    lines
}

/// A real SMTP server: Debian's aiosmtpd with its debugging handler, which
/// prints every message it accepts on stdout.
pub struct Aiosmtpd {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Aiosmtpd {
    pub fn start() -> Aiosmtpd {
        let port = free_port();
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 -m aiosmtpd (Debian python3-aiosmtpd)");
        let lines = collect_stdout(&mut child);
        wait_for("aiosmtpd to listen", EVENTUALLY, || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Aiosmtpd { child, port, lines }
    }

    /// The messages received so far, each as its text.
    pub fn messages(&self) -> Vec<String> {
        let lines = self.lines.lock().expect("lines lock");
        let mut messages = Vec::new();
        let mut current: Option<Vec<String>> = None;
        for line in lines.iter() {
            if line.contains("MESSAGE FOLLOWS") {
                current = Some(Vec::new());
            } else if line.contains("END MESSAGE") {
                messages.extend(current.take().map(|m| m.join("\n")));
            } else if let Some(m) = current.as_mut() {
                m.push(line.clone());
            }
        }
        messages
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
                if let Some(body) = answer(stream, status) {
                    kept.lock().expect("bodies lock").push(body);
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

/// Reads one request (headers, then Content-Length bytes) and answers it.
fn answer(stream: TcpStream, status: u16) -> Option<String> {
    use std::io::{Read, Write};
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
    let reply =
        format!("HTTP/1.1 {status} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    let mut stream = stream;
    stream.write_all(reply.as_bytes()).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}
