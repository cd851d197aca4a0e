//! `vigil sink` from the outside: real `vigil router` processes, a DEALER
//! standing for the agent, the sink binary, its store (SQLite, or
//! PostgreSQL in the second pass) read through vigil's own interface, a real carbon-cache read back with whisper-fetch, and a
//! notification command handler that appends to a file.
//!
//! Every wait is a poll of the store, a file or carbon with a deadline;
//! silence is only asserted once the store shows the message was handled.

use crate::util;
use crate::util::db;

use crate::util::sinks as sinks_util;

use db::TestDb;
use serde_json::{json, Value};
use sinks_util::{
    at_least, wait_for, Aiosmtpd, Carbon, SinkBuilder, TempDir, WebhookServer, EVENTUALLY,
};
use std::path::Path;
use std::time::Duration;
use util::{now_secs, Client, Router};
use vigil::params;
use vigil::store::FromValue;

/// One value of a query, `None` when there is no row (or no table yet,
/// or the cell is NULL).
fn query<T: FromValue>(store: &TestDb, sql: &str) -> Option<T> {
    store.value::<Option<T>>(sql, params![]).flatten()
}

fn count(store: &TestDb, sql: &str) -> i64 {
    query(store, sql).unwrap_or(0)
}

/// Waits for the ack of message `id`.
fn expect_ack(client: &Client, id: &str) {
    let ack = client.recv_json(&format!("ack of {id}"));
    assert_eq!(ack, json!({"type": "ack", "to": client.uuid, "id": id}));
}

/// The lines a notification command handler appended to `path`.
fn handled_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("handler got non-JSON {l:?}: {e}"))
        })
        .collect()
}

/// A command handler appending each notification's JSON as one line to
/// `out`, failing while `flag` exists.
fn handler_command(out: &Path, flag: &Path) -> String {
    format!(
        "if [ -e '{}' ]; then echo 'handler told to fail' >&2; exit 3; fi; \
         (cat; echo) >> '{}'",
        flag.display(),
        out.display()
    )
}

fn registration(client: &Client, id: &str, process: &str, plugins: Value) -> Vec<u8> {
    client.frame(
        "registration",
        json!({"id": id, "ack": true, "hostname": "web1",
               "process": {"name": process, "pid": 42, "version": "0.1.0"},
               "plugins": plugins}),
    )
}

/// Sends a registration and waits for its ack.
fn register(client: &Client, id: &str, process: &str, plugins: Value) {
    client.send(&registration(client, id, process, plugins));
    expect_ack(client, id);
}

fn plugin(name: &str) -> Value {
    json!({"name": name, "command": format!("/usr/lib/nagios/plugins/check_{name}"),
           "interval_s": 60, "timeout_s": 10})
}

#[test]
fn registration_is_stored_acked_and_replaced_on_reregistration() {
    let dir = TempDir::new("sink-reg");
    let store = TestDb::in_dir(&dir.0);
    let router = Router::start("r1");
    let sink = SinkBuilder::new(&["registration"], &[&router], &store.value).start();
    let agent = router.agent();
    let bad_entry = json!({"name": "broken", "command": "", "interval_s": 60, "timeout_s": 10});
    register(
        &agent,
        "reg-1",
        "vigil-agent",
        json!([plugin("load"), plugin("disk"), bad_entry]),
    );
    let uuid = &agent.uuid;
    let plugins = |process: &str| {
        count(
            &store,
            &format!("SELECT COUNT(*) FROM plugins WHERE uuid='{uuid}' AND process='{process}'"),
        )
    };
    assert_eq!(plugins("vigil-agent"), 2, "the bad entry is refused alone");
    let rows = store.rows(
        "SELECT hostname, last_router, peer FROM clients WHERE uuid = ?1",
        params![uuid],
    );
    let row = rows.first().expect("client row");
    let client: (String, String, String) = (
        row.get(0).expect("hostname"),
        row.get(1).expect("last_router"),
        row.get(2).expect("peer"),
    );
    assert_eq!(client, ("web1".into(), "r1".into(), "127.0.0.1".into()));
    let pid: i64 = query(&store, "SELECT pid FROM processes WHERE name='vigil-agent'").unwrap();
    assert_eq!(pid, 42);

    // Another process of the same client, then the agent re-registers
    // with a smaller set: only its own set is replaced.
    register(&agent, "reg-2", "app", json!([plugin("queue")]));
    register(&agent, "reg-3", "vigil-agent", json!([plugin("load")]));
    assert_eq!(plugins("vigil-agent"), 1);
    assert_eq!(plugins("app"), 1);
    let name: String = query(
        &store,
        "SELECT name FROM plugins WHERE process='vigil-agent'",
    )
    .unwrap();
    assert_eq!(name, "load");

    // A registration that can never be handled is acked (so the agent
    // stops resending it) and changes nothing.
    let hopeless = agent.frame(
        "registration",
        json!({"id": "reg-4", "ack": true, "process": 7}),
    );
    agent.send(&hopeless);
    expect_ack(&agent, "reg-4");
    assert_eq!(plugins("vigil-agent"), 1);

    sink.stop_saying("registration: received=4 handled=3 malformed=1 rejected_items=1");
}

