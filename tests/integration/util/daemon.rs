//! Any `vigil` daemon (router, agent, sink, scheduler) as a child process of
//! a test.
//!
//! Starts the real binary with a clean `VIGIL_*` environment plus what the
//! test sets, keeps its stderr (printed when the test fails), waits bounded
//! for its `ready:` line, and kills it when dropped, so no test leaks a
//! process. Signals are real: `sigterm` to test draining, `kill9` to test
//! what survives a crash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a daemon may take to print `ready:` or to exit.
pub const DAEMON_START_WAIT: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub name: String,
    child: Child,
    reader: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
    /// The `ready:` line, from `ready:` on.
    pub ready: String,
}

impl Daemon {
    /// Runs `vigil ARGS` with `env` and waits for its `ready:` line.
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> Daemon {
        let mut cmd = vigil_command(args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        Daemon::spawn(name, cmd)
    }

    /// Spawns `cmd` (a `vigil` daemon) and waits for its `ready:` line.
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the vigil binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let log = Arc::clone(&log);
            let name = name.to_string();
            thread::Builder::new()
                .name(format!("stderr-{name}"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if let Some(at) = line.find("ready:") {
                            let _ = ready_tx.send(line[at..].to_string());
                        }
                        log.lock().unwrap().push(line);
                    }
                })
                .expect("spawn stderr reader")
        };
        let mut daemon = Daemon {
            name: name.to_string(),
            child,
            reader: Some(reader),
            log,
            ready: String::new(),
        };
        match ready_rx.recv_timeout(DAEMON_START_WAIT) {
            Ok(line) => daemon.ready = line,
            Err(_) => {
                let status = daemon.wait_exit(Duration::from_secs(2));
                panic!(
                    "{name} gave no ready line (status {status:?}); its log:\n{}",
                    daemon.log_lines().join("\n")
                );
            }
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing `text` and returns it.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> String {
        wait_for(&format!("{} to log {text:?}", self.name), timeout, || {
            self.log_lines().into_iter().find(|l| l.contains(text))
        })
    }

    /// The value of `key=` in the ready line.
    pub fn ready_field(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&prefix).map(str::to_string))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL and reap: the crash case.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit; None if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("---- {} log ----", self.name);
            for line in self.log_lines() {
                eprintln!("{line}");
            }
        }
    }
}

/// `vigil ARGS` with the test's own `VIGIL_*` variables removed and
/// `VIGIL_LOG=info`, so the ready line is there to read.
pub fn vigil_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("VIGIL_LOG", "info");
    cmd
}

/// Runs `cmd` to its end and returns its output, killing it (and failing
/// the test) if it takes longer than `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn vigil");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for vigil"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("vigil did not exit within {limit:?}");
        }
    }
}

/// Polls `check` until it returns Some, or panics with `what` after
/// `timeout`. For conditions no event announces (a row in a database, a
/// line in a file).
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `vigil standalone` with its files in `data`, example plugins from
/// `examples` and the agent's intake at `local`, every port ephemeral (so
/// a test never collides with a real vigil on this machine) and Graphite
/// pointed at the discard port; `extra` adds to or overrides that.
pub fn start_standalone(
    data: &Path,
    examples: &Path,
    local: &str,
    extra: &[(&str, String)],
) -> Daemon {
    let mut env = vec![
        ("VIGIL_DATA_DIR", data.display().to_string()),
        ("VIGIL_EXAMPLE_PLUGINS", examples.display().to_string()),
        ("VIGIL_AGENT_LOCAL", local.to_string()),
        ("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:*".into()),
        ("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:*".into()),
        (
            "VIGIL_SINK_BINDS",
            "heartbeat=tcp://127.0.0.1:*,stats=tcp://127.0.0.1:*,registration=tcp://127.0.0.1:*,\
             notification=tcp://127.0.0.1:*,result=tcp://127.0.0.1:*"
                .into(),
        ),
        ("VIGIL_STATSD_BIND", "127.0.0.1:0".into()),
        ("VIGIL_GRAPHITE", "127.0.0.1:9".into()),
        ("VIGIL_WEB_BIND", "127.0.0.1:0".into()),
    ];
    env.extend(extra.iter().cloned());
    Daemon::start("standalone", &["standalone"], &env)
}
