//! The router under CURVE, attacked from outside as PROTOCOL.md's Security
//! section says it must withstand: real `vigil router` processes, real
//! sockets on 127.0.0.1, attackers holding no secret or only their own key.
//!
//! Each test starts its own router with a server key made by `vigil keygen`
//! and key files in a scratch directory; the helpers below make CURVE
//! clients, sinks and back-end sockets with keys of their own.

// The agent harness serves several test binaries; this one uses part of it.
use crate::util::agent as agent_util;
// The shared router harness serves several test binaries; this one uses part of it.
use crate::util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use util::daemon::{output_within, vigil_command};
use util::{count_in, counter, new_uuid, socket, Backend, Client, Router, Sink, WAIT};
use vigil::testkit::TempDir;

/// A short wait, used only to check that something does NOT arrive.
const QUIET: Duration = Duration::from_millis(500);

/// A CURVE key pair of the test side.
#[derive(Clone)]
struct Keys {
    public: [u8; 32],
    secret: [u8; 32],
}

impl Keys {
    fn new() -> Keys {
        let pair = zmq::CurveKeyPair::new().expect("CURVE key pair (libzmq with CURVE)");
        Keys {
            public: pair.public_key,
            secret: pair.secret_key,
        }
    }

    fn z85(&self) -> String {
        zmq::z85_encode(&self.public).expect("z85")
    }

    /// Makes `sock` a CURVE client of the server whose key is `server`.
    fn apply(&self, sock: &zmq::Socket, server: &[u8; 32]) {
        sock.set_curve_serverkey(server).expect("server key");
        sock.set_curve_publickey(&self.public).expect("public key");
        sock.set_curve_secretkey(&self.secret).expect("secret key");
    }
}

/// A CURVE router and the files that configure it.
struct Secure {
    dir: TempDir,
    router: Router,
    server: [u8; 32],
    backend: Keys,
    sink: Keys,
}

/// The key files of a router about to start.
struct Files {
    dir: TempDir,
    server: [u8; 32],
    backend: Keys,
    sink: Keys,
}

impl Files {
    fn new(what: &str, clients: &[(&str, &Keys)]) -> Files {
        let dir = TempDir::new(what);
        let key = dir.join("router.key");
        let out = output_within(
            vigil_command(&["keygen", key.to_str().expect("utf-8 path")]),
            WAIT * 3,
        );
        assert!(out.status.success(), "vigil keygen: {out:?}");
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let server: [u8; 32] = zmq::z85_decode(&public)
            .expect("keygen prints a Z85 public key")
            .try_into()
            .expect("32 bytes");
        let files = Files {
            dir,
            server,
            backend: Keys::new(),
            sink: Keys::new(),
        };
        files.write_clients(clients);
        fs::write(
            files.dir.join("backend.keys"),
            format!("# back end\n{} scheduler\n", files.backend.z85()),
        )
        .expect("write backend keys");
        fs::write(
            files.dir.join("sink.keys"),
            format!("{}\n", files.sink.z85()),
        )
        .expect("write sink keys");
        files
    }

    fn write_clients(&self, clients: &[(&str, &Keys)]) {
        Files::write_clients_in(&self.dir, clients);
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("utf-8").to_string()
    }

    fn builder(&self, name: &str) -> util::RouterBuilder {
        Router::builder(name)
            .env("VIGIL_CURVE_KEY", &self.path("router.key"))
            .env("VIGIL_CLIENT_KEYS", &self.path("clients.keys"))
            .env("VIGIL_BACKEND_KEYS", &self.path("backend.keys"))
            .env("VIGIL_SINK_KEYS", &self.path("sink.keys"))
    }

    fn start(self, name: &str, extra: &[(&str, &str)]) -> Secure {
        let mut builder = self.builder(name);
        for (k, v) in extra {
            builder = builder.env(k, v);
        }
        let router = builder.start();
        Secure {
            dir: self.dir,
            router,
            server: self.server,
            backend: self.backend,
            sink: self.sink,
        }
    }
}

impl Secure {
    /// A CURVE DEALER with `keys`, speaking as `uuid`, with no routing id
    /// of its own (as agents under CURVE do) unless `routing_id` is given.
    fn client(&self, uuid: &str, keys: &Keys, routing_id: Option<&[u8]>) -> Client {
        Client::connect_with(
            &self.router.ctx,
            &[&self.router.client],
            uuid,
            routing_id,
            |s| keys.apply(s, &self.server),
        )
    }