#[test]
fn stats_reach_a_real_carbon() {
    let dir = TempDir::new("sink-stats");
    let store = TestDb::in_dir(&dir.0);
    let carbon = Carbon::start();
    let router = Router::start("r1");
    let sink = SinkBuilder::new(&["stats"], &[&router], &store.value)
        .env("VIGIL_GRAPHITE", &carbon.address())
        .start();
    let agent = router.agent();
    let ts = now_secs() as i64;
    agent.send(&agent.frame(
        "stats",
        json!({"hostname": "web1.example.org", "ts": ts,
               "metrics": {"load.1m": 1.5, "mem.used": 2048, "up": "yes"}}),
    ));
    carbon.expect_point("vigil.web1_example_org.load.1m", ts, 1.5);
    carbon.expect_point("vigil.web1_example_org.mem.used", ts, 2048.0);
    // A later message without hostname is filed under the known one.
    agent.send(&agent.frame("stats", json!({"ts": ts + 1, "metrics": {"load.1m": 2.5}})));
    carbon.expect_point("vigil.web1_example_org.load.1m", ts + 1, 2.5);
    sink.stop_saying("stats: received=2 handled=2 rejected_items=1");
}

#[test]
fn results_store_status_raise_changes_and_send_perfdata() {
    let dir = TempDir::new("sink-result");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let carbon = Carbon::start();
    let router = Router::start("r1");
    let sink = SinkBuilder::new(
        &["registration", "result", "notification"],
        &[&router],
        &store.value,
    )
    .env("VIGIL_GRAPHITE", &carbon.address())
    .env(
        "VIGIL_NOTIFY_COMMAND",
        &handler_command(&out, &dir.join("no-flag")),
    )
    .start();
    let agent = router.agent();
    register(&agent, "reg", "vigil-agent", json!([plugin("load")]));
    // The scheduler's run, which the result completes.
    store.execute(
        "INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES ('run-1', ?1, 'load', 1, 2)",
        params![&agent.uuid],
    );
    let ts = now_secs() as i64;
    let result = |id: &str, status: i64, load: f64, run_id: Option<&str>| {
        agent.frame(
            "result",
            json!({"id": id, "ack": true, "plugin": "load", "status": status, "ts": ts,
                   "output": format!("LOAD status {status}"), "duration_ms": 12,
                   "perfdata": {"load1": load}, "run_id": run_id}),
        )
    };
    agent.send(&result("res-1", 0, 0.25, Some("run-1")));
    expect_ack(&agent, "res-1");
    carbon.expect_point("vigil.web1.load.load1", ts, 0.25);
    let completed: Option<f64> =
        query(&store, "SELECT completed_at FROM runs WHERE run_id='run-1'");
    assert!(completed.is_some(), "the run is completed");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM notifications"),
        0,
        "a first OK raises nothing"
    );

    agent.send(&result("res-2", 2, 9.5, None));
    expect_ack(&agent, "res-2");
    let lines = wait_for("the CRITICAL notification", EVENTUALLY, || {
        Some(handled_lines(&out)).filter(|l| l.len() == 1)
    });
    assert_eq!(lines[0]["severity"], "critical");
    assert_eq!(lines[0]["uuid"], json!(agent.uuid));
    assert_eq!(lines[0]["hostname"], "web1");
    assert_eq!(
        lines[0]["message"],
        "load on web1 is CRITICAL: LOAD status 2"
    );

    agent.send(&result("res-3", 0, 0.5, None));
    expect_ack(&agent, "res-3");
    let lines = wait_for("the recovery", EVENTUALLY, || {
        Some(handled_lines(&out)).filter(|l| l.len() == 2)
    });
    assert_eq!(lines[1]["severity"], "info");
    assert_eq!(lines[1]["recovery"], true);
    let status: i64 = query(&store, "SELECT status FROM results WHERE plugin='load'").unwrap();
    assert_eq!(status, 0);
    wait_for("raised notifications marked handled", EVENTUALLY, || {
        (count(
            &store,
            "SELECT COUNT(*) FROM notifications WHERE origin='result' AND state='handled'",
        ) == 2)
            .then_some(())
    });
    sink.stop_ok();
}

