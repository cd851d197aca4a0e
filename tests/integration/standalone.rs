//! `vigil standalone` as a newcomer runs it: every part comes up, a
//! notification sent with `vigil send` reaches the default handler with
//! its ack, a plugin result shows in `vigil status`, and SIGTERM stops all
//! of it with status 0.

use crate::util::daemon;

use daemon::{wait_for, Daemon};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(60);

fn vigil(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    crate::util::daemon::output_within(cmd, std::time::Duration::from_secs(30))
}

/// The value of `key=` in the router's `ready:` line, as standalone passes
/// it through.
fn router_field(standalone: &Daemon, key: &str) -> String {
    let line = standalone
        .log_lines()
        .into_iter()
        .find(|l| l.starts_with("[router]") && l.contains("ready:"))
        .expect("the router's ready line");
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn standalone_runs_everything_and_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("vigil-standalone-{}", uuid::Uuid::new_v4()));
    let examples = root.join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    let plugin = examples.join("check_standalone.sh");
    std::fs::write(&plugin, "#!/bin/sh\necho 'OK - standalone works | ok=1'\n").unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = root.join("data");
    let local = format!("ipc://{}", root.join("agent.sock").display());

    let mut standalone = daemon::start_standalone(&data, &examples, &local, &[]);
    wait_for("standalone ready", STEP, || {
        standalone
            .log_lines()
            .iter()
            .any(|l| l.contains("standalone ready"))
            .then_some(())
    });
    let backend = router_field(&standalone, "backend");
    let db = data.join("vigil.db").display().to_string();
    // CURVE is on: the back end answers only keys on its list, such as the
    // one standalone made for `vigil status`.
    let keys = data.join("keys");
    let status_key = keys.join("status.key").display().to_string();
    let router = vigil::curve::KeyPair::read(&keys.join("router.key")).expect("router key");
    let router_z85 = router.public.to_z85();
    let status_env = [
        ("VIGIL_DB", db.as_str()),
        ("VIGIL_BACKENDS", backend.as_str()),
        ("VIGIL_CURVE_KEY", status_key.as_str()),
        ("VIGIL_ROUTER_KEY", router_z85.as_str()),
    ];

    // A notification through the whole chain, to the default handler.
    let sent = vigil(
        &[
            "send",
            "notification",
            "--severity",
            "warning",
            "--source",
            "test",
            "--message",
            "hello",
        ],
        &[("VIGIL_AGENT_LOCAL", &local)],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let id = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let log: PathBuf = data.join("notifications.log");
    wait_for("the notification in notifications.log", STEP, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains(&id))
            .map(drop)
    });

    // The example plugin, run now through the router, shows in status.
    let status = || -> Value {
        let out = vigil(&["status", "--json"], &status_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    };
    let uuid = wait_for("the agent in status", STEP, || {
        status()["clients"].as_array()?.first()?["uuid"]
            .as_str()
            .map(str::to_string)
    });
    let ctx = zmq::Context::new();
    let plaintext = ctx.socket(zmq::REQ).unwrap();
    plaintext.set_linger(0).unwrap();
    plaintext.set_rcvtimeo(1000).unwrap();
    plaintext.set_sndtimeo(1000).unwrap();
    plaintext.connect(&backend).unwrap();
    // A send that times out is refused too: libzmq drops a connection whose
    // handshake failed, and the REQ then has nowhere to send.
    if plaintext.send(&br#"{"op":"status"}"#[..], 0).is_ok() {
        assert!(
            plaintext.recv_bytes(0).is_err(),
            "a plaintext back end is not answered"
        );
    }
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_linger(0).unwrap();
    req.set_rcvtimeo(5000).unwrap();
    vigil::curve::ClientKeys {
        own: vigil::curve::KeyPair::read(&keys.join("status.key")).expect("status key"),
        router: router.public,
    }
    .apply(&req)
    .expect("CURVE client");
    req.connect(&backend).unwrap();
    let run =
        json!({"type":"run_plugin","to":uuid,"plugin":"standalone","run_id":"standalone-test"});
    wait_for("run_plugin delivered", STEP, || {
        req.send(run.to_string().as_bytes(), 0).ok()?;
        let reply: Value = serde_json::from_slice(&req.recv_bytes(0).ok()?).ok()?;
        if reply["ok"] != json!(true) {
            // A REQ must get its reply before the next send; it did.
            return None;
        }
        Some(())
    });
    let text = wait_for("the plugin's result in status", STEP, || {
        let out = vigil(&["status"], &status_env);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("standalone works").then_some(text)
    });
    assert!(text.contains("OK"), "{text}");

    // SIGTERM stops every part and exits 0.
    standalone.sigterm();
    let exit = standalone.wait_exit(STEP).expect("standalone stopped");
    assert!(exit.success(), "standalone exited {exit:?}");
    for part in ["router", "sinks", "scheduler", "agent"] {
        assert!(
            standalone
                .log_lines()
                .iter()
                .any(|l| l.contains(&format!("{part} stopped (exit status: 0)"))),
            "{part} did not stop cleanly"
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}
