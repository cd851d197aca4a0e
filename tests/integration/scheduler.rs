//! Integration tests of `vigil scheduler`: real scheduler and router
//! processes, simulated agents answering `run_plugin` over real sockets,
//! and the store (SQLite, or PostgreSQL in the second pass) populated
//! directly. Intervals are 1-2 s; every
//! wait polls a condition under a deadline.

use crate::util;

use crate::util::sched;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sched::{slot, wait_for, Agent, Received, ResultSink, Scheduler, TestStore, LONG_WAIT};
use util::{counter, now_secs, Router};
use vigil::params;

/// severity, source, message, hostname, body, state, next_attempt_at.
type NotificationRow = (String, String, String, String, String, String, Option<f64>);

/// A fresh heartbeat that stays fresh for the whole test.
fn fresh() -> Option<(f64, f64)> {
    Some((now_secs(), 60.0))
}

/// Asserts every received run is recorded for this agent and plugin, its
/// run_id unique, and no two runs of a plugin fall in the same slot.
/// Returns the slots per plugin.
fn check_once_per_slot(
    store: &TestStore,
    agent: &Agent,
    intervals: &[(&str, f64)],
) -> BTreeMap<String, Vec<i64>> {
    let runs = store.runs();
    let received = agent.received();
    let ids: BTreeSet<&str> = received.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        received.len(),
        "a run_id arrived twice: {received:?}"
    );
    let mut slots: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for Received {
        plugin,
        run_id,
        frame,
    } in &received
    {
        assert_eq!(frame["to"], agent.uuid.as_str(), "{frame}");
        assert_eq!(
            frame.as_object().map(|o| o.len()),
            Some(4),
            "fields of {frame}"
        );
        let row = runs
            .get(run_id)
            .unwrap_or_else(|| panic!("run {run_id} reached the agent but is not in runs"));
        assert_eq!(
            (row.uuid.as_str(), row.plugin.as_str()),
            (agent.uuid.as_str(), plugin.as_str())
        );
        let interval = intervals
            .iter()
            .find(|(p, _)| p == plugin)
            .expect("known plugin")
            .1;
        slots.entry(plugin.clone()).or_default().push(slot(
            &agent.uuid,
            plugin,
            interval,
            row.sent_at,
        ));
    }
    for (plugin, list) in &slots {
        let distinct: BTreeSet<_> = list.iter().collect();
        assert_eq!(
            distinct.len(),
            list.len(),
            "{plugin}: two runs in one slot: {list:?}"
        );
    }
    slots
}

/// One live agent on router r1 answering `plugins`, each declared with its
/// interval (seconds; timeout 5 s), and a result sink, in start-up order
/// (bound in that order, they drop the other way round, the sink first).
fn one_agent(plugins: &[(&str, f64)]) -> (Router, TestStore, Agent, ResultSink) {
    let router = Router::start("r1");
    let store = TestStore::new();
    let names: Vec<&str> = plugins.iter().map(|(name, _)| *name).collect();
    let agent = Agent::start(&[&router], &names);
    store.add_client(&agent.uuid, "web1", fresh());
    for (name, interval) in plugins {
        store.add_plugin(&agent.uuid, name, *interval, 5.0);
    }
    let sink = ResultSink::start(&store, &[&router]);
    (router, store, agent, sink)
}

/// Waits until every run the agent received is completed in the store
/// (its result came back through the router); their run ids.
fn wait_received_runs_completed(store: &TestStore, agent: &Agent) -> Vec<String> {
    let received: Vec<String> = agent.received().into_iter().map(|r| r.run_id).collect();
    wait_for(LONG_WAIT, "received runs completed", || {
        let runs = store.runs();
        received
            .iter()
            .all(|id| runs[id].completed_at.is_some())
            .then_some(())
    });
    received
}