#[test]
fn a_failed_handler_means_no_ack_and_the_resend_delivers_exactly_once() {
    let dir = TempDir::new("sink-notify");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let flag = dir.join("fail");
    let router = Router::start("r1");
    let sink = SinkBuilder::new(&["notification"], &[&router], &store.value)
        .env("VIGIL_NOTIFY_COMMAND", &handler_command(&out, &flag))
        .start();
    let agent = router.agent();
    let note = agent.frame(
        "notification",
        json!({"id": "n-1", "ack": true, "severity": "error", "source": "disk",
               "message": "/var is 95% full", "hostname": "web1"}),
    );
    std::fs::write(&flag, "").expect("create the fail flag");
    agent.send(&note);
    let error: String = wait_for("the failed attempt to be recorded", EVENTUALLY, || {
        query(
            &store,
            "SELECT last_error FROM notifications WHERE id='n-1'",
        )
    });
    assert!(error.contains("handler told to fail"), "{error}");
    agent.expect_silence(Duration::from_millis(300), "no ack after a failed handler");
    assert!(handled_lines(&out).is_empty());

    std::fs::remove_file(&flag).expect("remove the fail flag");
    agent.send(&note);
    expect_ack(&agent, "n-1");
    let lines = handled_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "/var is 95% full");

    // The ack was lost, say: the agent resends; acked again, not re-run.
    agent.send(&note);
    expect_ack(&agent, "n-1");
    assert_eq!(handled_lines(&out).len(), 1, "exactly one delivery");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notifications"), 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM handled WHERE id='n-1'"),
        1
    );
    let state: String = query(&store, "SELECT state FROM notifications").unwrap();
    assert_eq!(state, "handled");
    sink.stop_saying("duplicates=1");
}

/// One agent with a connection to each router (its routing id its UUID on
/// both).
fn agent_on_both(r1: &Router, r2: &Router) -> (Client, Client) {
    let via_r1 = r1.agent();
    let uuid = via_r1.uuid.clone();
    let via_r2 = Client::connect(&r2.ctx, &[&r2.client], &uuid, Some(uuid.as_bytes()));
    (via_r1, via_r2)
}

/// A notification of `client`'s that asks for an ack.
fn acked_notification(client: &Client, id: &str, severity: &str, message: &str) -> Vec<u8> {
    client.frame(
        "notification",
        json!({"id": id, "ack": true, "severity": severity, "message": message}),
    )
}

#[test]
fn the_same_notification_through_two_routers_is_handled_once_and_acked() {
    let dir = TempDir::new("sink-dedup");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let (r1, r2) = (Router::start("r1"), Router::start("r2"));
    let _sink = SinkBuilder::new(&["notification"], &[&r1, &r2], &store.value)
        .env(
            "VIGIL_NOTIFY_COMMAND",
            &handler_command(&out, &dir.join("no-flag")),
        )
        .start();
    // One agent, one connection to each router (its routing id is its UUID).
    let (via_r1, via_r2) = agent_on_both(&r1, &r2);
    let note = acked_notification(&via_r1, "twice", "critical", "raid degraded");
    via_r1.send(&note);
    via_r2.send(&note);
    // Each copy is acked (through whichever router has a route).
    let mut acks = 0;
    while acks < 2 {
        let i = util::poll_any(&[&via_r1.sock, &via_r2.sock], util::WAIT)
            .expect("an ack within the wait");
        let client = [&via_r1, &via_r2][i];
        expect_ack(client, "twice");
        acks += 1;
    }
    assert_eq!(handled_lines(&out).len(), 1, "handled once");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notifications"), 1);
    let routers = count(&store, "SELECT COUNT(DISTINCT last_router) FROM clients");
    assert_eq!(routers, 1);
}