    /// A CURVE PULL on the router's `ty` socket.
    fn sink_with(&self, ty: &str, keys: &Keys) -> Sink {
        let sock = socket(&self.router.ctx, zmq::PULL);
        keys.apply(&sock, &self.server);
        sock.connect(self.router.sink_endpoint(ty))
            .expect("connect PULL");
        Sink { sock }
    }

    fn sink(&self, ty: &str) -> Sink {
        self.sink_with(ty, &self.sink)
    }

    fn backend_with(&self, keys: &Keys) -> Backend {
        let sock = socket(&self.router.ctx, zmq::REQ);
        keys.apply(&sock, &self.server);
        sock.connect(&self.router.backend).expect("connect REQ");
        Backend { sock }
    }

    fn request(&self, body: Value) -> Value {
        self.backend_with(&self.backend)
            .request(body.to_string().as_bytes())
    }

    fn status(&self) -> Value {
        let status = self.request(json!({"op": "status"}));
        assert_eq!(status["ok"], json!(true), "status: {status}");
        status
    }

    fn deliver(&self, to: &str, tag: &str) -> Value {
        self.request(json!({"to": to, "type": "run_plugin", "plugin": "p", "run_id": tag}))
    }
}

/// Waits (bounded) for `check` to hold, polling.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not within {:?}: {what}",
            WAIT * 2
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_listed_client_is_served_and_its_deliveries_reach_it() {
    let (agent, uuid) = (Keys::new(), new_uuid());
    let s = Files::new("sec-listed", &[(&uuid, &agent)]).start("sec-listed", &[]);
    let client = s.client(&uuid, &agent, None);
    client.expect_welcome("sec-listed");
    let sink = s.sink("stats");
    let frame = client.frame("stats", json!({"m": 1}));
    // The sink may connect after the first message: resend until it lands.
    let deadline = Instant::now() + WAIT;
    loop {
        client.send(&frame);
        if let Some(got) = sink.try_recv(Duration::from_millis(200)) {
            assert_eq!(got.frame, frame);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats never reached the CURVE sink"
        );
    }
    assert_eq!(s.deliver(&uuid, "r1"), json!({"ok": true}));
    let got = client.recv_json("run_plugin");
    assert_eq!(got["run_id"], json!("r1"));
}

#[test]
fn a_plaintext_client_gets_nothing_through() {
    let s = Files::new("sec-plain", &[]).start("sec-plain", &[]);
    let sink = s.sink("stats");
    let plain = s.router.client();
    // Offered, not sent: once the refusal is in, libzmq has dropped the
    // connection and a blocking send would time out.
    plain.offer(&plain.frame("hello", json!({})));
    plain.offer(&plain.frame("stats", json!({})));
    plain.expect_silence(QUIET, "a plaintext client must get no reply");
    sink.expect_silence(QUIET, "nothing from a plaintext client");
    eventually("auth_failures counts the plaintext handshake", || {
        counter(&s.status(), "auth_failures") >= 1
    });
    assert_eq!(counter(&s.status(), "received"), 0);
    assert_eq!(
        s.deliver(&plain.uuid, "x"),
        json!({"ok": false, "error": "unknown_client"})
    );
}

#[test]
fn an_unlisted_key_is_refused_at_the_handshake() {
    let (agent, uuid) = (Keys::new(), new_uuid());
    let s = Files::new("sec-unlisted", &[(&uuid, &agent)]).start("sec-unlisted", &[]);
    let sink = s.sink("stats");
    // It even claims the listed UUID: the key is what counts.
    let rogue = s.client(&uuid, &Keys::new(), None);
    rogue.offer(&rogue.frame("hello", json!({})));
    rogue.offer(&rogue.frame("stats", json!({})));
    rogue.expect_silence(QUIET, "an unlisted key gets no reply");
    sink.expect_silence(QUIET, "nothing from an unlisted key");
    eventually("auth_failures counts the refused key", || {
        counter(&s.status(), "auth_failures") >= 1
    });
    assert_eq!(counter(&s.status(), "received"), 0);
}