#[test]
fn runs_each_plugin_once_per_interval_and_records_it() {
    let (router, store, agent, _sink) = one_agent(&[("alpha", 1.0), ("beta", 2.0)]);
    let mut scheduler = Scheduler::start("s1", &store, &[&router], &[]);
    assert!(
        scheduler.ready.contains("ready: scheduler=s1 "),
        "{}",
        scheduler.ready
    );

    agent.wait_runs("alpha", 4);
    agent.wait_runs("beta", 2);
    let slots = check_once_per_slot(&store, &agent, &[("alpha", 1.0), ("beta", 2.0)]);
    // Slots in order, none doubled. (A slot may be skipped only if the
    // machine stalls the scheduler past its end: not asserted.)
    for (plugin, list) in &slots {
        for pair in list.windows(2) {
            assert!(pair[1] > pair[0], "{plugin}: slots {list:?}");
        }
    }
    // The results came back through the router: the runs are completed,
    // none overdue, and due_by is sent_at + timeout + grace.
    let received = wait_received_runs_completed(&store, &agent);
    let runs = store.runs();
    assert!(runs.values().all(|r| !r.overdue), "{runs:?}");
    for id in &received {
        let row = &runs[id];
        assert!(
            (row.due_by - (row.sent_at + 5.0 + 1.0)).abs() < 1e-6,
            "{row:?}"
        );
    }
    assert_eq!(store.lease_holder().as_deref(), Some("s1"));

    // SIGTERM: exit 0, lease released for a peer.
    scheduler.signal("-TERM");
    assert!(scheduler.wait_exit(LONG_WAIT).success());
    assert_eq!(store.count("SELECT COUNT(*) FROM leases", params![]), 0);
}

#[test]
fn stale_clients_wait_until_their_heartbeat_returns() {
    let router = Router::start("r1");
    let store = TestStore::new();
    let live = Agent::start(&[&router], &["p"]);
    let stale = Agent::start(&[&router], &["p"]);
    let silent = Agent::start(&[&router], &["p"]);
    store.add_client(&live.uuid, "live", fresh());
    // Last heartbeat 100 s ago at a 10 s interval: down with grace 3.
    store.add_client(&stale.uuid, "stale", Some((now_secs() - 100.0, 10.0)));
    // Never sent a heartbeat.
    store.add_client(&silent.uuid, "silent", None);
    for agent in [&live, &stale, &silent] {
        store.add_plugin(&agent.uuid, "p", 1.0, 5.0);
    }
    let _sink = ResultSink::start(&store, &[&router]);
    let _scheduler = Scheduler::start("s1", &store, &[&router], &[]);

    live.wait_runs("p", 3);
    assert_eq!(stale.count("p"), 0, "a stale client was scheduled");
    assert_eq!(
        silent.count("p"),
        0,
        "a client without heartbeat was scheduled"
    );
    let others = store.count(
        "SELECT COUNT(*) FROM runs WHERE uuid IN (?1, ?2)",
        params![&stale.uuid, &silent.uuid],
    );
    assert_eq!(others, 0);

    // Its heartbeat returns: it is scheduled again.
    store.set_heartbeat(&stale.uuid, now_secs());
    stale.wait_runs("p", 2);
    check_once_per_slot(&store, &stale, &[("p", 1.0)]);
    assert_eq!(silent.count("p"), 0);
}

#[test]
fn a_run_without_result_becomes_unknown_overdue_with_one_notification() {
    let router = Router::start("r1");
    let store = TestStore::new();
    // Answers "fast", never "slow".
    let agent = Agent::start(&[&router], &["fast"]);
    store.add_client(&agent.uuid, "db1", fresh());
    store.add_plugin(&agent.uuid, "fast", 1.0, 1.0);
    store.add_plugin(&agent.uuid, "slow", 1.0, 1.0);
    let _sink = ResultSink::start(&store, &[&router]);
    let _scheduler = Scheduler::start(
        "s1",
        &store,
        &[&router],
        &[("VIGIL_RESULT_GRACE_SECS", "1")],
    );

    let uuid = agent.uuid.as_str();
    wait_for(LONG_WAIT, "three overdue runs of slow", || {
        let n = store.count(
            "SELECT COUNT(*) FROM runs WHERE uuid = ?1 AND plugin = 'slow' AND overdue = 1",
            params![uuid],
        );
        (n >= 3).then_some(())
    });
    let result = store.db.rows(
        "SELECT status, output FROM results WHERE uuid = ?1 AND plugin = 'slow'",
        params![uuid],
    );
    let row = result.first().expect("result row of slow");
    let (status, output): (i64, String) =
        (row.get(0).expect("status"), row.get(1).expect("output"));
    assert_eq!((status, output.as_str()), (3, "result overdue"));
    // An overdue run is one that was sent and not completed.
    for row in store.runs().values().filter(|r| r.overdue) {
        assert_eq!(row.plugin, "slow");
        assert!(row.completed_at.is_none());
    }
    // One notification for the plugin becoming overdue, not one per run.
    let rows: Vec<NotificationRow> = store
        .db
        .rows("SELECT severity, source, message, hostname, body, state, next_attempt_at FROM notifications WHERE origin = 'scheduler'", params![])
        .into_iter()
        .map(|r| {
            (
                r.get(0).expect("severity"),
                r.get(1).expect("source"),
                r.get(2).expect("message"),
                r.get(3).expect("hostname"),
                r.get(4).expect("body"),
                r.get(5).expect("state"),
                r.get(6).expect("next_attempt_at"),
            )
        })
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (severity, source, message, hostname, body, state, next_attempt_at) = &rows[0];
    assert_eq!((state.as_str(), hostname.as_str()), ("pending", "db1"));
    assert!(next_attempt_at.is_some());
    assert!(
        message.contains("slow") && message.contains("result overdue"),
        "{message}"
    );
    let body: serde_json::Value = serde_json::from_str(body).expect("body JSON");
    assert_eq!(body["type"], "notification");
    assert_eq!(body["uuid"], uuid);
    assert_eq!(body["severity"], severity.as_str());
    assert_eq!(body["source"], source.as_str());
    assert_eq!(body["message"], message.as_str());
    assert_eq!(body["hostname"], "db1");
    assert!(body["id"]
        .as_str()
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()));
    assert!(body["ts"].as_f64().is_some());
    // The answered plugin never went overdue.
    assert_eq!(
        store.count(
            "SELECT COUNT(*) FROM results WHERE uuid = ?1 AND plugin = 'fast' AND status = 0",
            params![uuid]
        ),
        1
    );
}