#[test]
fn a_silent_client_is_declared_down_and_its_return_is_a_recovery() {
    let dir = TempDir::new("sink-heartbeat");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let router = Router::start("r1");
    let _sink = SinkBuilder::new(&["heartbeat", "notification"], &[&router], &store.value)
        .env("VIGIL_HEARTBEAT_GRACE", "2")
        .env(
            "VIGIL_NOTIFY_COMMAND",
            &handler_command(&out, &dir.join("no-flag")),
        )
        .start();
    let agent = router.agent();
    let beat = agent.frame("heartbeat", json!({"hostname": "web1", "interval_s": 0.25}));
    agent.send(&beat);
    let liveness = format!("SELECT liveness FROM clients WHERE uuid='{}'", agent.uuid);
    wait_for("the client to be up", EVENTUALLY, || {
        query::<String>(&store, &liveness).filter(|l| l == "up")
    });
    // Silence: down after 2 × 0.25 s.
    let lines = wait_for("the down notification", EVENTUALLY, || {
        Some(handled_lines(&out)).filter(|l| !l.is_empty())
    });
    assert_eq!(lines[0]["severity"], "critical");
    assert_eq!(lines[0]["source"], "heartbeat");
    assert_eq!(lines[0]["hostname"], "web1");
    assert_eq!(lines[0]["uuid"], json!(agent.uuid));
    assert_eq!(query::<String>(&store, &liveness).as_deref(), Some("down"));
    agent.send(&beat);
    let lines = wait_for("the recovery notification", EVENTUALLY, || {
        Some(handled_lines(&out)).filter(|l| l.len() >= 2)
    });
    assert_eq!(lines[1]["severity"], "info");
    assert_eq!(lines[1]["recovery"], true);
}

#[test]
fn no_alert_storm_after_a_sink_restart() {
    let dir = TempDir::new("sink-restart");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let router = Router::start("r1");
    let sink = |grace: &str| {
        SinkBuilder::new(&["heartbeat", "notification"], &[&router], &store.value)
            .env("VIGIL_HEARTBEAT_GRACE", grace)
            .env(
                "VIGIL_NOTIFY_COMMAND",
                &handler_command(&out, &dir.join("no-flag")),
            )
            .start()
    };
    // A first sink learns of three clients, then stops.
    let first = sink("3");
    let agents: Vec<Client> = (0..3).map(|_| router.agent()).collect();
    for agent in &agents {
        agent.send(&agent.frame("heartbeat", json!({"interval_s": 1})));
    }
    wait_for("three clients up", EVENTUALLY, || {
        (count(&store, "SELECT COUNT(*) FROM clients WHERE liveness='up'") == 3).then_some(())
    });
    let (status, log) = first.stop();
    assert!(status.success(), "{log}");
    // The sink was away for an hour: every heartbeat on record is old.
    store.execute(
        "UPDATE clients SET last_heartbeat = last_heartbeat - 3600",
        params![],
    );
    let restarted_at = now_secs();
    let _second = sink("3");
    // Two of them come back at once; the third stays silent.
    for agent in &agents[..2] {
        agent.send(&agent.frame("heartbeat", json!({"interval_s": 30})));
    }
    let silent = &agents[2].uuid;
    let created: f64 = wait_for("the silent client to be declared down", EVENTUALLY, || {
        query(
            &store,
            &format!(
                "SELECT created_at FROM notifications WHERE origin='heartbeat' AND uuid='{silent}'"
            ),
        )
    });
    assert!(
        created >= restarted_at + 3.0,
        "declared down {:.2} s after the restart, before a full grace window (3 s)",
        created - restarted_at
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM notifications"),
        1,
        "only the silent client is declared down"
    );
}

