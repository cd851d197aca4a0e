//! Harness for the `vigil agent` integration tests: a temporary directory,
//! the real `vigil agent` process (its `ready:` line parsed for the UUID,
//! the local endpoint and the statsd port), and `vigil send`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::{token, START_WAIT};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vigil-{what}-{}", &token()[..12]));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The command of `vigil`, with no VIGIL_* variable of the test leaking in.
pub fn vigil(args: &[&str]) -> Command {
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

/// Everything an agent needs to be restarted with the same state.
#[derive(Clone)]
pub struct AgentSetup {
    pub state_dir: PathBuf,
    pub local: String,
    pub env: Vec<(String, String)>,
}

impl AgentSetup {
    /// State, plugin dir and ipc socket under `dir`; routers as given.
    pub fn new(dir: &TempDir, routers: &str) -> AgentSetup {
        let machine_id = dir.join("machine-id");
        if !machine_id.exists() {
            std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n").expect("machine-id");
        }
        std::fs::create_dir_all(dir.join("plugins.d")).expect("plugins.d");
        let env = vec![
            ("VIGIL_ROUTERS", routers.to_string()),
            ("VIGIL_MACHINE_ID_FILE", machine_id.display().to_string()),
            ("VIGIL_HOSTNAME", "test-host".to_string()),
            (
                "VIGIL_PLUGIN_DIR",
                dir.join("plugins.d").display().to_string(),
            ),
            ("VIGIL_STATSD_BIND", "127.0.0.1:0".to_string()),
            ("VIGIL_HEARTBEAT_SECS", "1".to_string()),
            ("VIGIL_RESEND_MIN_MS", "300".to_string()),
            ("VIGIL_RESEND_MAX_MS", "1000".to_string()),
            ("VIGIL_RECONNECT_MS", "100".to_string()),
            ("VIGIL_RECONNECT_MAX_MS", "300".to_string()),
            ("VIGIL_ZMTP_HEARTBEAT_MS", "500".to_string()),
        ];
        AgentSetup {
            state_dir: dir.join("state"),
            local: format!("ipc://{}", dir.join("agent.sock").display()),
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> AgentSetup {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = vigil(args);
        cmd.env("VIGIL_STATE_DIR", &self.state_dir)
            .env("VIGIL_AGENT_LOCAL", &self.local);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `vigil agent ARGS` expected to exit on its own (bounded).
    pub fn run_to_exit(&self, args: &[&str]) -> Output {
        let mut full = vec!["agent"];
        full.extend_from_slice(args);
        output_within(self.command(&full), START_WAIT)
    }

    /// `vigil send ARGS` to this agent.
    pub fn send(&self, args: &[&str]) -> Output {
        let mut full = vec!["send"];
        full.extend_from_slice(args);
        output_within(self.command(&full), START_WAIT)
    }

    pub fn start(&self) -> Agent {
        let mut cmd = self.command(&["agent"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vigil agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    if line.contains("ready: ") {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(line.clone());
                        }
                    }
                    log.lock().expect("log").push(line);
                }
            })
        };
        let mut agent = Agent {
            child,
            reader: Some(reader),
            log,
            uuid: String::new(),
            statsd: String::new(),
        };
        match ready_rx.recv_timeout(START_WAIT) {
            Ok(line) => agent.parse_ready(&line),
            Err(_) => panic!("agent printed no `ready:` line within {START_WAIT:?}"),
        }
        agent
    }
}

/// Runs `cmd` to its end, killing it after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
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
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("vigil did not exit within {limit:?}");
        }
    }
}

pub struct Agent {
    child: Child,
    reader: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
    pub uuid: String,
    /// `127.0.0.1:PORT` of the statsd socket.
    pub statsd: String,
}

impl Agent {
    fn parse_ready(&mut self, line: &str) {
        for field in line.split_whitespace() {
            match field.split_once('=') {
                Some(("uuid", v)) => self.uuid = v.to_string(),
                Some(("statsd", v)) => self.statsd = v.to_string(),
                _ => {}
            }
        }
        assert_eq!(self.uuid.len(), 36, "no uuid in ready line {line:?}");
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(Instant::now() < deadline, "agent never logged {text:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running after {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if thread::panicking() {
            let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!(
                "----- stderr of agent {} -----\n{log}\n----- end -----",
                self.uuid
            );
        }
    }
}
