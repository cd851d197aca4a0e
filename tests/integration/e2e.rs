//! The whole system, end to end, as separate processes: two routers, every
//! sink (`vigil sink all`), the scheduler and an agent with shell-script
//! plugins, talking over loopback tcp exactly as on a real network.
//!
//! One scenario, in the order an operator would live it: plugins run on
//! schedule and on demand; a router is killed mid-run and results and acked
//! notifications keep arriving through the other; the agent is killed with
//! -9 right after a notification was accepted, restarted, and nothing acked
//! is lost; the notification handler sees each notification exactly once.
//! The scenario runs twice: in plaintext, and with CURVE on every socket
//! (the routers deciding keys in `derived` mode, the sinks and the
//! scheduler with a key of their own), as a secure fleet runs.

use crate::util;
use crate::util::db;

use db::TestDb;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use util::agent::{local_endpoint, quick_agent_env, send_notification};
use util::daemon::{wait_for, Daemon};
use util::Router;
use vigil::params;
use vigil::testkit::TempDir;

/// How long any step of the scenario may take. Generous: the scheduler,
/// resends and reconnects all work in seconds, and CI machines are slow.
const STEP: Duration = Duration::from_secs(60);

fn write_plugin(dir: &Path, name: &str, script: &str, interval: Option<u32>) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = format!(
        "name = {name}\ncommand = {}\ntimeout_s = 5\n",
        path.display()
    );
    if let Some(interval) = interval {
        conf.push_str(&format!("interval_s = {interval}\n"));
    }
    std::fs::write(dir.join(format!("{name}.conf")), conf).unwrap();
}

/// The keys of a CURVE run, written under the system's directory.
struct Keys {
    /// `VIGIL_ROUTER_KEY`: the routers' shared public key.
    router_public: String,
    /// The routers' own variables.
    router_env: Vec<(String, String)>,
    /// `VIGIL_CURVE_KEY` and `VIGIL_ROUTER_KEY` of the sinks and scheduler.
    backend_env: Vec<(String, String)>,
    /// The test's own back-end key (listed with the others).
    test: vigil::curve::ClientKeys,
}

impl Keys {
    fn new(dir: &Path) -> Keys {
        use vigil::curve::KeyPair;
        std::fs::create_dir_all(dir).unwrap();
        let make = |name: &str| {
            let pair = KeyPair::generate().expect("a CURVE key pair");
            pair.write(&dir.join(format!("{name}.key")))
                .expect("write key");
            pair
        };
        let (router, backend, test) = (make("router"), make("backend"), make("test"));
        let list = dir.join("backend.keys");
        std::fs::write(
            &list,
            format!("{} sinks-scheduler\n{} test\n", backend.public, test.public),
        )
        .unwrap();
        std::fs::write(dir.join("sink.keys"), format!("{} sinks\n", backend.public)).unwrap();
        let path = |name: &str| dir.join(name).display().to_string();
        let router_public = router.public.to_z85();
        Keys {
            router_env: vec![
                ("VIGIL_CURVE_KEY".into(), path("router.key")),
                ("VIGIL_CLIENT_AUTH".into(), "derived".into()),
                ("VIGIL_BACKEND_KEYS".into(), path("backend.keys")),
                ("VIGIL_SINK_KEYS".into(), path("sink.keys")),
            ],
            backend_env: vec![
                ("VIGIL_CURVE_KEY".into(), path("backend.key")),
                ("VIGIL_ROUTER_KEY".into(), router_public.clone()),
            ],
            router_public,
            test: vigil::curve::ClientKeys {
                own: test,
                router: router.public,
            },
        }
    }

    /// The agent's: CURVE to the routers, speaking as its derived UUID.
    fn agent_env(&self) -> Vec<(String, String)> {
        vec![
            ("VIGIL_ROUTER_KEY".into(), self.router_public.clone()),
            ("VIGIL_CLIENT_AUTH".into(), "derived".into()),
        ]
    }
}

/// Everything the scenario starts, so it can restart parts.
struct System {
    dir: TempDir,
    keys: Option<Keys>,
    /// SQLite in `dir`, or PostgreSQL in the second test pass.
    db: TestDb,
    handled: PathBuf,
    routers: Vec<Option<Router>>,
    /// VIGIL_ROUTERS of the agent.
    router_clients: String,
    _sinks: Daemon,
    _scheduler: Daemon,
    agent: Daemon,
}