#[test]
fn fails_over_to_the_router_the_client_is_connected_to() {
    let r1 = Router::start("r1");
    let r2 = Router::start("r2");
    let store = TestStore::new();
    let agent = Agent::start(&[&r2], &["p"]);
    store.add_client(&agent.uuid, "web2", fresh());
    store.add_plugin(&agent.uuid, "p", 1.0, 5.0);
    let _sink = ResultSink::start(&store, &[&r1, &r2]);
    let _scheduler = Scheduler::start("s1", &store, &[&r1, &r2], &[]);

    agent.wait_runs("p", 3);
    check_once_per_slot(&store, &agent, &[("p", 1.0)]);
    assert!(counter(&r2.status(), "delivered") >= 3);
    // r1 was asked first and had no route.
    assert!(counter(&r1.status(), "undeliverable") >= 1);
}

#[test]
fn a_client_no_router_knows_is_retried_each_interval_not_hammered() {
    let router = Router::start("r1");
    let store = TestStore::new();
    let agent = Agent::start(&[&router], &["p"]);
    let ghost = uuid::Uuid::new_v4().to_string();
    store.add_client(&agent.uuid, "here", fresh());
    store.add_client(&ghost, "ghost", fresh());
    store.add_plugin(&agent.uuid, "p", 1.0, 1.0);
    store.add_plugin(&ghost, "p", 1.0, 1.0);
    let _sink = ResultSink::start(&store, &[&router]);
    let scheduler = Scheduler::start("s1", &store, &[&router], &[]);

    agent.wait_runs("p", 3);
    let attempts_then = counter(&router.status(), "undeliverable");
    assert!(attempts_then >= 1, "the ghost was never tried");
    agent.wait_runs("p", 8);
    let attempts = counter(&router.status(), "undeliverable") - attempts_then;
    // Five more slots of the agent's plugin passed: the ghost's plugin has
    // the same interval, so about as many tries, not a stream.
    assert!(attempts <= 7, "{attempts} attempts during 5 intervals");
    assert!(attempts >= 1, "{attempts} attempts during 5 intervals");
    // A run no router took is not left to go overdue.
    assert_eq!(
        store.count(
            "SELECT COUNT(*) FROM runs WHERE uuid = ?1 AND overdue = 1",
            params![&ghost]
        ),
        0
    );
    let logged = scheduler
        .log_lines()
        .iter()
        .filter(|l| l.contains(&ghost) && l.contains("no route"))
        .count();
    assert!(logged >= 1, "no warning about the unroutable client");
}

/// [`one_agent`] declaring `p` and `q` every second, and two schedulers
/// with a 2 s lease: s1 holding it, s2 standing by.
fn s1_holding_s2_standing_by() -> (Router, TestStore, Agent, ResultSink, Scheduler, Scheduler) {
    let (router, store, agent, sink) = one_agent(&[("p", 1.0), ("q", 1.0)]);
    let lease = [("VIGIL_LEASE_SECS", "2")];
    let first = Scheduler::start("s1", &store, &[&router], &lease);
    wait_for(LONG_WAIT, "s1 to hold the lease", || {
        (store.lease_holder().as_deref() == Some("s1")).then_some(())
    });
    let second = Scheduler::start("s2", &store, &[&router], &lease);
    (router, store, agent, sink, first, second)
}

