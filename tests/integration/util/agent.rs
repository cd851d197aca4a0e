//! Harness for the `vigil agent` integration tests: a temporary directory,
//! the real `vigil agent` process (its `ready:` line parsed for the UUID,
//! the local endpoint and the statsd port), and `vigil send`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::daemon::Daemon;
use crate::util::START_WAIT;

pub use vigil::testkit::TempDir;

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub use crate::util::daemon::vigil_command as vigil;

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
        let daemon = Daemon::spawn("agent", self.command(&["agent"]));
        let field = |key: &str| daemon.ready_field(key).unwrap_or_default();
        let uuid = field("uuid");
        assert_eq!(uuid.len(), 36, "no uuid in ready line {:?}", daemon.ready);
        Agent {
            uuid,
            statsd: field("statsd"),
            daemon,
        }
    }
}

pub use crate::util::daemon::output_within;

/// A running `vigil agent` (a [`Daemon`]) and what its ready line said.
pub struct Agent {
    daemon: Daemon,
    pub uuid: String,
    /// `127.0.0.1:PORT` of the statsd socket.
    pub statsd: String,
}

impl Agent {
    pub fn log_lines(&self) -> Vec<String> {
        self.daemon.log_lines()
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) -> String {
        self.daemon.wait_log(text, limit)
    }

    /// `kill SIG`, e.g. `-TERM`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.daemon.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill9(mut self) {
        self.daemon.kill9();
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.daemon
            .wait_exit(limit)
            .unwrap_or_else(|| panic!("agent still running after {limit:?}"))
    }
}

/// The agent's local intake in `dir`.
pub fn local_endpoint(dir: &TempDir) -> String {
    format!("ipc://{}", dir.join("agent.sock").display())
}

/// The environment of an agent kept in `dir` (state, intake, machine id)
/// that reacts fast: heartbeats and stats every second, resends from
/// 300 ms, reconnects from 100 ms, no statsd. For the system tests that run
/// the agent as one of many processes.
pub fn quick_agent_env(
    dir: &TempDir,
    routers: String,
    plugin_dir: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("VIGIL_ROUTERS", routers),
        ("VIGIL_STATE_DIR", dir.join("agent").display().to_string()),
        ("VIGIL_AGENT_LOCAL", local_endpoint(dir)),
        ("VIGIL_PLUGIN_DIR", plugin_dir.display().to_string()),
        (
            "VIGIL_MACHINE_ID_FILE",
            dir.join("machine-id").display().to_string(),
        ),
        ("VIGIL_HEARTBEAT_SECS", "1".to_string()),
        ("VIGIL_STATSD_BIND", "off".to_string()),
        ("VIGIL_RESEND_MIN_MS", "300".to_string()),
        ("VIGIL_RESEND_MAX_MS", "2000".to_string()),
        ("VIGIL_RECONNECT_MS", "100".to_string()),
        ("VIGIL_RECONNECT_MAX_MS", "500".to_string()),
        ("VIGIL_ZMTP_HEARTBEAT_MS", "500".to_string()),
        ("VIGIL_STATS_INTERVAL_SECS", "1".to_string()),
    ]
}

/// `vigil send notification` (severity error) to the agent whose intake is
/// `local`: the id the agent gave it.
pub fn send_notification(local: &str, source: &str, message: &str) -> String {
    let mut cmd = vigil(&["send", "notification", "--severity", "error"]);
    cmd.args(["--source", source, "--message", message])
        .env("VIGIL_AGENT_LOCAL", local);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "vigil send refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "vigil send printed no id");
    id
}