#[test]
fn bad_input_is_counted_and_harms_nothing() {
    let dir = TempDir::new("sink-bad");
    let store = TestDb::in_dir(&dir.0);
    // A fake router: PUSH sockets the sink connects to, sending anything.
    let ctx = zmq::Context::new();
    let push = util::socket(&ctx, zmq::PUSH);
    push.bind("tcp://127.0.0.1:*").expect("bind PUSH");
    let endpoint = push.get_last_endpoint().unwrap().unwrap();
    let sink = SinkBuilder::new(&["heartbeat"], &[], &store.value)
        .env("VIGIL_SINK_CONNECT", &format!("heartbeat={endpoint}"))
        .start();
    let uuid = util::new_uuid();
    let meta = br#"{"router":"fake","received_at":1764072605.5,"peer":"127.0.0.1"}"#.to_vec();
    let good = format!(r#"{{"uuid":"{uuid}","type":"heartbeat","interval_s":10}}"#).into_bytes();
    let bad: Vec<Vec<Vec<u8>>> = vec![
        vec![good.clone()],
        vec![good.clone(), meta.clone(), b"extra".to_vec()],
        vec![b"{not json".to_vec(), meta.clone()],
        vec![vec![0xff, 0xfe], meta.clone()],
        vec![b"[1,2,3]".to_vec(), meta.clone()],
        vec![good.clone(), b"{}".to_vec()],
        vec![good.clone(), b"not json".to_vec()],
        vec![
            br#"{"uuid":"nope","type":"heartbeat","interval_s":1}"#.to_vec(),
            meta.clone(),
        ],
        vec![
            format!(r#"{{"uuid":"{uuid}","type":"stats","interval_s":1}}"#).into_bytes(),
            meta.clone(),
        ],
        vec![
            format!(r#"{{"uuid":"{uuid}","type":"heartbeat","interval_s":"soon"}}"#).into_bytes(),
            meta.clone(),
        ],
        vec![
            format!(r#"{{"uuid":"{uuid}","type":"heartbeat","interval_s":1,"hostname":[]}}"#)
                .into_bytes(),
            meta.clone(),
        ],
        vec![vec![b'x'; 200_000], meta.clone()],
    ];
    for frames in &bad {
        push.send_multipart(frames.iter(), 0).expect("send garbage");
    }
    push.send_multipart([good.clone(), meta.clone()].iter(), 0)
        .expect("send the good one");
    // One PUSH to one PULL keeps order: once the good one is stored, all
    // the garbage before it has been read.
    wait_for("the good heartbeat to be stored", EVENTUALLY, || {
        query::<f64>(
            &store,
            &format!("SELECT last_heartbeat FROM clients WHERE uuid='{uuid}'"),
        )
    });
    let log = sink.stop_ok();
    let expected = format!(
        "heartbeat: received={} handled=1 malformed={}",
        bad.len() + 1,
        bad.len()
    );
    assert!(log.contains(&expected), "expected {expected:?} in\n{log}");
}

#[test]
fn a_clients_origin_and_recovery_are_dropped() {
    let dir = TempDir::new("sink-forged-recovery");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let router = Router::start("r1");
    let sink = SinkBuilder::new(&["notification"], &[&router], &store.value)
        .env(
            "VIGIL_NOTIFY_COMMAND",
            &handler_command(&out, &dir.join("no-flag")),
        )
        .start();
    let agent = router.agent();
    // What would close vigil's own host-down page, were it believed.
    agent.send(&agent.frame(
        "notification",
        json!({"id": "forged", "ack": true, "severity": "info", "source": "heartbeat",
               "message": "host is back", "origin": "heartbeat", "recovery": true}),
    ));
    expect_ack(&agent, "forged");
    let lines = handled_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "host is back");
    assert!(lines[0].get("recovery").is_none(), "{}", lines[0]);
    assert!(lines[0].get("origin").is_none(), "{}", lines[0]);
    let origin: String = query(&store, "SELECT origin FROM notifications").unwrap();
    assert_eq!(origin, "client");
    let body: String = query(&store, "SELECT body FROM notifications").unwrap();
    assert!(!body.contains("recovery"), "{body}");
    sink.stop_ok();
}

#[test]
fn a_world_readable_secret_key_stops_the_sink_with_status_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("sink-exposed-key");
    let store = TestDb::in_dir(&dir.0);
    let router = Router::start("r1");
    let key = dir.join("sink.key");
    let pair = vigil::curve::KeyPair::generate().expect("a key pair");
    pair.write(&key).expect("write the key");
    let router_key = vigil::curve::KeyPair::generate().unwrap().public.to_z85();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, stderr) = SinkBuilder::new(&["heartbeat"], &[&router], &store.value)
        .env("VIGIL_CURVE_KEY", &key.display().to_string())
        .env("VIGIL_ROUTER_KEY", &router_key)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("VIGIL_CURVE_KEY"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("VIGIL_CURVE_KEY"))
            .count(),
        1,
        "{stderr}"
    );
    // The key's owner alone may read it: then the sink starts.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sink = SinkBuilder::new(&["heartbeat"], &[&router], &store.value)
        .env("VIGIL_CURVE_KEY", &key.display().to_string())
        .env("VIGIL_ROUTER_KEY", &router_key)
        .start();
    sink.stop_ok();
}