impl System {
    fn start(curve: bool) -> System {
        let dir = TempDir::new("e2e");
        let keys = curve.then(|| Keys::new(&dir.join("keys")));
        let db = TestDb::in_dir(&dir.0);
        let handled = dir.join("handled.jsonl");
        let plugins = dir.join("plugins.d");
        std::fs::create_dir_all(&plugins).unwrap();
        write_plugin(
            &plugins,
            "e2e_ok",
            "echo 'OK - fine | load=0.5;4;8;0'",
            Some(1),
        );
        write_plugin(
            &plugins,
            "e2e_manual",
            "echo 'WARNING - asked for'; exit 1",
            None,
        );
        std::fs::write(dir.join("machine-id"), "e2e-machine\n").unwrap();

        let start_router = |name: &str| {
            let mut builder = Router::builder(name);
            for (k, v) in keys.iter().flat_map(|k| &k.router_env) {
                builder = builder.env(k, v);
            }
            builder.start()
        };
        let routers = vec![start_router("e2e-a"), start_router("e2e-b")];
        let backend_env: Vec<(&str, String)> = keys
            .iter()
            .flat_map(|k| &k.backend_env)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let sink_connect = util::sink_connect(&routers);
        let backends = util::backend_endpoints(&routers);
        let sinks = Daemon::start(
            "sinks",
            &["sink", "all"],
            &[
                ("VIGIL_DB", db.value.clone()),
                ("VIGIL_SINK_CONNECT", sink_connect),
                ("VIGIL_BACKENDS", backends.clone()),
                (
                    "VIGIL_NOTIFY_COMMAND",
                    format!("cat >> '{0}'; echo >> '{0}'", handled.display()),
                ),
                // Nothing listens there: stats wait in the writer's buffer.
                ("VIGIL_GRAPHITE", "127.0.0.1:9".to_string()),
            ]
            .into_iter()
            .chain(backend_env.iter().cloned())
            .collect::<Vec<_>>(),
        );
        let scheduler = Daemon::start(
            "scheduler",
            &["scheduler"],
            &[
                ("VIGIL_DB", db.value.clone()),
                ("VIGIL_BACKENDS", backends),
                ("VIGIL_BACKEND_TIMEOUT_MS", "1000".to_string()),
            ]
            .into_iter()
            .chain(backend_env.iter().cloned())
            .collect::<Vec<_>>(),
        );
        let routers: Vec<Option<Router>> = routers.into_iter().map(Some).collect();
        let router_clients = util::client_endpoints(routers.iter().flatten());
        let agent_env = keys.as_ref().map(Keys::agent_env).unwrap_or_default();
        let agent = start_agent(&dir, &router_clients, &agent_env);
        System {
            agent,
            dir,
            keys,
            db,
            handled,
            routers,
            router_clients,
            _sinks: sinks,
            _scheduler: scheduler,
        }
    }

    fn start_agent(&self) -> Daemon {
        let env = self.keys.as_ref().map(Keys::agent_env).unwrap_or_default();
        start_agent(&self.dir, &self.router_clients, &env)
    }

    /// A back-end request to `router`, with the test's key under CURVE.
    fn request(&self, router: &Router, body: &[u8]) -> Value {
        let Some(keys) = &self.keys else {
            return router.request(body);
        };
        let req = router.ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.set_rcvtimeo(10_000).unwrap();
        keys.test.apply(&req).expect("CURVE client keys");
        req.connect(&router.backend).unwrap();
        req.send(body, 0).unwrap();
        let reply = req.recv_bytes(0).expect("a back-end reply within 10 s");
        serde_json::from_slice(&reply).expect("a JSON reply")
    }

    fn local(&self) -> String {
        local_endpoint(&self.dir)
    }

    fn uuid(&self) -> String {
        self.agent
            .ready_field("uuid")
            .expect("uuid in the agent's ready line")
    }

    fn db(&self) -> &TestDb {
        &self.db
    }

    /// `vigil send notification ...`: returns the id the agent gave it.
    fn notify(&self, message: &str) -> String {
        send_notification(&self.local(), "e2e", message)
    }

