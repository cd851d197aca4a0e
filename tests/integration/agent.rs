//! Integration tests of `vigil agent` and `vigil send`: the real binary,
//! real `vigil router` processes on ephemeral loopback ports, real shell
//! plugins in temporary directories. Sinks are played by the test: a PULL
//! on the router's sink endpoint, and for acked messages a REQ to its back
//! end sending the `ack`, deduplicating by (uuid, id) as a real sink does.
//! Every wait is bounded.

use crate::util::agent as agent_util;
// The shared router harness serves several test binaries; this one uses part of it.
use crate::util;

use std::collections::{BTreeMap, HashSet};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use agent_util::{write_script, Agent, AgentSetup, TempDir};
use serde_json::{json, Value};
use util::{token, Forwarded, Router, Sink, WAIT};

/// Longer than the agent's maximum resend interval in these tests (1 s):
/// used only to check that nothing MORE arrives.
const QUIET: Duration = Duration::from_millis(2_500);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Receives forwarded messages of one sink until `pick` accepts one.
fn recv_matching(sink: &Sink, what: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = sink
            .try_recv(left)
            .unwrap_or_else(|| panic!("no {what} within {:?}", WAIT * 2));
        let v = got.json();
        if pick(&v) {
            return v;
        }
    }
}

// ---------------------------------------------------------------- identity

