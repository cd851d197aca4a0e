//! The back end on several hosts, sharing one PostgreSQL store: real
//! processes, real sockets, a real server.
//!
//! - Two routers, two `vigil sink all` processes with no files in common
//!   (each its own directory and notification handler), two schedulers,
//!   all on one PostgreSQL database; two agents with plugins on schedule.
//!   Every plugin runs at most once per slot, also across a `kill -9` of the
//!   scheduler holding the lease (the other takes over); every acked
//!   notification is handled exactly once by one of the two sinks; `vigil
//!   status` on either side (each side's router only) shows the whole fleet.
//! - PostgreSQL stopped for 10 s mid-run and started again: nothing acked is
//!   lost, sinks and scheduler recover by themselves and log the outage once
//!   and its end once, and `vigil status` says the store is unreachable
//!   instead of hanging.
//!
//! Without `VIGIL_TEST_DB` (the first) or PostgreSQL's binaries (the
//! second) these tests are skipped; under `CI=true` they fail instead.

use crate::util;
use crate::util::db;

use db::{PgServer, TestDb, OUTAGE};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use util::agent::{local_endpoint, quick_agent_env, send_notification};
use util::daemon::{output_within, vigil_command, wait_for, Daemon};
use util::Router;
use vigil::params;
use vigil::testkit::TempDir;

/// How long any step may take (the machine is shared and slow).
const STEP: Duration = Duration::from_secs(90);

fn write_plugin(dir: &Path, name: &str, script: &str, interval: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = format!(
        "name = {name}\ncommand = {}\ntimeout_s = 5\ninterval_s = {interval}\n",
        path.display()
    );
    std::fs::write(dir.join(format!("{name}.conf")), conf).unwrap();
}

/// One agent host: its directory, plugins and daemon.
struct AgentHost {
    dir: TempDir,
    daemon: Daemon,
}

impl AgentHost {
    fn start(name: &str, routers: &[&Router], plugins: &[&str]) -> AgentHost {
        let dir = TempDir::new(name);
        let plugin_dir = dir.join("plugins.d");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        for plugin in plugins {
            write_plugin(&plugin_dir, plugin, "echo 'OK - fine | v=1'", 1);
        }
        std::fs::write(dir.join("machine-id"), format!("{name}-machine\n")).unwrap();
        let routers = util::client_endpoints(routers.iter().copied());
        let daemon = Daemon::start(
            name,
            &["agent"],
            &quick_agent_env(&dir, routers, &plugin_dir),
        );
        AgentHost { dir, daemon }
    }

    fn uuid(&self) -> String {
        self.daemon
            .ready_field("uuid")
            .expect("uuid in the ready line")
    }

    /// `vigil send notification`: the id the agent gave it.
    fn notify(&self, message: &str) -> String {
        send_notification(&local_endpoint(&self.dir), "pg-test", message)
    }
}

/// `vigil sink all` on its own "host": its own directory and handler file.
struct SinkHost {
    _dir: TempDir,
    handled: PathBuf,
    daemon: Daemon,
}

impl SinkHost {
    fn start(name: &str, db: &TestDb, routers: &[&Router]) -> SinkHost {
        let dir = TempDir::new(name);
        let handled = dir.join("handled.jsonl");
        let connect = util::sink_connect(routers.iter().copied());
        let daemon = Daemon::start(
            name,
            &["sink", "all"],
            &[
                ("VIGIL_DB", db.value.clone()),
                ("VIGIL_SINK_CONNECT", connect),
                ("VIGIL_BACKENDS", backends(routers)),
                (
                    "VIGIL_NOTIFY_COMMAND",
                    format!("cat >> '{0}'; echo >> '{0}'", handled.display()),
                ),
                ("VIGIL_GRAPHITE", "127.0.0.1:9".to_string()),
                ("VIGIL_HEARTBEAT_SWEEP_MS", "200".to_string()),
                ("VIGIL_OUTBOX_POLL_MS", "200".to_string()),
                ("VIGIL_ACK_TIMEOUT_MS", "1000".to_string()),
            ],
        );
        SinkHost {
            _dir: dir,
            handled,
            daemon,
        }
    }