#[test]
fn bad_configuration_stops_the_start_with_status_2() {
    let dir = TempDir::new("sink-config");
    let store = TestDb::in_dir(&dir.0);
    let router = Router::start("r1");
    for (args, var, value) in [
        (&["heartbeat"][..], "VIGIL_HEARTBEAT_GRACE", "0"),
        (&["all"][..], "VIGIL_BACKENDS", "not-an-endpoint"),
        (&["stats"][..], "VIGIL_GRAPHITE_PREFIX", "a b"),
        (&["notification"][..], "VIGIL_NOTIFY_TIMEOUT_SECS", "0"),
    ] {
        let (status, stderr) = SinkBuilder::new(args, &[&router], &store.value)
            .env(var, value)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
    let (status, stderr) = SinkBuilder::new(&["email"], &[&router], &store.value).run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown sink type"), "{stderr}");
}

#[test]
fn command_email_and_webhook_each_deliver_exactly_once_across_a_failed_attempt() {
    let dir = TempDir::new("sink-handlers");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let smtp = Aiosmtpd::start();
    // The pager is down for the first attempt.
    let pager = WebhookServer::start(&[503, 202]);
    let router = Router::start("r1");
    let sink = SinkBuilder::new(&["notification"], &[&router], &store.value)
        .env(
            "VIGIL_NOTIFY_COMMAND",
            &handler_command(&out, &dir.join("no-flag")),
        )
        .env("VIGIL_NOTIFY_SMTP", &format!("127.0.0.1:{}", smtp.port))
        .env("VIGIL_NOTIFY_SMTP_TLS", "off")
        .env("VIGIL_NOTIFY_SMTP_TO", "ops@example.org")
        .env("VIGIL_NOTIFY_WEBHOOK", &pager.url())
        .start();
    let agent = router.agent();
    let note = agent.frame(
        "notification",
        json!({"id": "page-1", "ack": true, "severity": "critical", "source": "raid",
               "message": "array md0 degraded", "hostname": "db1"}),
    );
    agent.send(&note);
    let error: String = wait_for("the failed attempt to be recorded", EVENTUALLY, || {
        query(
            &store,
            "SELECT last_error FROM notifications WHERE id='page-1'",
        )
    });
    assert!(
        error.contains("webhook") && error.contains("503"),
        "{error}"
    );
    let done: String = query(&store, "SELECT handlers_done FROM notifications").unwrap();
    assert_eq!(done, r#"["command","email"]"#);
    agent.expect_silence(Duration::from_millis(300), "no ack while the pager fails");

    agent.send(&note);
    expect_ack(&agent, "page-1");
    agent.send(&note);
    expect_ack(&agent, "page-1");
    assert_eq!(handled_lines(&out).len(), 1, "the command ran once");
    // aiosmtpd prints a message before it answers 250; its stdout is read
    // by a thread, which may lag behind the ack.
    let mails = at_least(1, "the email", || smtp.messages());
    assert_eq!(mails.len(), 1, "one email: {mails:?}");
    assert!(mails[0].contains("array md0 degraded"), "{}", mails[0]);
    let pages = pager.bodies();
    assert_eq!(
        pages.len(),
        2,
        "the failed POST and the one that went through"
    );
    let page: Value = serde_json::from_str(&pages[1]).expect("the webhook body is JSON");
    assert_eq!(page["payload"]["severity"], "critical", "{page}");
    sink.stop_ok();
}

#[test]
fn acks_fail_over_past_a_dead_router_and_one_without_a_route() {
    let dir = TempDir::new("sink-failover");
    let store = TestDb::in_dir(&dir.0);
    let (r1, r2) = (Router::start("r1"), Router::start("r2"));
    // Nothing listens on the first back end (a timeout), r1 has no route to
    // the agent (unknown_client), r2 has.
    let dead = format!("tcp://127.0.0.1:{}", sinks_util::free_port());
    let backends = format!("{dead},{},{}", r1.backend, r2.backend);
    let sink = SinkBuilder::new(&["registration"], &[&r1, &r2], &store.value)
        .env("VIGIL_BACKENDS", &backends)
        .env("VIGIL_ACK_TIMEOUT_MS", "300")
        .start();
    let agent = r2.agent();
    register(&agent, "via-r2", "vigil-agent", json!([plugin("load")]));
    // The router that delivered is tried first from now on.
    register(&agent, "again", "vigil-agent", json!([plugin("load")]));
    sink.stop_saying("acks sent=2 failed=0");
}

#[test]
fn the_outbox_retries_a_raised_notification_until_its_handler_succeeds() {
    let dir = TempDir::new("sink-outbox");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    let flag = dir.join("fail");
    std::fs::write(&flag, "").expect("create the fail flag");
    let router = Router::start("r1");
    let _sink = SinkBuilder::new(&["heartbeat", "notification"], &[&router], &store.value)
        .env("VIGIL_HEARTBEAT_GRACE", "1")
        .env("VIGIL_NOTIFY_COMMAND", &handler_command(&out, &flag))
        .start();
    let agent = router.agent();
    agent.send(&agent.frame("heartbeat", json!({"interval_s": 0.2})));
    // Down after 0.2 s; the handler fails, so the outbox retries.
    wait_for("two failed attempts", EVENTUALLY, || {
        (count(
            &store,
            "SELECT attempts FROM notifications WHERE state='pending'",
        ) >= 2)
            .then_some(())
    });
    let error: String = query(&store, "SELECT last_error FROM notifications").unwrap();
    assert!(error.contains("handler told to fail"), "{error}");
    assert!(handled_lines(&out).is_empty());
    std::fs::remove_file(&flag).expect("remove the fail flag");
    wait_for("the notification to be handled", EVENTUALLY, || {
        (count(
            &store,
            "SELECT COUNT(*) FROM notifications WHERE state='handled'",
        ) == 1)
            .then_some(())
    });
    let lines = handled_lines(&out);
    assert_eq!(lines.len(), 1, "delivered once");
    assert_eq!(lines[0]["severity"], "critical");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notifications"), 1);
}

#[test]
fn two_notification_sinks_on_one_store_never_run_the_same_notification_twice() {
    let dir = TempDir::new("sink-two-procs");
    let store = TestDb::in_dir(&dir.0);
    let out = dir.join("handled.jsonl");
    // A slow handler, so the second copy arrives while the first runs.
    let command = format!("sleep 2; {}", handler_command(&out, &dir.join("no-flag")));
    let (r1, r2) = (Router::start("r1"), Router::start("r2"));
    let sink_a = SinkBuilder::new(&["notification"], &[&r1], &store.value)
        .env("VIGIL_NOTIFY_COMMAND", &command)
        .start();
    let sink_b = SinkBuilder::new(&["notification"], &[&r2], &store.value)
        .env("VIGIL_NOTIFY_COMMAND", &command)
        .start();
    let (via_r1, via_r2) = agent_on_both(&r1, &r2);
    let note = acked_notification(&via_r1, "both", "warning", "swap 90%");
    via_r1.send(&note);
    wait_for("sink A to claim the notification", EVENTUALLY, || {
        query::<f64>(
            &store,
            "SELECT next_attempt_at FROM notifications WHERE id='both'",
        )
    });
    via_r2.send(&note);
    expect_ack(&via_r1, "both");
    // The agent resends through r2: sink B, which left its first copy to
    // A, now finds it handled and acks it.
    via_r2.send(&note);
    expect_ack(&via_r2, "both");
    assert_eq!(handled_lines(&out).len(), 1, "the handler ran once");
    let (status, log_b) = sink_b.stop();
    assert!(status.success(), "{log_b}");
    assert!(
        log_b.contains("notification: received=2 handled=1 duplicates=1"),
        "{log_b}"
    );
    let (status, log_a) = sink_a.stop();
    assert!(status.success(), "{log_a}");
}