    /// The notifications the handler received, one JSON object per line.
    fn handled(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.handled)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the handler got JSON"))
            .collect()
    }

    fn handled_count(&self, id: &str) -> usize {
        self.handled()
            .iter()
            .filter(|n| n["id"] == json!(id))
            .count()
    }

    fn wait_handled(&self, id: &str) {
        wait_for(&format!("notification {id} at the handler"), STEP, || {
            (self.handled_count(id) > 0).then_some(())
        });
    }

    /// Waits for a result of `plugin` received after `after` (store time),
    /// that a scheduled run produced; returns its receive time.
    fn wait_scheduled_result(&self, plugin: &str, after: f64) -> f64 {
        let uuid = self.uuid();
        wait_for(
            &format!("a scheduled {plugin} result after {after}"),
            STEP,
            || {
                self.db().value::<f64>(
                    "SELECT r.ts FROM results r JOIN runs u ON u.run_id = r.run_id
                     WHERE r.uuid = ?1 AND r.plugin = ?2 AND r.ts > ?3 AND r.status = 0
                       AND u.completed_at IS NOT NULL",
                    params![&uuid, plugin, after],
                )
            },
        )
    }

    /// Asks a live router's back end to run `plugin` on the agent now.
    fn run_plugin_now(&self, plugin: &str, run_id: &str) {
        let request =
            json!({"type": "run_plugin", "to": self.uuid(), "plugin": plugin, "run_id": run_id});
        let delivered = self.routers.iter().flatten().any(|router| {
            self.request(router, request.to_string().as_bytes())["ok"] == json!(true)
        });
        assert!(delivered, "no router could deliver run_plugin");
    }

    /// Waits until the agent reports no acked message left in its spool,
    /// in a stats line logged after `after_lines` lines: every ack is in,
    /// so no resend (and no duplicate) can still come.
    fn wait_spool_empty(&self, after_lines: usize) {
        wait_for("the agent's spool to empty", STEP, || {
            self.agent.log_lines()[after_lines..]
                .iter()
                .any(|l| l.contains("stats:") && l.contains(" spool_live=0 "))
                .then_some(())
        });
    }
}

/// The agent, configured with every router (dead or alive, as an operator's
/// configuration would be).
fn start_agent(dir: &TempDir, routers: &str, extra: &[(String, String)]) -> Daemon {
    let routers = routers.to_string();
    Daemon::start(
        "agent",
        &["agent"],
        &quick_agent_env(dir, routers, &dir.join("plugins.d"))
            .into_iter()
            .chain(extra.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn plugins_and_acked_notifications_survive_router_and_agent_failures() {
    scenario(false);
}

#[test]
fn the_same_with_curve_on_every_socket() {
    scenario(true);
}

fn scenario(curve: bool) {
    let mut system = System::start(curve);
    let uuid = system.uuid();

    // Scheduled: the scheduler sends run_plugin, the agent runs the plugin,
    // the result sink records it against the run.
    let first = system.wait_scheduled_result("e2e_ok", 0.0);
    let registered: i64 = system.db().count(
        "SELECT count(*) FROM plugins WHERE uuid = ?1 AND name IN ('e2e_ok', 'e2e_manual')",
        params![&uuid],
    );
    assert_eq!(registered, 2, "the agent registered both plugins");

    // On demand: an operator's run_plugin for a plugin with no schedule.
    system.run_plugin_now("e2e_manual", "e2e-on-demand-1");
    wait_for("the on-demand result", STEP, || {
        system
            .db()
            .value::<i64>(
                "SELECT status FROM results WHERE uuid = ?1 AND plugin = 'e2e_manual' AND run_id = 'e2e-on-demand-1'",
                params![&uuid],
            )
            .filter(|status| *status == 1)
    });

    // An acked notification through both routers.
    let n1 = system.notify("first");
    system.wait_handled(&n1);

    // Router A dies mid-run: results and acked notifications keep coming
    // through router B.
    drop(system.routers[0].take());
    let before = system.wait_scheduled_result("e2e_ok", first);
    system.wait_scheduled_result("e2e_ok", before);
    let n2 = system.notify("second, with a router down");
    system.wait_handled(&n2);

    // The agent is killed with -9 right after a notification was accepted
    // (its ack may or may not have come back), then restarted.
    let n3 = system.notify("third, the agent dies");
    system.agent.kill9();
    system.agent = system.start_agent();
    let restarted_at = util::now_secs();
    assert_eq!(system.uuid(), uuid, "the restarted agent keeps its UUID");
    system.wait_handled(&n3);
    let lines = system.agent.log_lines().len();
    system.wait_spool_empty(lines);
    // Scheduled runs reach the restarted agent: a result received after it
    // came back (the row holds only the latest).
    system.wait_scheduled_result("e2e_ok", restarted_at);

    // Exactly once, for each of them, at the handler and in the store.
    for id in [&n1, &n2, &n3] {
        assert_eq!(system.handled_count(id), 1, "handler saw {id} once");
        let logged: i64 = system.db().count(
            "SELECT count(*) FROM notifications WHERE uuid = ?1 AND id = ?2",
            params![&uuid, id],
        );
        assert_eq!(logged, 1, "one notification row for {id}");
    }
}