    /// Ids of client notifications this sink's handler received.
    fn handled_ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.handled)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).expect("the handler got JSON"))
            .filter(|n| n["source"] == json!("pg-test"))
            .map(|n| n["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn backends(routers: &[&Router]) -> String {
    util::backend_endpoints(routers.iter().copied())
}

fn scheduler(id: &str, db: &TestDb, routers: &[&Router]) -> Daemon {
    Daemon::start(
        id,
        &["scheduler"],
        &[
            ("VIGIL_DB", db.value.clone()),
            ("VIGIL_BACKENDS", backends(routers)),
            ("VIGIL_BACKEND_TIMEOUT_MS", "1000".to_string()),
            ("VIGIL_SCHEDULER_ID", id.to_string()),
            ("VIGIL_LEASE_SECS", "3".to_string()),
            ("VIGIL_SCHEDULER_RELOAD_MS", "500".to_string()),
        ],
    )
}

/// How many times each id was handled, over every sink.
fn handled_counts(sinks: &[&SinkHost]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sink in sinks {
        for id in sink.handled_ids() {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

fn wait_all_handled(sinks: &[&SinkHost], ids: &[String]) {
    wait_for("every notification at a handler", STEP, || {
        let counts = handled_counts(sinks);
        ids.iter().all(|id| counts.contains_key(id)).then_some(())
    });
}

/// A scheduled result of `plugin` on `uuid` sent after `after`.
fn wait_scheduled_result(db: &TestDb, uuid: &str, plugin: &str, after: f64) -> f64 {
    wait_for(
        &format!("a scheduled {plugin} result on {uuid} sent after {after}"),
        STEP,
        || {
            db.value::<f64>(
                "SELECT MAX(u.sent_at) FROM runs u
                 WHERE u.uuid = ?1 AND u.plugin = ?2 AND u.sent_at > ?3
                   AND u.completed_at IS NOT NULL",
                params![uuid, plugin, after],
            )
        },
    )
}

/// The slot a run sent at `sent_at` belongs to, by the scheduler's splay.
fn slot(uuid: &str, plugin: &str, interval: f64, sent_at: f64) -> i64 {
    let phase = vigil::scheduler::plan::phase(uuid, plugin, interval);
    ((sent_at - phase) / interval).floor() as i64
}

/// Runs that share a (client, plugin, slot) with another.
fn duplicate_slots(db: &TestDb) -> Vec<(String, String, i64)> {
    let mut seen = BTreeSet::new();
    let mut duplicates = Vec::new();
    for row in db.rows(
        "SELECT uuid, plugin, sent_at FROM runs ORDER BY sent_at",
        &[],
    ) {
        let (uuid, plugin, sent): (String, String, f64) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
        );
        let key = (
            uuid.clone(),
            plugin.clone(),
            slot(&uuid, &plugin, 1.0, sent),
        );
        if !seen.insert(key.clone()) {
            duplicates.push(key);
        }
    }
    duplicates
}

fn status_json(db: &str, routers: &[&Router]) -> Value {
    let mut cmd = vigil_command(&["status", "--json"]);
    cmd.env("VIGIL_DB", db)
        .env("VIGIL_BACKENDS", backends(routers));
    let out = output_within(cmd, STEP);
    assert!(
        out.status.success(),
        "vigil status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

#[test]
fn two_sink_hosts_and_two_schedulers_share_one_postgres() {
    let Some(db) = TestDb::postgres("two_sink_hosts_and_two_schedulers_share_one_postgres") else {
        return;
    };
    let (a, b) = (Router::start("pg-a"), Router::start("pg-b"));
    let both = [&a, &b];
    let sink1 = SinkHost::start("sink-host-1", &db, &both);
    let sink2 = SinkHost::start("sink-host-2", &db, &both);
    let mut sched1 = scheduler("sched-1", &db, &both);
    let mut sched2 = scheduler("sched-2", &db, &both);
    // One agent behind both routers, one behind router B only.
    let agent1 = AgentHost::start("agent-1", &both, &["pg_one", "pg_two"]);
    let agent2 = AgentHost::start("agent-2", &[&b], &["pg_three"]);
    let (u1, u2) = (agent1.uuid(), agent2.uuid());

    for (uuid, plugin) in [(&u1, "pg_one"), (&u1, "pg_two"), (&u2, "pg_three")] {
        wait_scheduled_result(&db, uuid, plugin, 0.0);
    }

    // Acked notifications, spread by the routers over both sinks.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(agent1.notify(&format!("from agent 1, #{i}")));
    }
    for i in 0..3 {
        ids.push(agent2.notify(&format!("from agent 2, #{i}")));
    }
    wait_all_handled(&[&sink1, &sink2], &ids);

    // The lease holder dies with -9: the other scheduler takes over within
    // the lease, and no slot is run twice.
    let holder: String = wait_for("a lease holder", STEP, || {
        db.value("SELECT holder FROM leases WHERE name = 'scheduler'", &[])
    });
    let killed_at = util::now_secs();
    let survivor = if holder == "sched-1" {
        sched1.kill9();
        "sched-2"
    } else {
        sched2.kill9();
        "sched-1"
    };
    wait_for("the other scheduler to hold the lease", STEP, || {
        (db.value::<String>("SELECT holder FROM leases WHERE name = 'scheduler'", &[])
            .as_deref()
            == Some(survivor))
        .then_some(())
    });
    let after = wait_scheduled_result(&db, &u1, "pg_one", killed_at);
    wait_scheduled_result(&db, &u2, "pg_three", after);
    wait_scheduled_result(&db, &u1, "pg_two", after);

    assert_eq!(duplicate_slots(&db), vec![], "a slot was run twice");
    let counts = handled_counts(&[&sink1, &sink2]);
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "notification {id} handled once");
        let rows = db.count(
            "SELECT COUNT(*) FROM notifications WHERE id = ?1 AND origin = 'client'",
            params![id],
        );
        assert_eq!(rows, 1, "one row for {id}");
    }
    assert!(
        !sink1.handled_ids().is_empty() && !sink2.handled_ids().is_empty(),
        "both sinks handled some: {counts:?}"
    );

    // Either side's status (its own router only) shows the whole fleet.
    for side in [&a, &b] {
        let status = status_json(&db.value, &[side]);
        let clients: BTreeSet<String> = status["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .map(|c| c["uuid"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            clients.contains(&u1) && clients.contains(&u2),
            "status via {} shows {clients:?}",
            side.name
        );
        let plugins: BTreeSet<String> = status["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| p["plugin"].as_str().unwrap_or_default().to_string())
            .collect();
        for p in ["pg_one", "pg_two", "pg_three"] {
            assert!(plugins.contains(p), "status via {} lacks {p}", side.name);
        }
    }
    drop((agent1, agent2));
}

#[test]
fn a_postgres_outage_loses_nothing_acked_and_every_part_recovers() {
    let Some(server) =
        PgServer::start("a_postgres_outage_loses_nothing_acked_and_every_part_recovers")
    else {
        return;
    };
    let db = TestDb::at(&server.url());
    let router = Router::start("pg-outage");
    let sink = SinkHost::start("sink-outage", &db, &[&router]);
    let sched = scheduler("sched-outage", &db, &[&router]);
    let agent = AgentHost::start("agent-outage", &[&router], &["pg_beat"]);
    let uuid = agent.uuid();
    wait_scheduled_result(&db, &uuid, "pg_beat", 0.0);
    let first = agent.notify("before the outage");
    wait_all_handled(&[&sink], std::slice::from_ref(&first));

    server.stop();
    sink.daemon.wait_log("unreachable", STEP);
    // Accepted by the agent while the store is down: not acked, resent.
    let during = vec![
        agent.notify("during the outage, 1"),
        agent.notify("during the outage, 2"),
    ];
    // `vigil status` says so, in bounded time.
    let mut cmd = vigil_command(&["status"]);
    cmd.env("VIGIL_DB", &db.value)
        .env("VIGIL_BACKENDS", &router.backend);
    let out = output_within(cmd, STEP);
    assert!(
        !out.status.success(),
        "status with the store down succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "status said: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // The outage lasts a while, and the scheduler must have noticed it
    // (asserted below) before the store comes back.
    std::thread::sleep(OUTAGE);
    sched.wait_log("unreachable:", STEP);
    server.start_again();
    let back = util::now_secs();

    wait_all_handled(&[&sink], &during);
    wait_scheduled_result(&db, &uuid, "pg_beat", back);
    let counts = handled_counts(&[&sink]);
    for id in std::iter::once(&first).chain(&during) {
        assert_eq!(counts.get(id), Some(&1), "notification {id} handled once");
    }
    for part in [&sink.daemon, &sched] {
        let lines = part.log_lines();
        let down = lines.iter().filter(|l| l.contains("unreachable:")).count();
        let up = lines
            .iter()
            .filter(|l| l.contains("reachable again"))
            .count();
        assert_eq!(
            (down, up),
            (1, 1),
            "{}: outage logged once, end once",
            part.name
        );
    }
    assert_eq!(duplicate_slots(&db), vec![], "a slot was run twice");
}