#[test]
fn a_standby_takes_over_when_the_holder_is_killed() {
    let (_router, store, agent, _sink, first, second) = s1_holding_s2_standing_by();
    agent.wait_runs("p", 3);
    assert_eq!(store.lease_holder().as_deref(), Some("s1"));

    first.signal("-KILL");
    let before = agent.count("p");
    wait_for(LONG_WAIT, "s2 to take the lease over", || {
        (store.lease_holder().as_deref() == Some("s2")).then_some(())
    });
    agent.wait_runs("p", before + 3);
    agent.wait_runs("q", before + 3);
    // Across the handover: each run once, never two in one slot.
    check_once_per_slot(&store, &agent, &[("p", 1.0), ("q", 1.0)]);
    assert!(second
        .log_lines()
        .iter()
        .any(|l| l.contains("lease taken by s2")));
    drop(first);
}

#[test]
fn sigterm_releases_the_lease_to_the_standby_at_once() {
    let (router, store, agent, _sink) = one_agent(&[("p", 1.0)]);
    // A lease far longer than the wait below: only a release lets s2 in.
    let lease = [("VIGIL_LEASE_SECS", "600")];
    let mut first = Scheduler::start("s1", &store, &[&router], &lease);
    wait_for(LONG_WAIT, "s1 to hold the lease", || {
        (store.lease_holder().as_deref() == Some("s1")).then_some(())
    });
    let _second = Scheduler::start("s2", &store, &[&router], &lease);
    agent.wait_runs("p", 2);
    first.signal("-TERM");
    assert!(first.wait_exit(LONG_WAIT).success());
    wait_for(
        Duration::from_secs(20),
        "s2 to take the released lease",
        || (store.lease_holder().as_deref() == Some("s2")).then_some(()),
    );
    let before = agent.count("p");
    agent.wait_runs("p", before + 2);
    check_once_per_slot(&store, &agent, &[("p", 1.0)]);
}

#[test]
fn bad_configuration_stops_with_status_2_naming_the_variable() {
    let store = TestStore::new();
    for (var, value) in [
        ("VIGIL_LEASE_SECS", "0"),
        ("VIGIL_HEARTBEAT_GRACE", "-1"),
        ("VIGIL_BACKENDS", "localhost:5556"),
        ("VIGIL_RESULT_GRACE_SECS", "soon"),
    ] {
        let env = vec![
            ("VIGIL_DB".to_string(), store.value()),
            (var.to_string(), value.to_string()),
        ];
        let out = sched::run_vigil(&["scheduler"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

#[test]
fn a_holder_frozen_past_its_lease_sends_nothing_when_it_wakes() {
    let (_router, store, agent, _sink, first, second) = s1_holding_s2_standing_by();
    agent.wait_runs("p", 2);

    // Frozen (as by a long GC pause, a VM stall or SIGSTOP), s1 cannot
    // renew; s2 takes over; s1 wakes still believing it holds the lease.
    first.signal("-STOP");
    wait_for(LONG_WAIT, "s2 to take the lease over", || {
        (store.lease_holder().as_deref() == Some("s2")).then_some(())
    });
    let before = agent.count("p");
    agent.wait_runs("p", before + 2);
    first.signal("-CONT");
    wait_for(LONG_WAIT, "s1 to notice it lost the lease", || {
        first
            .log_lines()
            .iter()
            .any(|l| l.contains("lease lost by s1"))
            .then_some(())
    });
    let before = agent.count("p");
    agent.wait_runs("p", before + 2);
    agent.wait_runs("q", before + 2);
    check_once_per_slot(&store, &agent, &[("p", 1.0), ("q", 1.0)]);
    assert_eq!(store.lease_holder().as_deref(), Some("s2"));
    drop(second);
}

#[test]
fn a_silent_router_is_passed_over() {
    let (router, store, agent, _sink) = one_agent(&[("p", 1.0)]);
    // Nothing listens on the first back end: its requests time out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!(
        "tcp://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    drop(listener);
    let _scheduler = Scheduler::start_on("s1", &store, &[&dead, &router.backend], &[]);
    agent.wait_runs("p", 3);
    check_once_per_slot(&store, &agent, &[("p", 1.0)]);
    wait_received_runs_completed(&store, &agent);
}