#[test]
fn a_listed_key_cannot_speak_as_another_uuid() {
    let (victim_keys, victim) = (Keys::new(), new_uuid());
    let (mallory_keys, mallory) = (Keys::new(), new_uuid());
    let s = Files::new(
        "sec-forbidden",
        &[(&victim, &victim_keys), (&mallory, &mallory_keys)],
    )
    .start("sec-forbidden", &[]);
    let real = s.client(&victim, &victim_keys, None);
    real.expect_welcome("sec-forbidden");
    // Mallory's own key, the victim's UUID in the message.
    let fake = s.client(&victim, &mallory_keys, None);
    let sink = s.sink("heartbeat");
    fake.expect_error(&fake.frame("hello", json!({})), "forbidden", Value::Null);
    fake.expect_error(
        &fake.frame("heartbeat", json!({"id": "h1"})),
        "forbidden",
        json!("h1"),
    );
    sink.expect_silence(QUIET, "a forbidden heartbeat is not forwarded");
    let status = s.status();
    assert_eq!(count_in(&status, "rejected_by_code", "forbidden"), 2);
    assert_eq!(counter(&status, "forbidden"), 2);
    // Deliveries to the victim still reach the victim, every one.
    for n in 0..5 {
        let tag = format!("r{n}");
        assert_eq!(s.deliver(&victim, &tag), json!({"ok": true}));
        assert_eq!(real.recv_json("run_plugin")["run_id"], json!(tag));
    }
    fake.expect_silence(QUIET, "the impostor gets none of the victim's deliveries");
}

#[test]
fn announcing_a_victims_uuid_as_routing_id_diverts_nothing() {
    let (victim_keys, victim) = (Keys::new(), new_uuid());
    let (mallory_keys, mallory) = (Keys::new(), new_uuid());
    let s = Files::new(
        "sec-handover",
        &[(&victim, &victim_keys), (&mallory, &mallory_keys)],
    )
    .start("sec-handover", &[]);
    let real = s.client(&victim, &victim_keys, None);
    real.expect_welcome("sec-handover");
    // Mallory announces the victim's UUID text as her routing id and
    // speaks as herself (allowed), then tries the victim's UUID (refused).
    let thief = s.client(&mallory, &mallory_keys, Some(victim.as_bytes()));
    thief.expect_welcome("sec-handover");
    thief.expect_error(
        &thief.frame("hello", json!({"uuid": victim})),
        "forbidden",
        Value::Null,
    );
    for n in 0..5 {
        let tag = format!("h{n}");
        assert_eq!(s.deliver(&victim, &tag), json!({"ok": true}));
        assert_eq!(real.recv_json("run_plugin")["run_id"], json!(tag));
    }
    thief.expect_silence(
        QUIET,
        "the routing id diverts none of the victim's deliveries",
    );
    // The victim is not kept out: it still gets answers.
    real.expect_welcome("sec-handover");
    // And the victim reconnecting (a new connection, same key) takes over.
    drop(real);
    let again = s.client(&victim, &victim_keys, None);
    again.expect_welcome("sec-handover");
    assert_eq!(s.deliver(&victim, "after"), json!({"ok": true}));
    assert_eq!(again.recv_json("run_plugin")["run_id"], json!("after"));
}

#[test]
fn a_rogue_sink_with_an_unlisted_key_gets_nothing() {
    let (agent, uuid) = (Keys::new(), new_uuid());
    let s = Files::new("sec-rogue-sink", &[(&uuid, &agent)]).start("sec-rogue-sink", &[]);
    let rogue = s.sink_with("heartbeat", &Keys::new());
    let plain = s.router.sink("heartbeat");
    let real = s.sink("heartbeat");
    let client = s.client(&uuid, &agent, None);
    client.expect_welcome("sec-rogue-sink");
    let mut got = 0;
    for n in 0..20 {
        let frame = client.frame("heartbeat", json!({"n": n}));
        client.send(&frame);
        real.expect_frame(&frame, "every heartbeat reaches the listed sink");
        got += 1;
    }
    assert_eq!(got, 20);
    rogue.expect_silence(QUIET, "an unlisted PULL gets nothing");
    plain.expect_silence(QUIET, "a plaintext PULL gets nothing");
    assert!(counter(&s.status(), "auth_failures") >= 2);
}

#[test]
fn an_unlisted_back_end_gets_no_answer_and_cannot_forge_an_ack() {
    let (agent, uuid) = (Keys::new(), new_uuid());
    let s = Files::new("sec-rogue-backend", &[(&uuid, &agent)]).start("sec-rogue-backend", &[]);
    let client = s.client(&uuid, &agent, None);
    client.expect_welcome("sec-rogue-backend");
    for rogue in [s.backend_with(&Keys::new()), s.router.backend()] {
        let forged = json!({"to": uuid, "type": "ack", "id": "spooled-1"}).to_string();
        match rogue.sock.send(forged.as_bytes(), 0) {
            Ok(()) => assert!(
                util::recv_within(&rogue.sock, QUIET).is_none(),
                "an unlisted back end got an answer"
            ),
            // Refused before the request was queued: libzmq drops a
            // refused connection, and the REQ has nowhere to send.
            Err(zmq::Error::EAGAIN) => {}
            Err(e) => panic!("send: {e}"),
        }
    }
    client.expect_silence(QUIET, "no forged ack reaches the client");
    assert_eq!(counter(&s.status(), "delivered"), 0);
}

