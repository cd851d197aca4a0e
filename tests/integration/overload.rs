//! Overload without loss, from the outside: real `vigil router` processes
//! (and, for the fleet, a real `vigil sink` and `vigil agent`) on
//! ephemeral ports, flooded by DEALER clients.
//!
//! What must hold: while a type's sinks are connected and draining, no
//! valid message is refused, however fast clients send and whether or not
//! they read replies (the router pushes back through libzmq's high-water
//! marks instead); a type whose sinks are absent is answered `overloaded`,
//! but only after `VIGIL_OVERLOAD_WAIT_MS`, and it holds nothing else up.
//! Waits are bounded; nothing here depends on how fast the machine is.

use crate::util;

use crate::util::sinks as sinks_util;

use crate::util::agent as agent_util;

use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use util::{check_error, count_in, counter, sync_sinks, Client, Router, WAIT};

/// Bound on a whole flood's delivery, however loaded the machine.
const FLOOD_LIMIT: Duration = Duration::from_secs(120);

/// Polls the router's `status` until `check` holds (bounded by `WAIT`).
fn wait_for_status(router: &Router, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = router.status();
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stats message of about 200 bytes, numbered.
fn stats(client: &Client, n: u64) -> Vec<u8> {
    client.frame(
        "stats",
        json!({"n": n, "metrics": {"load": 0.5, "pad": "x".repeat(100)}}),
    )
}

/// Many clients flood a type whose queue is tiny, never reading a reply,
/// with a sink connected only after the flood began (so the queue is full
/// at first and the router must hold input back). Every message reaches
/// the sink; none is refused; the router says it pushed back.
#[test]
fn a_flood_that_never_reads_replies_loses_nothing() {
    const CLIENTS: usize = 20;
    const EACH: u64 = 2_000;
    let router = Router::builder("ov-flood")
        .env("VIGIL_QUEUE_CAPACITY", "16")
        // Long enough that the late sink connects within it, however slow.
        .env("VIGIL_OVERLOAD_WAIT_MS", "60000")
        .start();
    let endpoint = router.client.clone();
    let senders: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let uuid = util::new_uuid();
                let client = Client::connect(&ctx, &[&endpoint], &uuid, None);
                client.sock.set_sndhwm(100).expect("sndhwm");
                client.sock.set_linger(-1).expect("linger: deliver all");
                for n in 0..EACH {
                    // Blocking sends: a full queue blocks the client, as
                    // back-pressure should; replies are never read.
                    client.send(&stats(&client, n));
                }
                drop(client);
            })
        })
        .collect();
    // Let the queue fill before any sink is there.
    wait_for_status(&router, "a back-pressure wait on stats", |status| {
        count_in(status, "backpressure_waits_by_type", "stats") >= 1
    });
    let sink = router.sink("stats");
    let total = CLIENTS as u64 * EACH;
    let deadline = Instant::now() + FLOOD_LIMIT;
    let mut got = 0u64;
    while got < total {
        assert!(
            Instant::now() < deadline,
            "the sink got {got} of {total} flooded messages within {FLOOD_LIMIT:?}; {}",
            router.status()
        );
        if sink.try_recv(Duration::from_millis(500)).is_some() {
            got += 1;
        }
    }
    for sender in senders {
        sender.join().expect("sender thread");
    }
    sink.expect_silence(Duration::from_millis(300), "nothing beyond the flood");
    let status = router.status();
    assert_eq!(counter(&status, "rejected"), 0, "none refused: {status}");
    assert_eq!(counter(&status, "forwarded"), total, "{status}");
    assert!(
        count_in(&status, "backpressure_waits_by_type", "stats") >= 1,
        "{status}"
    );
}

