//! Integration tests of `vigil status`: a store populated directly, a live
//! `vigil router` and an endpoint where nothing listens; the real binary's
//! table and `--json` output are checked.

use crate::util;
use crate::util::db;

use crate::util::sched;

use serde_json::Value;

use sched::{run_vigil, TestStore};
use util::{now_secs, Router};
use vigil::params;

const UP: &str = "11111111-1111-4111-8111-111111111111";
const DOWN: &str = "22222222-2222-4222-8222-222222222222";

/// A tcp endpoint on which nothing listens (a port just released).
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("tcp://127.0.0.1:{port}")
}

fn populated() -> TestStore {
    let store = TestStore::new();
    let now = now_secs();
    store.add_client(UP, "web1", Some((now - 5.0, 10.0)));
    store.add_client(DOWN, "db1", Some((now - 600.0, 10.0)));
    store.add_plugin(UP, "disk", 60.0, 10.0);
    store.add_plugin(UP, "load", 60.0, 10.0);
    store.add_plugin(DOWN, "pending_one", 60.0, 10.0);
    for (uuid, plugin, status, output) in [
        (UP, "disk", 2i64, "DISK CRITICAL - / at 97%\nperfdata line"),
        (UP, "load", 0, "LOAD OK - 0.12"),
    ] {
        store.db.execute(
            "INSERT INTO results (uuid, plugin, status, output, ts, changed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![uuid, plugin, status, output, now - 30.0],
        );
    }
    for (n, message) in ["first notification", "disk almost full on web1"]
        .iter()
        .enumerate()
    {
        let id = format!("n{n}");
        store.db.execute(
            "INSERT INTO notifications (uuid, id, origin, severity, source, message, hostname, body, created_at, state)
             VALUES (?1, ?2, 'client', 'critical', 'disk', ?3, 'web1', '{}', ?4, 'handled')",
            params![UP, &id, *message, now - 100.0 + n as f64],
        );
    }
    store
}

fn env(store: &TestStore, backends: &[&str]) -> Vec<(String, String)> {
    vec![
        ("VIGIL_DB".into(), store.value()),
        ("VIGIL_BACKENDS".into(), backends.join(",")),
        ("VIGIL_BACKEND_TIMEOUT_MS".into(), "500".into()),
    ]
}

/// The line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn table_shows_clients_plugins_notifications_and_routers() {
    let router = Router::start("r-status");
    let store = populated();
    let dead = dead_endpoint();
    let out = run_vigil(&["status"], &env(&store, &[&router.backend, &dead]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let web1 = line_with(&text, UP);
    assert!(
        web1.contains("web1") && web1.contains(" UP ") && web1.contains("s ago"),
        "{web1}"
    );
    let db1 = line_with(&text, DOWN);
    assert!(db1.contains("db1") && db1.contains(" DOWN "), "{db1}");

    let disk = line_with(&text, "DISK CRITICAL");
    assert!(
        disk.contains("web1") && disk.contains(" CRITICAL "),
        "{disk}"
    );
    assert!(
        !text.contains("perfdata line"),
        "only the first output line:\n{text}"
    );
    assert!(line_with(&text, "LOAD OK").contains(" OK "));
    assert!(line_with(&text, "pending_one").contains(" PENDING "));

    let newest = text.find("disk almost full").expect("notification");
    let older = text.find("first notification").expect("notification");
    assert!(newest < older, "newest first:\n{text}");

    let live = line_with(&text, &router.backend);
    assert!(live.contains("r-status") && live.contains(" up "), "{live}");
    assert!(line_with(&text, &dead).contains("unreachable"));
    for heading in [
        "CLIENTS (2)",
        "PLUGINS (3)",
        "RECENT NOTIFICATIONS (2)",
        "ROUTERS (2)",
    ] {
        assert!(text.contains(heading), "{heading} in:\n{text}");
    }
}

#[test]
fn json_has_the_same_for_scripts() {
    let router = Router::start("r-json");
    let store = populated();
    let dead = dead_endpoint();
    let out = run_vigil(
        &["status", "--json", "--notifications", "1"],
        &env(&store, &[&router.backend, &dead]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");

    let clients = doc["clients"].as_array().expect("clients");
    let state = |uuid: &str| {
        clients
            .iter()
            .find(|c| c["uuid"] == uuid)
            .map(|c| c["state"].clone())
    };
    assert_eq!(state(UP), Some(Value::from("up")));
    assert_eq!(state(DOWN), Some(Value::from("down")));

    let plugins = doc["plugins"].as_array().expect("plugins");
    let disk = plugins
        .iter()
        .find(|p| p["plugin"] == "disk")
        .expect("disk");
    assert_eq!(disk["state"], "CRITICAL");
    assert_eq!(disk["status"], 2);
    assert_eq!(disk["hostname"], "web1");
    assert!(disk["output"]
        .as_str()
        .unwrap()
        .starts_with("DISK CRITICAL"));
    let pending = plugins
        .iter()
        .find(|p| p["plugin"] == "pending_one")
        .expect("pending");
    assert_eq!(pending["state"], "PENDING");
    assert_eq!(pending["status"], Value::Null);

    let notes = doc["notifications"].as_array().expect("notifications");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["message"], "disk almost full on web1");

    let routers = doc["routers"].as_array().expect("routers");
    assert_eq!(routers.len(), 2);
    assert_eq!(routers[0]["reachable"], true);
    assert_eq!(routers[0]["status"]["router"], "r-json");
    assert!(routers[0]["status"]["counters"]["received"].is_u64());
    assert_eq!(routers[1]["reachable"], false);
    assert_eq!(routers[1]["endpoint"], dead.as_str());
}

#[test]
fn a_missing_store_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("vigil-missing-{}", uuid::Uuid::new_v4()));
    let path = dir.join("vigil.db");
    let env = vec![("VIGIL_DB".to_string(), path.display().to_string())];
    let out = run_vigil(&["status"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("not found"),
        "{stderr}"
    );
    // Looking did not create it.
    assert!(!path.exists() && !dir.exists());
}

#[test]
fn bad_arguments_and_variables_are_refused() {
    let store = populated();
    let out = run_vigil(&["status", "--bogus"], &env(&store, &["tcp://127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run_vigil(&["status"], &env(&store, &["not-an-endpoint"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VIGIL_BACKENDS"));
}

#[test]
fn a_database_without_vigil_schema_is_refused() {
    // An empty SQLite file, or (second pass) a fresh PostgreSQL database:
    // a reachable database that no sink ever wrote to.
    let dir = TestDir::new();
    let db = db::TestDb::in_dir(&dir.0);
    if !db.is_postgres() {
        std::fs::write(&db.value, b"").expect("an empty file");
    }
    let env = vec![("VIGIL_DB".to_string(), db.value.clone())];
    let out = run_vigil(&["status"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a vigil store"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    if !db.is_postgres() {
        // Looking did not create a schema.
        let len = std::fs::metadata(&db.value).expect("the file").len();
        assert_eq!(len, 0);
    }
}

/// A directory removed on drop.
struct TestDir(std::path::PathBuf);

impl TestDir {
    fn new() -> TestDir {
        let dir = std::env::temp_dir().join(format!("vigil-empty-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create dir");
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