#[test]
fn derived_mode_accepts_the_uuid_computed_from_the_key_only() {
    let agent = Keys::new();
    let derived = vigil::curve::derived_uuid(&vigil::curve::PublicKey(agent.public)).to_string();
    let s =
        Files::new("sec-derived", &[]).start("sec-derived", &[("VIGIL_CLIENT_AUTH", "derived")]);
    let client = s.client(&derived, &agent, None);
    client.expect_welcome("sec-derived");
    let other = s.client(&new_uuid(), &agent, None);
    other.expect_error(&other.frame("hello", json!({})), "forbidden", Value::Null);
    assert_eq!(s.deliver(&derived, "d1"), json!({"ok": true}));
    assert_eq!(client.recv_json("run_plugin")["run_id"], json!("d1"));
}

#[test]
fn a_denied_key_is_refused_even_in_derived_mode() {
    let agent = Keys::new();
    let files = Files::new("sec-deny", &[]);
    fs::write(files.dir.join("deny.keys"), format!("{}\n", agent.z85())).expect("deny");
    let deny = files.path("deny.keys");
    let s = files.start(
        "sec-deny",
        &[
            ("VIGIL_CLIENT_AUTH", "derived"),
            ("VIGIL_CLIENT_DENY", &deny),
        ],
    );
    let derived = vigil::curve::derived_uuid(&vigil::curve::PublicKey(agent.public)).to_string();
    let client = s.client(&derived, &agent, None);
    client.offer(&client.frame("hello", json!({})));
    client.expect_silence(QUIET, "a denied key gets no reply");
    eventually("the denied handshake is counted", || {
        counter(&s.status(), "auth_failures") >= 1
    });
}

#[test]
fn reloading_the_client_keys_adds_and_removes_access() {
    let (a_keys, a) = (Keys::new(), new_uuid());
    let (b_keys, b) = (Keys::new(), new_uuid());
    let s = Files::new("sec-reload", &[(&a, &a_keys)]).start("sec-reload", &[]);
    let first = s.client(&a, &a_keys, None);
    first.expect_welcome("sec-reload");
    // B is refused, then enrolled. libzmq 4.3.4 never retries a connection
    // whose handshake was refused (it counts as a protocol error), so B
    // connects anew, as the agent does after a refusal.
    let refused = s.client(&b, &b_keys, None);
    refused.offer(&refused.frame("hello", json!({})));
    refused.expect_silence(QUIET, "B is not listed yet");
    Files::write_clients_in(&s.dir, &[(&a, &a_keys), (&b, &b_keys)]);
    let mut late = refused;
    eventually("B is let in after the file lists it", || {
        late = s.client(&b, &b_keys, None);
        late.offer(&late.frame("hello", json!({})))
            && util::recv_within(&late.sock, Duration::from_millis(500)).is_some()
    });
    // A is removed: its open connection gets nothing through from then on.
    Files::write_clients_in(&s.dir, &[(&b, &b_keys)]);
    let sink = s.sink("stats");
    eventually("A's messages are refused after its key is removed", || {
        first.send(&first.frame("hello", json!({})));
        util::recv_within(&first.sock, Duration::from_millis(300)).is_none()
    });
    first.send(&first.frame("stats", json!({"after": "removal"})));
    sink.expect_silence(QUIET, "nothing from a removed key is forwarded");
    assert_eq!(
        s.deliver(&a, "gone"),
        json!({"ok": false, "error": "unknown_client"})
    );
    first.expect_silence(QUIET, "nothing is delivered to a removed key");
    assert!(counter(&s.status(), "forbidden") >= 1);
    // SIGHUP re-reads too, and B is still served on its open connection.
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &s.router.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    late.expect_welcome("sec-reload");
}

#[test]
fn a_readable_router_secret_key_stops_the_router() {
    let files = Files::new("sec-mode", &[]);
    fs::set_permissions(
        files.dir.join("router.key"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let (status, lines) = files.builder("sec-mode").run_to_exit();
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("VIGIL_CURVE_KEY")),
        "the error names the variable: {lines:?}"
    );
}