/// A type with no sink: its messages are queued up to the capacity, then
/// answered `overloaded` (with their id), but only once the queue stayed
/// full for the wait; then at once. The other types keep flowing, and the
/// back end still delivers.
#[test]
fn an_absent_type_is_answered_overloaded_after_the_wait_and_blocks_nothing() {
    const CAPACITY: usize = 8;
    const WAIT_MS: u64 = 300;
    let router = Router::builder("ov-absent")
        .env("VIGIL_QUEUE_CAPACITY", &CAPACITY.to_string())
        .env("VIGIL_OVERLOAD_WAIT_MS", &WAIT_MS.to_string())
        .start();
    let stats_sink = router.sink("stats");
    let client = router.client();
    client.expect_welcome("ov-absent");
    sync_sinks(&client, "stats", &[&stats_sink]);
    // The queue's capacity, and one more the sink thread takes in hand.
    for n in 0..=CAPACITY {
        let id = format!("queued-{n}");
        client.send(&client.frame("notification", json!({"id": id, "severity": "info"})));
    }
    // The queue is full: the next one waits out the bound, then is refused.
    let started = Instant::now();
    client.send(&client.frame("notification", json!({"id": "refused-0"})));
    let reply = client.recv_json("overloaded after the wait");
    let waited = started.elapsed();
    check_error(&reply, "overloaded", &json!("refused-0"), "notification");
    assert!(
        waited >= Duration::from_millis(WAIT_MS),
        "overloaded came after {waited:?}, before the {WAIT_MS} ms wait"
    );
    // Now the type is stuck: refused at once, the others flow.
    for n in 1..50 {
        let id = format!("refused-{n}");
        client.send(&client.frame("notification", json!({"id": id})));
        let msg = stats(&client, n);
        client.send(&msg);
        stats_sink.expect_frame(&msg, "stats while notification has no sink");
        let reply = client.recv_json("overloaded");
        check_error(&reply, "overloaded", &json!(id), "notification");
    }
    let other = router.client();
    other.expect_welcome("ov-absent");
    let body = json!({"to": other.uuid, "type": "ack", "id": "a1"}).to_string();
    assert_eq!(router.request(body.as_bytes()), json!({"ok": true}));
    assert_eq!(other.recv("delivery"), body.as_bytes());
    // The queued ones were kept: a sink connecting now gets them in order,
    // and the type is admitted again.
    let sink = router.sink("notification");
    for n in 0..=CAPACITY {
        let got = sink.recv("queued notification");
        assert_eq!(got.json()["id"], json!(format!("queued-{n}")));
    }
    let fence = client.frame("notification", json!({"id": "after"}));
    let deadline = Instant::now() + WAIT;
    loop {
        // The sink thread lowers the depth just after its last send, so a
        // fence sent at that instant may still be refused: send it again.
        assert!(
            Instant::now() < deadline,
            "the type was never admitted again"
        );
        client.send(&fence);
        match util::poll_any(&[&sink.sock, &client.sock], WAIT) {
            Some(0) => {
                assert!(sink.recv("fence").frame == fence, "the fence");
                break;
            }
            Some(_) => {
                let reply: Value = client.recv_json("overloaded while draining");
                check_error(&reply, "overloaded", &json!("after"), "fence");
            }
            None => panic!("the fence was neither forwarded nor refused"),
        }
    }
    let status = router.status();
    assert!(
        count_in(&status, "rejected_by_code", "overloaded") >= 50,
        "{status}"
    );
}

/// One simulated agent of the fleet: a DEALER that keeps what it sent, as
/// the real agent does, and sends again what a router refused.
struct FleetClient {
    client: Client,
    /// Every message sent, by id, in case a router refuses it.
    sent: HashMap<String, Vec<u8>>,
    /// Refused messages and when to send them again.
    retry: Vec<(Instant, Vec<u8>)>,
    /// Messages not yet taken by the DEALER (its queue was full).
    backlog: Vec<Vec<u8>>,
    heartbeats: u64,
    results: u64,
    refusals: u64,
}

impl FleetClient {
    fn send(&mut self, frame: Vec<u8>) {
        match self.client.sock.send(&frame[..], zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => self.backlog.push(frame),
            Err(e) => panic!("fleet send: {e}"),
        }
    }

