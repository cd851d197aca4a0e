//! Harness for the `vigil scheduler` and `vigil status` integration tests:
//! a store (SQLite, or PostgreSQL in the second pass) created by vigil's
//! own Store::open and populated directly through its interface, real `vigil scheduler` / `vigil status` processes,
//! simulated agents (a DEALER whose routing id is its UUID, answering
//! `run_plugin` with a `result`) and a stand-in result sink that marks runs
//! completed as the real one does. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::util::db::TestDb;
use serde_json::{json, Value};
use vigil::params;
use vigil::store::Val;

use crate::util::daemon::{output_within, vigil_command, Daemon};
use crate::util::{now_secs, recv_within, Router, START_WAIT};

/// How long a condition the tests wait for may take.
pub const LONG_WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns Some, or panics after `timeout` saying
/// what was awaited (the shared poller, with this harness's argument order).
pub fn wait_for<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    crate::util::daemon::wait_for(what, timeout, check)
}

/// The pair's phase within its interval: the scheduler's own function (its
/// FNV-1a is pinned to reference values in `vigil::fnv`'s unit tests).
pub use vigil::scheduler::plan::phase;

/// The slot number a run sent at `sent_at` belongs to.
pub fn slot(uuid: &str, plugin: &str, interval: f64, sent_at: f64) -> i64 {
    ((sent_at - phase(uuid, plugin, interval)) / interval).floor() as i64
}

/// The store of one test: a SQLite file in a fresh directory (removed on
/// drop), or a fresh PostgreSQL database in the second pass
/// (`VIGIL_TEST_STORE=postgres`), with vigil's current schema.
pub struct TestStore {
    pub dir: PathBuf,
    pub db: TestDb,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = std::env::temp_dir().join(format!("vigil-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create store dir");
        let db = TestDb::in_dir(&dir);
        // vigil's own opening: WAL mode (SQLite) and the current schema.
        db.create_schema();
        TestStore { dir, db }
    }

    /// `VIGIL_DB` for the processes under test.
    pub fn value(&self) -> String {
        self.db.value.clone()
    }

    /// A client row; `heartbeat`: (last_heartbeat, interval_s).
    pub fn add_client(&self, uuid: &str, hostname: &str, heartbeat: Option<(f64, f64)>) {
        let now = now_secs();
        let (at, interval) = heartbeat.unzip();
        let liveness = if heartbeat.is_some() { "up" } else { "unknown" };
        self.db.execute(
            "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_router, peer,
                                  last_heartbeat, heartbeat_interval_s, liveness)
             VALUES (?1, ?2, ?3, ?3, 'r1', '127.0.0.1', ?4, ?5, ?6)",
            params![uuid, hostname, now, at, interval, liveness],
        );
    }

    pub fn set_heartbeat(&self, uuid: &str, at: f64) {
        self.db.execute(
            "UPDATE clients SET last_heartbeat = ?2, last_seen = ?2 WHERE uuid = ?1",
            params![uuid, at],
        );
    }

    pub fn add_plugin(&self, uuid: &str, name: &str, interval_s: f64, timeout_s: f64) {
        let command = format!("/bin/{name}");
        self.db.execute(
            "INSERT INTO plugins (uuid, name, process, command, interval_s, timeout_s, registered_at)
             VALUES (?1, ?2, 'vigil-agent', ?3, ?4, ?5, ?6)",
            params![uuid, name, &command, interval_s, timeout_s, now_secs()],
        );
    }

    /// Every run row: run_id → (uuid, plugin, sent_at, completed, overdue).
    pub fn runs(&self) -> BTreeMap<String, RunRow> {
        self.db
            .rows(
                "SELECT run_id, uuid, plugin, sent_at, due_by, completed_at, overdue FROM runs",
                params![],
            )
            .into_iter()
            .map(|r| {
                (
                    r.get::<String>(0).expect("run_id"),
                    RunRow {
                        uuid: r.get(1).expect("uuid"),
                        plugin: r.get(2).expect("plugin"),
                        sent_at: r.get(3).expect("sent_at"),
                        due_by: r.get(4).expect("due_by"),
                        completed_at: r.get(5).expect("completed_at"),
                        overdue: r.get::<bool>(6).expect("overdue"),
                    },
                )
            })
            .collect()
    }

    /// The lease holder, if any unexpired lease row exists.
    pub fn lease_holder(&self) -> Option<String> {
        self.db.value(
            "SELECT holder FROM leases WHERE name = 'scheduler' AND expires_at > ?1",
            params![now_secs()],
        )
    }

    pub fn count(&self, sql: &str, args: &[Val]) -> i64 {
        self.db.count(sql, args)
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub uuid: String,
    pub plugin: String,
    pub sent_at: f64,
    pub due_by: f64,
    pub completed_at: Option<f64>,
    pub overdue: bool,
}