#[test]
fn identity_persists_is_replaced_on_a_clone_and_a_corrupt_file_stops_the_agent() {
    let dir = TempDir::new("agent-id");
    let setup = AgentSetup::new(&dir, "tcp://127.0.0.1:1");
    let first = setup.run_to_exit(&["--print-uuid"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let uuid = stdout(&first);
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    let again = setup.run_to_exit(&["--print-uuid"]);
    assert_eq!(stdout(&again), uuid, "the UUID is kept across runs");
    {
        let agent = setup.start();
        assert_eq!(agent.uuid, uuid, "the daemon uses the stored UUID");
    }

    // A clone: same state directory, another machine id.
    std::fs::write(dir.join("machine-id"), "ffffffffffffffffffffffffffffffff\n").unwrap();
    let clone = setup.run_to_exit(&["--print-uuid"]);
    let new_uuid = stdout(&clone);
    assert_eq!(new_uuid.len(), 36);
    assert_ne!(new_uuid, uuid, "a clone must mint its own UUID");
    assert!(
        stderr(&clone).contains("machine identity changed"),
        "no log line about the clone: {}",
        stderr(&clone)
    );
    assert_eq!(stdout(&setup.run_to_exit(&["--print-uuid"])), new_uuid);

    // A hostname change is a new machine too.
    let renamed = setup.clone().env("VIGIL_HOSTNAME", "other-host");
    assert_ne!(stdout(&renamed.run_to_exit(&["--print-uuid"])), new_uuid);

    // Corrupt: a clear error, exit 2, the file left as it was.
    let file = setup.state_dir.join("identity.json");
    std::fs::write(&file, b"{\"uuid\": \"trunc").unwrap();
    let out = setup.run_to_exit(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("identity.json"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"uuid\": \"trunc");
    let out = setup.run_to_exit(&["--print-uuid"]);
    assert_eq!(out.status.code(), Some(2));
}

// ------------------------------------------------------- heartbeats, hello

#[test]
fn heartbeats_and_host_registration_reach_their_sinks() {
    let router = Router::start("r1");
    let heartbeats = router.sink("heartbeat");
    let registrations = router.sink("registration");
    let dir = TempDir::new("agent-hb");
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    std::fs::write(
        dir.join("plugins.d/true.conf"),
        "name = always\ncommand = /bin/true\ninterval_s = 60\n",
    )
    .unwrap();
    let setup = AgentSetup::new(&dir, &router.client);
    let agent = setup.start();
    let reg = recv_matching(&registrations, "host registration", |v| {
        v["uuid"] == agent.uuid.as_str()
    });
    assert_eq!(reg["process"]["name"], "vigil-agent");
    assert_eq!(reg["hostname"], "test-host");
    assert_eq!(reg["plugins"][0]["name"], "always");
    assert_eq!(reg["plugins"][0]["interval_s"], 60.0);
    let mut seen = 0;
    let deadline = Instant::now() + WAIT * 2;
    while seen < 2 {
        let got = heartbeats
            .try_recv(deadline.saturating_duration_since(Instant::now()))
            .expect("heartbeats keep coming");
        let v = got.json();
        assert_eq!(v["uuid"], agent.uuid.as_str());
        assert_eq!(v["type"], "heartbeat");
        assert_eq!(v["interval_s"], 1);
        assert_eq!(v["hostname"], "test-host");
        got.check_meta("r1");
        seen += 1;
    }
    agent.wait_log("welcomed by router \"r1\"", WAIT);
}

#[test]
fn a_changed_plugin_set_is_registered_again() {
    let router = Router::start("r1");
    let registrations = router.sink("registration");
    let dir = TempDir::new("agent-rescan");
    let setup = AgentSetup::new(&dir, &router.client).env("VIGIL_PLUGIN_RESCAN_SECS", "1");
    let agent = setup.start();
    let first = recv_matching(&registrations, "first registration", |v| {
        v["uuid"] == agent.uuid.as_str()
    });
    assert_eq!(first["plugins"], json!([]));
    std::fs::write(
        dir.join("plugins.d/new.conf"),
        "name = newcomer\ncommand = /bin/true\n",
    )
    .unwrap();
    let second = recv_matching(&registrations, "registration after the change", |v| {
        v["uuid"] == agent.uuid.as_str()
    });
    assert_eq!(second["process"]["name"], "vigil-agent");
    assert_eq!(second["plugins"][0]["name"], "newcomer");
    // A bad file is logged and does not disturb the rest.
    std::fs::write(dir.join("plugins.d/bad.conf"), "name = bad\n").unwrap();
    agent.wait_log("bad.conf", WAIT);
    registrations.expect_silence(Duration::from_millis(1_500), "no change, no registration");
}

// ----------------------------------------------------------------- plugins

/// Asks the router's back end to deliver `request`, and its reply. The
/// agent's ready line can come before its connection to the router is up;
/// until then the router answers `unknown_client` (or `unreachable`), as
/// it would to any back end, which retries. Bounded by `WAIT`.
fn deliver(router: &Router, request: &Value) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = router.request(request.to_string().as_bytes());
        let early = reply["error"] == "unknown_client" || reply["error"] == "unreachable";
        if !early || Instant::now() >= deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `run_plugin` through the router's back end and returns the result.
fn run_plugin(router: &Router, results: &Sink, uuid: &str, plugin: &str) -> Value {
    let run_id = token();
    let request = json!({"to": uuid, "type": "run_plugin", "plugin": plugin, "run_id": run_id});
    let reply = deliver(router, &request);
    assert_eq!(reply, json!({"ok": true}), "run_plugin {plugin}");
    let v = recv_matching(results, &format!("result of {plugin}"), |v| {
        v["run_id"] == run_id.as_str()
    });
    assert_eq!(v["plugin"], plugin);
    assert_eq!(v["uuid"], uuid);
    v
}

fn declare(dir: &TempDir, name: &str, body: &str, timeout_s: f64) {
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    let script = dir.join(&format!("check_{name}"));
    write_script(&script, body);
    std::fs::write(
        dir.join(&format!("plugins.d/{name}.conf")),
        format!(
            "name = {name}\ncommand = {} --flag\ntimeout_s = {timeout_s}\n",
            script.display()
        ),
    )
    .unwrap();
}

#[test]
fn plugins_exit_codes_perfdata_and_refusal() {
    let router = Router::start("r1");
    let results = router.sink("result");
    let dir = TempDir::new("agent-plugins");
    declare(
        &dir,
        "ok",
        "echo 'LOAD OK - load 0.1 | load1=0.1;4;8;0 load5=0.2;;;0;'; exit 0",
        10.0,
    );
    declare(&dir, "warn", "echo 'WARN - x'; exit 1", 10.0);
    declare(&dir, "crit", "echo 'CRIT - y | t=5s'; exit 2", 10.0);
    declare(&dir, "unknown", "echo 'UNKNOWN - z'; exit 3", 10.0);
    declare(&dir, "weird", "echo 'odd exit'; exit 7", 10.0);
    declare(
        &dir,
        "multi",
        "printf '%s\\n' \"DISK OK - free | /=2643MB;5948;5958;0;5968\" '/ 15272 MB (77%);' \
         \"/boot 68 MB (69%); | '/boot dir'=68MB;88;93;0;98\" \"'it''s'=U c=12c\"; exit 0",
        10.0,
    );
    declare(&dir, "args", "echo \"got $1\"; exit 0", 10.0);
    let agent = AgentSetup::new(&dir, &router.client).start();

    let v = run_plugin(&router, &results, &agent.uuid, "ok");
    assert_eq!(v["status"], 0);
    assert_eq!(v["output"], "LOAD OK - load 0.1");
    assert_eq!(
        v["perfdata"],
        json!([
            {"label":"load1","value":0.1,"unit":null,"warn":"4","crit":"8","min":0.0,"max":null},
            {"label":"load5","value":0.2,"unit":null,"warn":null,"crit":null,"min":0.0,"max":null}
        ])
    );
    assert!(v["duration_ms"].is_u64());
    assert_eq!(v["hostname"], "test-host");
    assert_eq!(
        run_plugin(&router, &results, &agent.uuid, "warn")["status"],
        1
    );
    let crit = run_plugin(&router, &results, &agent.uuid, "crit");
    assert_eq!(crit["status"], 2);
    assert_eq!(crit["perfdata"][0]["unit"], "s");
    assert_eq!(
        run_plugin(&router, &results, &agent.uuid, "unknown")["status"],
        3
    );
    let weird = run_plugin(&router, &results, &agent.uuid, "weird");
    assert_eq!(weird["status"], 3, "exit 7 is UNKNOWN");
    assert!(
        weird["output"].as_str().unwrap().contains("exit status 7"),
        "{weird}"
    );
    assert_eq!(
        run_plugin(&router, &results, &agent.uuid, "args")["output"],
        "got --flag"
    );

    let multi = run_plugin(&router, &results, &agent.uuid, "multi");
    assert_eq!(multi["output"], "DISK OK - free");
    assert_eq!(
        multi["long_output"],
        "/ 15272 MB (77%);\n/boot 68 MB (69%);"
    );
    let labels: Vec<&str> = multi["perfdata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["/", "/boot dir", "it's", "c"]);
    assert_eq!(multi["perfdata"][1]["max"], 98.0);
    assert_eq!(multi["perfdata"][2]["value"], Value::Null);
    assert_eq!(multi["perfdata"][3]["unit"], "c");

    // Not declared: refused, never run, answered UNKNOWN with the run_id.
    let marker = dir.join("never");
    let name = format!("touch {}", marker.display());
    let refused = run_plugin(&router, &results, &agent.uuid, &name);
    assert_eq!(refused["status"], 3);
    assert!(
        refused["output"].as_str().unwrap().contains("not declared"),
        "{refused}"
    );
    agent.wait_log("refused run_plugin", WAIT);
    assert!(!marker.exists(), "an undeclared plugin name must never run");
}

#[test]
fn plugin_timeout_kills_the_whole_process_group() {
    let router = Router::start("r1");
    let results = router.sink("result");
    let dir = TempDir::new("agent-timeout");
    let marker = dir.join("late-write");
    let pidfile = dir.join("child.pid");
    // The child would write the marker after 2 s; the plugin itself hangs.
    declare(
        &dir,
        "hang",
        &format!(
            "(sleep 2; echo late > {m}) &\necho $! > {p}\nsleep 60\n",
            m = marker.display(),
            p = pidfile.display()
        ),
        0.5,
    );
    let agent = AgentSetup::new(&dir, &router.client).start();
    let v = run_plugin(&router, &results, &agent.uuid, "hang");
    assert_eq!(v["status"], 3);
    assert_eq!(v["timed_out"], true);
    assert!(v["output"].as_str().unwrap().contains("timed out"), "{v}");
    let pid = std::fs::read_to_string(&pidfile).expect("plugin wrote its child's pid");
    let proc_dir = format!("/proc/{}", pid.trim());
    let deadline = Instant::now() + WAIT;
    // The killed child is reaped by init; until then it may be a zombie.
    while std::path::Path::new(&proc_dir).exists()
        && !std::fs::read_to_string(format!("{proc_dir}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "the plugin's child {pid} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the moment the child would have written: nothing was written.
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(
        !marker.exists(),
        "the plugin's child ran on after the timeout"
    );
}

// ----------------------------------------------------------- acked delivery

/// The test's notification sink: PULL from the router(s), ack through the
/// back end, drop duplicates by (uuid, id) as the real sink does.
struct AckingSink {
    pull: Sink,
    handled: HashSet<(String, String)>,
    copies: BTreeMap<String, usize>,
}

impl AckingSink {
    fn new(router: &Router) -> AckingSink {
        AckingSink {
            pull: router.sink("notification"),
            handled: HashSet::new(),
            copies: BTreeMap::new(),
        }
    }

    /// Receives the next notification; runs the "handler" once per (uuid,
    /// id); acks it unless `ack` is false. Returns it.
    fn receive(&mut self, router: &Router, ack: bool) -> Value {
        let got: Forwarded = self.pull.recv("notification");
        let v = got.json();
        let uuid = v["uuid"].as_str().unwrap().to_string();
        let id = v["id"].as_str().unwrap().to_string();
        *self.copies.entry(id.clone()).or_default() += 1;
        self.handled.insert((uuid.clone(), id.clone()));
        if ack {
            let reply = router.request(
                json!({"to": uuid, "type": "ack", "id": id})
                    .to_string()
                    .as_bytes(),
            );
            assert_eq!(reply, json!({"ok": true}), "ack delivery");
        }
        v
    }

    /// Once everything is acked, the agent stops sending. A resend that
    /// was already on its way when its ack went out may still arrive (the
    /// tests resend after 300 ms): at most one such copy per message is
    /// accepted, and then a quiet period must follow.
    fn expect_no_more(&self) {
        let mut late: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(got) = self.pull.try_recv(QUIET) {
            let v = got.json();
            let id = v["id"].as_str().unwrap_or_default().to_string();
            assert!(
                self.copies.contains_key(&id),
                "a notification never sent before arrived after the acks: {v}"
            );
            let n = late.entry(id).or_default();
            *n += 1;
            assert!(*n <= 1, "copies kept coming after the ack: {v}");
        }
    }
}

fn send_notification(setup: &AgentSetup, message: &str) -> String {
    let out = setup.send(&[
        "notification",
        "--severity",
        "error",
        "--source",
        "test",
        "--message",
        message,
    ]);
    assert!(out.status.success(), "vigil send failed: {}", stderr(&out));
    let id = stdout(&out);
    assert!(!id.is_empty());
    id
}

use vigil::testkit::free_port;

fn router_on(port: u16) -> Router {
    Router::builder("r1")
        .env("VIGIL_CLIENT_BIND", &format!("tcp://127.0.0.1:{port}"))
        .start()
}

#[test]
fn acked_notification_survives_a_router_outage_exactly_once() {
    let port = free_port();
    let router = router_on(port);
    let dir = TempDir::new("agent-outage");
    let setup = AgentSetup::new(&dir, &router.client);
    let agent = setup.start();
    agent.wait_log("welcomed by router", WAIT);
    drop(router); // SIGKILL: the router is gone.
    let id = send_notification(&setup, "while the router is down");
    let router = router_on(port);
    let mut sink = AckingSink::new(&router);
    let v = sink.receive(&router, true);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["uuid"], agent.uuid.as_str());
    assert_eq!(v["message"], "while the router is down");
    assert_eq!(v["ack"], true);
    sink.expect_no_more();
    assert_eq!(sink.handled.len(), 1);
}

#[test]
fn acked_notification_survives_kill_9_of_the_agent() {
    let port = free_port();
    let dir = TempDir::new("agent-kill9");
    // No router yet: the message can only be in the spool.
    let setup = AgentSetup::new(&dir, &format!("tcp://127.0.0.1:{port}"));
    let agent = setup.start();
    let id = send_notification(&setup, "kept across kill -9");
    agent.kill9();
    let router = router_on(port);
    let mut sink = AckingSink::new(&router);
    let agent = setup.start();
    agent.wait_log("waiting for their ack", WAIT);
    let v = sink.receive(&router, true);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["message"], "kept across kill -9");
    sink.expect_no_more();
    assert_eq!(sink.copies[&id], 1);
}

#[test]
fn acked_notification_is_resent_when_the_first_ack_is_lost() {
    let router = Router::start("r1");
    let mut sink = AckingSink::new(&router);
    let dir = TempDir::new("agent-lostack");
    let setup = AgentSetup::new(&dir, &router.client);
    let _agent = setup.start();
    let id = send_notification(&setup, "ack me twice");
    let first = sink.receive(&router, false); // the ack is "lost"
    assert_eq!(first["id"], id.as_str());
    let second = sink.receive(&router, true);
    assert_eq!(second, first, "the resent copy is the same message");
    sink.expect_no_more();
    assert_eq!(sink.copies[&id], 2);
    assert_eq!(sink.handled.len(), 1, "the handler ran once");
}

#[test]
fn full_spool_refuses_new_acked_messages_and_keeps_the_accepted_ones() {
    let port = free_port();
    let dir = TempDir::new("agent-full");
    let setup = AgentSetup::new(&dir, &format!("tcp://127.0.0.1:{port}"))
        .env("VIGIL_SPOOL_MAX_BYTES", "2048");
    let _agent = setup.start();
    let text = "x".repeat(300);
    let mut accepted = Vec::new();
    let refusal = loop {
        let out = setup.send(&["notification", "--severity", "warning", "--message", &text]);
        if !out.status.success() {
            break out;
        }
        accepted.push(stdout(&out));
        assert!(
            accepted.len() < 20,
            "2048 bytes cannot hold 20 messages of 300"
        );
    };
    assert_eq!(refusal.status.code(), Some(1));
    assert!(
        stderr(&refusal).contains("spool_full"),
        "{}",
        stderr(&refusal)
    );
    assert!(
        stderr(&refusal).contains("VIGIL_SPOOL_MAX_BYTES"),
        "{}",
        stderr(&refusal)
    );
    assert!(accepted.len() >= 2);
    // Unacked traffic is still accepted, and waits in memory.
    let out = setup.send(&["stats", r#"{"metrics":{"a":1}}"#, "--id", "queued-stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Everything accepted is delivered once a router is there.
    let router = router_on(port);
    let stats = router.sink("stats");
    let mut sink = AckingSink::new(&router);
    let mut got = HashSet::new();
    while got.len() < accepted.len() {
        let v = sink.receive(&router, true);
        got.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, accepted.iter().cloned().collect());
    recv_matching(&stats, "stats queued while no router was reachable", |v| {
        v["id"] == "queued-stats"
    });
    // With the spool drained, new acked messages are accepted again.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = setup.send(&["notification", "--severity", "info", "--message", "again"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spool never drained: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------ local intake

#[test]
fn vigil_send_exit_codes_and_local_messages() {
    let router = Router::start("r1");
    let stats = router.sink("stats");
    let registrations = router.sink("registration");
    let results = router.sink("result");
    let dir = TempDir::new("agent-send");
    declare(&dir, "appcheck", "echo 'APP OK'; exit 0", 10.0);
    let setup = AgentSetup::new(&dir, &router.client);
    let agent = setup.start();

    let out = setup.send(&["stats", r#"{"metrics":{"app.jobs":3}}"#, "--id", "s1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "s1");
    let v = recv_matching(&stats, "local stats", |v| v["id"] == "s1");
    assert_eq!(v["uuid"], agent.uuid.as_str());
    assert_eq!(v["metrics"]["app.jobs"], 3);
    assert!(v["ts"].as_f64().unwrap() > 1e9);

    for (args, code) in [
        (vec!["hello"], "unknown_type"),
        (
            vec!["notification", "--severity", "bad", "--message", "m"],
            "bad_field",
        ),
        (vec!["stats", r#"{"metrics":{}}"#], "bad_field"),
    ] {
        let out = setup.send(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(&format!("refused: {code}")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = setup.send(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = setup.send(&["stats", "not-json"]);
    assert_eq!(out.status.code(), Some(2));

    // A local process's registration is forwarded and declares its
    // plugins by name: the directory's entry (written before the start).
    let reg = json!({"process": {"name": "app", "pid": 42},
        "plugins": [{"name": "appcheck", "timeout_s": 5}]});
    let out = setup.send(&["registration", &reg.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = recv_matching(&registrations, "app registration", |v| {
        v["process"]["name"] == "app"
    });
    assert_eq!(v["uuid"], agent.uuid.as_str());
    assert_eq!(v["plugins"][0]["name"], "appcheck");
    assert!(v["plugins"][0].get("command").is_none(), "{v}");
    let r = run_plugin(&router, &results, &agent.uuid, "appcheck");
    assert_eq!(
        (r["status"].as_i64(), r["output"].as_str()),
        (Some(0), Some("APP OK"))
    );

    // No agent listening: exit 1 with the reason.
    let nobody = AgentSetup::new(&dir, &router.client).env("VIGIL_SEND_TIMEOUT_MS", "300");
    let nobody = AgentSetup {
        local: format!("ipc://{}", dir.join("nobody.sock").display()),
        ..nobody
    };
    let out = nobody.send(&["stats", r#"{"metrics":{"a":1}}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no answer"), "{}", stderr(&out));
}

#[test]
fn statsd_lines_reach_the_stats_sink() {
    let router = Router::start("r1");
    let stats = router.sink("stats");
    let dir = TempDir::new("agent-statsd");
    let setup = AgentSetup::new(&dir, &router.client).env("VIGIL_STATSD_FLUSH_SECS", "1");
    let agent = setup.start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"app.hits:2|c\napp.hits:1|c|@0.5\napp.temp:20|g\napp.req:10|ms\napp.req:30|ms\nbad line\n",
        &agent.statsd,
    )
    .unwrap();
    // Samples may straddle a flush: add up what arrives until it is all there.
    let mut hits = 0.0;
    let mut temp = None;
    let mut req_count = 0.0;
    let deadline = Instant::now() + WAIT * 2;
    while hits < 4.0 || temp.is_none() || req_count < 2.0 {
        let got = stats
            .try_recv(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| {
                panic!("statsd metrics incomplete: hits={hits} temp={temp:?} req={req_count}")
            });
        let v = got.json();
        assert_eq!(v["uuid"], agent.uuid.as_str());
        assert_eq!(v["source"], "statsd");
        let m = &v["metrics"];
        hits += m["app.hits"].as_f64().unwrap_or(0.0);
        temp = temp.or(m["app.temp"].as_f64());
        req_count += m["app.req.count"].as_f64().unwrap_or(0.0);
        if let Some(max) = m["app.req.max"].as_f64() {
            assert!(max == 30.0 || max == 10.0);
        }
    }
    assert_eq!(hits, 4.0);
    assert_eq!(temp, Some(20.0));
}

// -------------------------------------------------------------- operations

#[test]
fn bad_configuration_exits_2_naming_the_variable_and_sigterm_exits_0() {
    let dir = TempDir::new("agent-ops");
    let setup = AgentSetup::new(&dir, "tcp://127.0.0.1:1");
    for (var, value) in [
        ("VIGIL_AGENT_LOCAL", "tcp://0.0.0.0:7000"),
        ("VIGIL_HEARTBEAT_SECS", "0"),
        ("VIGIL_ROUTERS", "nowhere"),
        ("VIGIL_SPOOL_MAX_BYTES", "big"),
    ] {
        let out = setup.clone().env(var, value).run_to_exit(&[]);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
    let mut agent: Agent = setup.start();
    agent.signal("-TERM");
    assert_eq!(agent.wait_exit(WAIT).code(), Some(0));
    assert!(agent
        .log_lines()
        .iter()
        .any(|l| l.contains("agent stopped")));
}

#[test]
fn one_dealer_reaches_every_router_and_survives_losing_one() {
    let r1 = Router::start("r1");
    let r2 = Router::start("r2");
    let hb1 = r1.sink("heartbeat");
    let hb2 = r2.sink("heartbeat");
    let dir = TempDir::new("agent-two");
    let setup = AgentSetup::new(&dir, &format!("{},{}", r1.client, r2.client));
    let agent = setup.start();
    // Heartbeats are spread over both routers by the one DEALER.
    for (sink, name) in [(&hb1, "r1"), (&hb2, "r2")] {
        let got = sink.recv(&format!("heartbeat through {name}"));
        assert_eq!(got.json()["uuid"], agent.uuid.as_str());
        got.check_meta(name);
    }
    drop(r1);
    let mut sink = AckingSink::new(&r2);
    let mut sent = HashSet::new();
    for n in 0..4 {
        sent.insert(send_notification(&setup, &format!("after r1 died {n}")));
    }
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        let v = sink.receive(&r2, true);
        got.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, sent);
    sink.expect_no_more();
}

#[test]
fn overloaded_router_replies_leave_acked_messages_to_be_resent() {
    // Room for one notification while no notification sink is connected:
    // the others are answered `overloaded`.
    let router = Router::builder("r1")
        .env("VIGIL_QUEUE_CAPACITY", "1")
        .start();
    let dir = TempDir::new("agent-overload");
    let setup = AgentSetup::new(&dir, &router.client);
    let agent = setup.start();
    let sent: HashSet<String> = (0..3)
        .map(|n| send_notification(&setup, &format!("overload {n}")))
        .collect();
    agent.wait_log("overloaded", WAIT);
    let mut sink = AckingSink::new(&router);
    let mut got = HashSet::new();
    while got.len() < sent.len() {
        let v = sink.receive(&router, true);
        got.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, sent);
    sink.expect_no_more();
}

#[test]
fn local_plugins_run_on_their_interval_without_a_scheduler() {
    let router = Router::start("r1");
    let results = router.sink("result");
    let dir = TempDir::new("agent-local");
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    let script = dir.join("check_tick");
    write_script(&script, "echo 'TICK OK | n=1'; exit 0");
    std::fs::write(
        dir.join("plugins.d/tick.conf"),
        format!(
            "name = tick\ncommand = {}\ninterval_s = 1\nlocal = true\n",
            script.display()
        ),
    )
    .unwrap();
    let agent = AgentSetup::new(&dir, &router.client).start();
    for _ in 0..2 {
        let v = recv_matching(&results, "local run of tick", |v| v["plugin"] == "tick");
        assert_eq!(v["uuid"], agent.uuid.as_str());
        assert_eq!(v["status"], 0);
        assert!(v.get("run_id").is_none(), "a local run has no run_id: {v}");
    }
}

#[test]
fn hostile_local_input_is_refused_and_harms_nothing() {
    let router = Router::start("r1");
    let stats = router.sink("stats");
    let dir = TempDir::new("agent-hostile");
    let setup = AgentSetup::new(&dir, &router.client);
    let _agent = setup.start();
    let ctx = zmq::Context::new();
    let req = util::socket(&ctx, zmq::REQ);
    req.connect(&setup.local).unwrap();
    let ask = |body: &[u8]| -> Value {
        req.send(body, 0).unwrap();
        serde_json::from_slice(&req.recv_bytes(0).expect("a reply")).unwrap()
    };
    for (body, code) in [
        (&b"\xff\xfe{"[..], "bad_json"),
        (b"", "bad_json"),
        (b"null", "bad_json"),
        (
            br#"{"type":"stats","metrics":{"a":1},"ts":"now"}"#,
            "bad_field",
        ),
        (br#"{"type":["stats"]}"#, "unknown_type"),
    ] {
        let reply = ask(body);
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"], code, "{reply}");
        assert!(!reply["detail"].as_str().unwrap().is_empty());
    }
    let big = format!(
        r#"{{"type":"stats","metrics":{{"a":1}},"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(ask(big.as_bytes())["error"], "too_large");
    // A DEALER that sends multipart junk without a delimiter, then vanishes.
    let dealer = util::socket(&ctx, zmq::DEALER);
    dealer.connect(&setup.local).unwrap();
    dealer.send_multipart([&b"a"[..], b"b", b"c"], 0).unwrap();
    drop(dealer);
    // Still serving, and nothing refused was forwarded.
    let out = setup.send(&["stats", r#"{"metrics":{"ok":1}}"#, "--id", "after-junk"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stats.recv("the first forwarded stats").json();
    assert_eq!(v["id"], "after-junk");
}

// ------------------------------------------------------------ own metrics

#[test]
fn agent_reports_its_own_counters_as_stats() {
    let router = Router::start("r1");
    let stats = router.sink("stats");
    let dir = TempDir::new("agent-own-stats");
    let setup = AgentSetup::new(&dir, &router.client).env("VIGIL_STATS_INTERVAL_SECS", "1");
    let agent = setup.start();
    let v = recv_matching(&stats, "the agent's own stats", |v| {
        v["source"] == "vigil-agent"
    });
    assert_eq!(v["uuid"], agent.uuid.as_str());
    let metrics = v["metrics"].as_object().expect("metrics object");
    for name in [
        "vigil.agent.sent",
        "vigil.agent.spool_live",
        "vigil.agent.plugin_runs",
    ] {
        assert!(metrics[name].is_u64(), "{name} missing in {v}");
    }
    assert!(
        metrics["vigil.agent.sent"].as_u64().unwrap() >= 1,
        "hello and heartbeat were sent: {v}"
    );
}

#[test]
fn an_id_reused_for_a_different_message_is_refused_and_a_retry_is_not() {
    // No router: the first message stays in the spool, waiting for its ack.
    let port = free_port();
    let dir = TempDir::new("agent-dup-id");
    let setup = AgentSetup::new(&dir, &format!("tcp://127.0.0.1:{port}"));
    let _agent = setup.start();
    let send = |message: &str| {
        setup.send(&[
            "notification",
            "--severity",
            "error",
            "--message",
            message,
            "--id",
            "job-42",
        ])
    };
    let first = send("backup failed");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let retry = send("backup failed");
    assert_eq!(
        retry.status.code(),
        Some(0),
        "a retry of the same message is fine: {}",
        stderr(&retry)
    );
    let other = send("disk full");
    assert_eq!(
        other.status.code(),
        Some(1),
        "a different message must not be swallowed"
    );
    assert!(
        stderr(&other).contains("duplicate_id"),
        "{}",
        stderr(&other)
    );
}

// ---------------------------------------------------------------- security

#[test]
fn print_key_gives_the_enrollment_line_and_an_exposed_key_stops_the_agent() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("agent-key");
    let setup = AgentSetup::new(&dir, "tcp://127.0.0.1:1");
    let out = setup.run_to_exit(&["--print-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let (uuid, key) = line.split_once(' ').expect("UUID KEY");
    assert_eq!(uuid, stdout(&setup.run_to_exit(&["--print-uuid"])));
    let key_file = setup.state_dir.join("curve.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is the agent's alone");
    let public = std::fs::read_to_string(setup.state_dir.join("curve.key.pub")).unwrap();
    assert_eq!(key, public.trim());
    assert_eq!(stdout(&setup.run_to_exit(&["--print-key"])), line, "kept");
    // Derived mode: the UUID is the one the routers derive from the key.
    let derived = setup.clone().env("VIGIL_CLIENT_AUTH", "derived");
    let out = derived.run_to_exit(&["--print-key"]);
    let public = vigil::curve::PublicKey::from_z85(key).unwrap();
    let expected = vigil::curve::derived_uuid(&public).hyphenated().to_string();
    assert_eq!(stdout(&out), format!("{expected} {key}"));
    assert_ne!(expected, uuid);

    // A clone (another machine id) gets a new key as well as a new UUID.
    std::fs::write(dir.join("machine-id"), "ffffffffffffffffffffffffffffffff\n").unwrap();
    let clone = stdout(&setup.run_to_exit(&["--print-key"]));
    let (clone_uuid, clone_key) = clone.split_once(' ').unwrap();
    assert_ne!((clone_uuid, clone_key), (uuid, key));
    assert_ne!(clone_key, key, "a clone must not share its parent's key");

    // A secret key others can read is refused at start, exit 2.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = setup.clone().env("VIGIL_ROUTER_KEY", key).run_to_exit(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("curve.key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let out = setup.run_to_exit(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "also without CURVE on: {}",
        stderr(&out)
    );
    // A router key that is not one: exit 2 naming the variable.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = setup
        .clone()
        .env("VIGIL_ROUTER_KEY", "not-a-key")
        .run_to_exit(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("VIGIL_ROUTER_KEY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_intake_socket_is_private_and_tcp_needs_consent() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("agent-intake-perms");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let private = AgentSetup {
        local: format!("ipc://{}", dir.join("run/vigil/agent.sock").display()),
        ..AgentSetup::new(&dir, "tcp://127.0.0.1:1")
    };
    {
        let _agent = private.start();
        assert_eq!(mode(&dir.join("run/vigil")), 0o750, "the directory it made");
        assert_eq!(mode(&dir.join("run/vigil/agent.sock")), 0o660, "the socket");
    }
    // A directory others may write: anyone could swap the socket. Refused.
    std::fs::set_permissions(
        dir.join("run/vigil"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = private.run_to_exit(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("VIGIL_AGENT_LOCAL"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    // TCP on loopback: every local user can reach it. Only when allowed.
    let tcp = AgentSetup {
        local: format!("tcp://127.0.0.1:{}", free_port()),
        ..AgentSetup::new(&dir, "tcp://127.0.0.1:1")
    };
    let out = tcp.run_to_exit(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("VIGIL_AGENT_INTAKE_TCP"),
        "{}",
        stderr(&out)
    );
    let _agent = tcp.env("VIGIL_AGENT_INTAKE_TCP", "1").start();
}

#[test]
fn an_intake_registration_carrying_a_command_is_refused() {
    let router = Router::start("r1");
    let registrations = router.sink("registration");
    let results = router.sink("result");
    let dir = TempDir::new("agent-local-command");
    let setup = AgentSetup::new(&dir, &router.client);
    let agent = setup.start();
    recv_matching(&registrations, "the host registration", |v| {
        v["process"]["name"] == "vigil-agent"
    });
    let marker = dir.join("owned");
    let evil = json!({"process": {"name": "evil"},
        "plugins": [{"name": "evil", "command": format!("id > {}", marker.display()),
                     "interval_s": 1, "local": true}]});
    let out = setup.send(&["registration", &evil.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused: bad_field"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("VIGIL_AGENT_LOCAL_COMMANDS"),
        "{}",
        stderr(&out)
    );
    // Neither run on request nor forwarded.
    let refused = run_plugin(&router, &results, &agent.uuid, "evil");
    assert_eq!(refused["status"], 3, "{refused}");
    registrations.expect_silence(Duration::from_millis(500), "the host registration only");
    assert!(!marker.exists(), "a command from the intake ran");
    drop(agent);

    // With the operator's consent, as before.
    let allowed = setup.env("VIGIL_AGENT_LOCAL_COMMANDS", "1");
    let agent = allowed.start();
    let script = dir.join("mine");
    write_script(&script, "echo 'MINE OK'; exit 0");
    let reg = json!({"process": {"name": "app"},
        "plugins": [{"name": "mine", "command": script.display().to_string()}]});
    let out = allowed.send(&["registration", &reg.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_plugin(&router, &results, &agent.uuid, "mine")["output"],
        "MINE OK"
    );
}

#[test]
fn a_thousand_run_plugins_for_one_plugin_cause_one_run_at_a_time() {
    let router = Router::start("r1");
    let results = router.sink("result");
    let dir = TempDir::new("agent-coalesce");
    let runs = dir.join("runs");
    let overlaps = dir.join("overlaps");
    let lock = dir.join("lock");
    let go = dir.join("go");
    // mkdir is atomic: a second concurrent run finds the lock taken. The
    // run holds on until every request is in (bounded), so the outcome
    // does not depend on how fast requests arrive.
    declare(
        &dir,
        "slow",
        &format!(
            "echo run >> {runs}\nif ! mkdir {lock} 2>/dev/null; then echo overlap >> {o}; fi\n\
             n=0; while [ ! -e {go} ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done\n\
             rmdir {lock} 2>/dev/null\necho 'SLOW OK'",
            runs = runs.display(),
            lock = lock.display(),
            go = go.display(),
            o = overlaps.display()
        ),
        180.0,
    );
    let agent = AgentSetup::new(&dir, &router.client)
        .env("VIGIL_PLUGIN_CONCURRENCY", "8")
        .start();
    const N: usize = 1_000;
    let mut asked = HashSet::new();
    for n in 0..N {
        let run_id = format!("flood-{n}");
        let request =
            json!({"to": agent.uuid, "type": "run_plugin", "plugin": "slow", "run_id": run_id});
        let reply = deliver(&router, &request);
        assert_eq!(reply, json!({"ok": true}), "run_plugin {n}");
        asked.insert(run_id);
    }
    std::fs::write(&go, "").unwrap();
    // Every request is answered with its own run_id, and exactly once.
    let mut answered = HashSet::new();
    while answered.len() < N {
        let v = recv_matching(&results, "a result of the flood", |v| v["plugin"] == "slow");
        assert_eq!(v["output"], "SLOW OK", "{v}");
        let run_id = v["run_id"].as_str().expect("a run_id").to_string();
        assert!(asked.contains(&run_id), "{v}");
        assert!(answered.insert(run_id), "answered twice: {v}");
    }
    let ran = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(ran, 1, "every request came while the first run went on");
    assert!(!overlaps.exists(), "two runs of one plugin overlapped");
    results.expect_silence(QUIET, "no result beyond one per request");
    // Later requests get a run of their own again, still one at a time.
    let again = run_plugin(&router, &results, &agent.uuid, "slow");
    assert_eq!(again["output"], "SLOW OK");
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);
    assert!(!overlaps.exists());
}