    fn new_message(&mut self, ty: &str, extra: Value, now: Instant) {
        let id = util::token();
        let mut frame = self.client.frame(ty, extra);
        // The id goes in by hand to keep the rest of the frame as built.
        frame.pop();
        frame.extend_from_slice(format!(r#","id":"{id}"}}"#).as_bytes());
        self.sent.insert(id, frame.clone());
        let _ = now;
        self.send(frame);
    }

    /// Reads replies: only `overloaded` is expected, each for a message
    /// this client sent; it is sent again after a short backoff.
    fn read_replies(&mut self, now: Instant) {
        while let Ok(reply) = self.client.sock.recv_bytes(zmq::DONTWAIT) {
            let reply: Value = serde_json::from_slice(&reply).expect("JSON reply");
            check_error(&reply, "overloaded", &reply["id"], "fleet message");
            let id = reply["id"].as_str().expect("the refusal names the id");
            let frame = self
                .sent
                .get(id)
                .expect("a refusal of a message sent")
                .clone();
            self.refusals += 1;
            self.retry.push((now + Duration::from_millis(500), frame));
        }
    }

    /// Sends what is due: the backlog, then refused messages whose time came.
    fn flush(&mut self, now: Instant) {
        for frame in std::mem::take(&mut self.backlog) {
            self.send(frame);
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.retry = later;
        for (_, frame) in due {
            self.send(frame);
        }
    }

    fn idle(&self) -> bool {
        self.backlog.is_empty() && self.retry.is_empty()
    }
}

/// The number after `key=` in the last line of `lines` that contains
/// `marker`.
fn logged_number(lines: &[String], marker: &str, key: &str) -> Option<u64> {
    let line = lines.iter().rev().find(|l| l.contains(marker))?;
    let at = line.find(marker)? + marker.len();
    let rest = &line[at..];
    let start = rest.find(&format!("{key}="))? + key.len() + 1;
    rest[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Hundreds of simulated agents and one real `vigil agent` send heartbeats
/// and results through a real router to a real `vigil sink`, which is
/// frozen (SIGSTOP) for 10 s and then resumed. The router's tiny queue
/// fills, it holds input back, then answers `overloaded`; every client
/// keeps what was refused and sends it again. Afterwards every result is
/// in the store, the sink handled every heartbeat the router forwarded,
/// the real agent lost no refused message, and nobody was declared down.
#[test]
fn a_fleet_loses_nothing_while_its_sink_is_stopped_for_ten_seconds() {
    const FLEET: usize = 200;
    const FROZEN: Duration = Duration::from_secs(10);
    let router = Router::builder("ov-fleet")
        .env("VIGIL_QUEUE_CAPACITY", "64")
        .env("VIGIL_OVERLOAD_WAIT_MS", "300")
        .env("VIGIL_SINK_HWM", "50")
        .start();
    let dir = sinks_util::TempDir::new("overload-fleet");
    let db = dir.join("vigil.db");
    let sink = sinks_util::SinkBuilder::new(&["heartbeat", "result"], &[&router], &db)
        // A client is down after 20 intervals: well past the freeze for
        // the real agent (1 s heartbeats) and the fleet (interval_s 1).
        .env("VIGIL_HEARTBEAT_GRACE", "20")
        .env("VIGIL_STATS_INTERVAL_SECS", "1")
        .start();
    let agent = agent_util::AgentSetup::new(&dir, &router.client)
        .env("VIGIL_STATS_INTERVAL_SECS", "1")
        .start();
    let ctx = zmq::Context::new();
    let mut fleet: Vec<FleetClient> = (0..FLEET)
        .map(|_| {
            let uuid = util::new_uuid();
            let client = Client::connect(&ctx, &[&router.client], &uuid, Some(uuid.as_bytes()));
            client.sock.set_sndhwm(50).expect("sndhwm");
            FleetClient {
                client,
                sent: HashMap::new(),
                retry: Vec::new(),
                backlog: Vec::new(),
                heartbeats: 0,
                results: 0,
                refusals: 0,
            }
        })
        .collect();
    for member in &fleet {
        member.client.expect_welcome("ov-fleet");
    }

    // Each simulated agent sends a heartbeat and a result every second:
    // 2 s before the freeze, 10 s frozen, 3 s after.
    let start = Instant::now();
    let (freeze_at, thaw_at, stop_at) = (
        start + Duration::from_secs(2),
        start + Duration::from_secs(2) + FROZEN,
        start + Duration::from_secs(5) + FROZEN,
    );
    let (mut frozen, mut thawed) = (false, false);
    let mut next_round = start;
    let mut round = 0u64;
    loop {
        let now = Instant::now();
        if !frozen && now >= freeze_at {
            sink.signal(libc::SIGSTOP);
            frozen = true;
        }
        if frozen && !thawed && now >= thaw_at {
            sink.signal(libc::SIGCONT);
            thawed = true;
        }
        if now >= next_round && now < stop_at {
            for (i, member) in fleet.iter_mut().enumerate() {
                member.heartbeats += 1;
                member.new_message(
                    "heartbeat",
                    json!({"interval_s": 1, "hostname": format!("fleet{i}")}),
                    now,
                );
                member.results += 1;
                let plugin = format!("p{round}");
                member.new_message(
                    "result",
                    // Padded, so the freeze outgrows the kernel's buffers
                    // sooner and the router's queue overflows.
                    json!({"plugin": plugin, "status": 0, "output": "x".repeat(1000),
                           "hostname": format!("fleet{i}")}),
                    now,
                );
            }
            round += 1;
            next_round += Duration::from_secs(1);
        }
        for member in fleet.iter_mut() {
            member.read_replies(now);
            member.flush(now);
        }
        if now >= stop_at && fleet.iter().all(FleetClient::idle) {
            break;
        }
        assert!(
            now < stop_at + Duration::from_secs(120),
            "the fleet still has messages to resend two minutes after it stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let results_sent: u64 = fleet.iter().map(|m| m.results).sum();
    let heartbeats_sent: u64 = fleet.iter().map(|m| m.heartbeats).sum();
    let refusals: u64 = fleet.iter().map(|m| m.refusals).sum();

    // Every result reaches the store (one row per client and plugin).
    let conn = Connection::open(&db).expect("open the store");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for member in fleet.iter_mut() {
            // Refusals of the last resends, if any, are sent again too.
            member.read_replies(Instant::now());
            member.flush(Instant::now() + Duration::from_secs(1));
        }
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM results WHERE plugin LIKE 'p%'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if stored as u64 == results_sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {results_sent} results stored ({refusals} refusals resent); {}",
            router.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let down: i64 = conn
        .query_row(
            "SELECT count(*) FROM notifications WHERE severity = 'critical'",
            [],
            |r| r.get(0),
        )
        .expect("count notifications");
    assert_eq!(down, 0, "no client may be declared down");
    let status = router.status();
    let forwarded_heartbeats = count_in(&status, "forwarded_by_type", "heartbeat");
    assert!(
        forwarded_heartbeats >= heartbeats_sent,
        "the router forwarded {forwarded_heartbeats} heartbeats, the fleet alone sent {heartbeats_sent}"
    );
    assert!(
        count_in(&status, "backpressure_waits_by_type", "result") > 0,
        "the freeze should have filled the queue: {status}"
    );

    // The real agent kept every refused message: none was unknown.
    let mut agent = agent;
    agent.signal("-TERM");
    agent.wait_exit(WAIT);
    let lines = agent.log_lines();
    let agent_stats = lines.iter().rev().find(|l| l.contains("stats:"));
    assert_eq!(
        logged_number(&lines, "stats:", "refused_lost"),
        Some(0),
        "the agent lost refused messages: {agent_stats:?}"
    );
    // Every refusal reached a client that kept the message: the fleet's
    // and the agent's (its own stats have no sink here, so some of those
    // are refused for sure).
    let agent_refusals = logged_number(&lines, "stats:", "router_errors").unwrap_or(0);
    let status = router.status();
    // (The agent goes on sending its stats until it stops, so its last
    // stats line may lag the router's count.)
    assert!(
        count_in(&status, "rejected_by_code", "overloaded") >= refusals + agent_refusals,
        "refusals seen by the fleet ({refusals}) and the agent ({agent_stats:?}): {status}"
    );
    // The sink handles every heartbeat the router forwarded (its stats
    // line, every second, says how many).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = router.status();
        let forwarded = count_in(&status, "forwarded_by_type", "heartbeat");
        let text = sink.log_text();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let handled = logged_number(&lines, "heartbeat: ", "handled");
        if handled == Some(forwarded) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink handled {handled:?} of {forwarded} heartbeats forwarded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = sink.stop();
    assert!(status.success(), "the sink exits cleanly");
}