/// The environment every scheduler of the tests gets, before overrides.
fn base_env(store: &str, backends: &[&str]) -> Vec<(String, String)> {
    [
        ("VIGIL_DB", store.to_string()),
        ("VIGIL_BACKENDS", backends.join(",")),
        ("VIGIL_LOG", "info".to_string()),
        ("VIGIL_SCHEDULER_RELOAD_MS", "200".to_string()),
        ("VIGIL_BACKEND_TIMEOUT_MS", "1000".to_string()),
        ("VIGIL_RESULT_GRACE_SECS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A `vigil` command with the test's own VIGIL_* variables removed and
/// `env` set.
pub fn vigil(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = vigil_command(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// Runs `vigil ARGS` to completion (bounded) and returns its output.
pub fn run_vigil(args: &[&str], env: &[(String, String)]) -> Output {
    output_within(vigil(args, env), START_WAIT)
}

/// A running `vigil scheduler` (a [`Daemon`]).
pub struct Scheduler {
    daemon: Daemon,
    pub id: String,
    pub ready: String,
}

impl Scheduler {
    /// Starts a scheduler named `id` on `store` and `routers` (in that
    /// order in VIGIL_BACKENDS), with `extra` variables, and waits for its
    /// ready line.
    pub fn start(
        id: &str,
        store: &TestStore,
        routers: &[&Router],
        extra: &[(&str, &str)],
    ) -> Scheduler {
        let backends: Vec<&str> = routers.iter().map(|r| r.backend.as_str()).collect();
        Scheduler::start_on(id, store, &backends, extra)
    }

    pub fn start_on(
        id: &str,
        store: &TestStore,
        backends: &[&str],
        extra: &[(&str, &str)],
    ) -> Scheduler {
        let mut env = base_env(&store.db.value, backends);
        env.push(("VIGIL_SCHEDULER_ID".into(), id.into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let daemon = Daemon::spawn(&format!("scheduler {id}"), vigil(&["scheduler"], &env));
        Scheduler {
            id: id.to_string(),
            ready: daemon.ready.clone(),
            daemon,
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.daemon.log_lines()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.daemon
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("scheduler {} still running after {timeout:?}", self.id))
    }
}

/// A run_plugin request as an agent received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub plugin: String,
    pub run_id: String,
    pub frame: Value,
}

/// A simulated agent: one DEALER (routing id = UUID) on its own thread,
/// greeting every router it connects to, recording each run_plugin and
/// answering those of `answer` plugins with an OK result.
pub struct Agent {
    pub uuid: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    pub fn start(routers: &[&Router], answer: &[&str]) -> Agent {
        let uuid = uuid::Uuid::new_v4().to_string();
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::DEALER).expect("DEALER");
        sock.set_linger(0).expect("linger");
        sock.set_identity(uuid.as_bytes()).expect("routing id");
        for router in routers {
            sock.connect(&router.client).expect("connect");
        }
        greet(&sock, &uuid, routers);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Vec<String> = answer.iter().map(|s| s.to_string()).collect();
        let thread = {
            let (uuid, received, stop) = (uuid.clone(), Arc::clone(&received), Arc::clone(&stop));
            thread::spawn(move || {
                let _ctx = ctx;
                while !stop.load(Ordering::SeqCst) {
                    let Some(frames) = recv_within(&sock, Duration::from_millis(50)) else {
                        continue;
                    };
                    let msg: Value = serde_json::from_slice(&frames[0]).expect("JSON to agent");
                    if msg["type"] != "run_plugin" {
                        continue;
                    }
                    let plugin = msg["plugin"].as_str().expect("plugin").to_string();
                    let run_id = msg["run_id"].as_str().expect("run_id").to_string();
                    if answer.contains(&plugin) {
                        let result = json!({"uuid": uuid, "type": "result", "plugin": plugin,
                            "status": 0, "output": format!("{plugin} ok"), "run_id": run_id,
                            "duration_ms": 1, "perfdata": {}});
                        sock.send(result.to_string().as_bytes(), 0)
                            .expect("send result");
                    }
                    received.lock().expect("received").push(Received {
                        plugin,
                        run_id,
                        frame: msg,
                    });
                }
            })
        };
        Agent {
            uuid,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    pub fn count(&self, plugin: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.plugin == plugin)
            .count()
    }

    /// Waits until at least `n` runs of `plugin` arrived.
    pub fn wait_runs(&self, plugin: &str, n: usize) {
        wait_for(
            LONG_WAIT,
            &format!("{n} runs of {plugin} at {}", self.uuid),
            || (self.count(plugin) >= n).then_some(()),
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends hello until a welcome came from every router (a DEALER spreads
/// its sends over its connections), so each router can route to it.
fn greet(sock: &zmq::Socket, uuid: &str, routers: &[&Router]) {
    let mut welcomed = std::collections::BTreeSet::new();
    let hello = json!({"uuid": uuid, "type": "hello"}).to_string();
    wait_for(LONG_WAIT, "welcome from every router", || {
        sock.send(hello.as_bytes(), 0).expect("send hello");
        while let Some(frames) = recv_within(sock, Duration::from_millis(100)) {
            let reply: Value = serde_json::from_slice(&frames[0]).expect("welcome JSON");
            if reply["type"] == "welcome" {
                welcomed.insert(reply["router"].as_str().unwrap_or_default().to_string());
            }
        }
        (welcomed.len() == routers.len()).then_some(())
    });
}

/// A stand-in for the result sink: PULLs results from the routers and
/// sets `runs.completed_at` and the `results` row, as `vigil sink result`
/// does.
pub struct ResultSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ResultSink {
    pub fn start(store: &TestStore, routers: &[&Router]) -> ResultSink {
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::PULL).expect("PULL");
        sock.set_linger(0).expect("linger");
        for router in routers {
            sock.connect(router.sink_endpoint("result"))
                .expect("connect PULL");
        }
        // A connection of the thread's own to the same store.
        let value = store.value();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let _ctx = ctx;
                let conn = TestDb::at(&value);
                while !stop.load(Ordering::SeqCst) {
                    let Some(frames) = recv_within(&sock, Duration::from_millis(50)) else {
                        continue;
                    };
                    let msg: Value = serde_json::from_slice(&frames[0]).expect("result JSON");
                    let now = now_secs();
                    conn.execute(
                        "UPDATE runs SET completed_at = ?2 WHERE run_id = ?1",
                        params![msg["run_id"].as_str(), now],
                    );
                    conn.execute(
                        "INSERT INTO results (uuid, plugin, status, output, run_id, ts, changed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                         ON CONFLICT (uuid, plugin) DO UPDATE SET status = excluded.status,
                           output = excluded.output, run_id = excluded.run_id, ts = excluded.ts",
                        params![
                            msg["uuid"].as_str(),
                            msg["plugin"].as_str(),
                            msg["status"].as_i64(),
                            msg["output"].as_str(),
                            msg["run_id"].as_str(),
                            now
                        ],
                    );
                }
            })
        };
        ResultSink {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ResultSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