#[test]
fn a_bad_key_file_at_start_stops_the_router_naming_it() {
    let files = Files::new("sec-badfile", &[]);
    fs::write(files.dir.join("sink.keys"), "not a key\n").expect("write");
    let (status, lines) = files.builder("sec-badfile").run_to_exit();
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("VIGIL_SINK_KEYS")),
        "{lines:?}"
    );
}

impl Files {
    /// Rewrites the client key file of a running router's directory.
    fn write_clients_in(dir: &TempDir, clients: &[(&str, &Keys)]) {
        let text: String = clients
            .iter()
            .map(|(uuid, keys)| format!("{uuid} {}\n", keys.z85()))
            .collect();
        // Written whole then renamed, as an operator's tool would.
        let tmp = dir.join("clients.keys.tmp");
        fs::write(&tmp, format!("# enrolled agents\n\n{text}")).expect("write client keys");
        fs::rename(&tmp, dir.join("clients.keys")).expect("rename client keys");
    }
}

#[test]
fn removing_a_sink_key_cuts_that_sink_off() {
    let (agent, uuid) = (Keys::new(), new_uuid());
    let s = Files::new("sec-sink-reload", &[(&uuid, &agent)]).start("sec-sink-reload", &[]);
    let second = Keys::new();
    let both = format!("{}\n{} second\n", s.sink.z85(), second.z85());
    fs::write(s.dir.join("sink.keys.tmp"), both).expect("write");
    fs::rename(s.dir.join("sink.keys.tmp"), s.dir.join("sink.keys")).expect("rename");
    // The second sink connects only once its key is loaded: libzmq never
    // retries a connection whose handshake was refused.
    eventually("the router has read both sink keys", || {
        s.router
            .log_lines()
            .iter()
            .any(|l| l.contains("key files changed") && l.contains(", 2 sink"))
    });
    let client = s.client(&uuid, &agent, None);
    client.expect_welcome("sec-sink-reload");
    let kept = s.sink("result");
    let cut = s.sink_with("result", &second);
    // Both listed: round-robin reaches each.
    eventually("the second sink key is loaded and connected", || {
        client.send(&client.frame("result", json!({"probe": true})));
        cut.try_recv(Duration::from_millis(200)).is_some()
    });
    fs::write(s.dir.join("sink.keys.tmp"), format!("{}\n", s.sink.z85())).expect("write");
    fs::rename(s.dir.join("sink.keys.tmp"), s.dir.join("sink.keys")).expect("rename");
    eventually("the PUSH sockets are made anew", || {
        s.router
            .log_lines()
            .iter()
            .any(|l| l.contains("result: PUSH socket made anew"))
    });
    // Whatever was in flight before the rebuild is drained, then only the
    // listed sink gets anything.
    while cut.try_recv(QUIET).is_some() {}
    while kept.try_recv(Duration::from_millis(50)).is_some() {}
    for n in 0..10 {
        let frame = client.frame("result", json!({"after": n}));
        client.send(&frame);
        kept.expect_frame(&frame, "every result reaches the sink still listed");
    }
    cut.expect_silence(QUIET, "a removed sink key gets nothing");
}

/// An agent started before its key is enrolled: the router refuses it, and
/// libzmq alone would never try that router again; the agent dials it
/// anew, and is served once the operator adds its `--print-key` line.
#[test]
fn an_agent_started_before_enrolment_is_let_in_once_enrolled() {
    let s = Files::new("sec-enrol", &[]).start("sec-enrol", &[]);
    let dir = TempDir::new("sec-enrol-agent");
    let router_key = zmq::z85_encode(&s.server).expect("z85");
    let setup =
        agent_util::AgentSetup::new(&dir, &s.router.client).env("VIGIL_ROUTER_KEY", &router_key);
    let printed = setup.run_to_exit(&["--print-key"]);
    assert!(printed.status.success(), "{printed:?}");
    let line = String::from_utf8_lossy(&printed.stdout).trim().to_string();
    let agent = setup.start();
    agent.wait_log("refused this agent's CURVE key", WAIT * 2);
    let heartbeats = s.sink("heartbeat");
    heartbeats.expect_silence(QUIET, "nothing from an agent not enrolled");
    // Enrolled as an operator would: the agent's own line in the list.
    fs::write(s.dir.join("clients.keys.tmp"), format!("{line}\n")).expect("write");
    fs::rename(s.dir.join("clients.keys.tmp"), s.dir.join("clients.keys")).expect("rename");
    // Within one redial period (10 s) plus a heartbeat.
    let got = heartbeats
        .try_recv(Duration::from_secs(20))
        .expect("a heartbeat within 20 s of enrolment");
    assert_eq!(got.json()["uuid"], json!(agent.uuid));
}
