//! Harness for the `vigil router` integration tests.
//!
//! The router is tested only from the outside, the way an agent, a sink or the
//! scheduler sees it: this module starts the real `vigil router` binary with
//! every socket bound to an ephemeral port on 127.0.0.1, reads the `ready:`
//! line from its stderr to learn the ports, and hands the tests zmq clients
//! (DEALER), sinks (PULL) and back-end connections (REQ) whose every wait is
//! bounded. The router's stderr is kept and printed when a test fails, and the
//! process is killed when the [`Router`] is dropped, so no test leaks a daemon.
//! [`daemon`] does the same for any other `vigil` daemon.

pub mod agent;
pub mod daemon;
pub mod db;
pub mod sched;
pub mod sinks;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// How long any single expected event (a reply, a forwarded message) may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long the router may take to print its `ready:` line or to exit.
pub const START_WAIT: Duration = Duration::from_secs(15);

/// The five message types of PROTOCOL.md, all configured by default.
pub const SINK_TYPES: [&str; 5] = [
    "heartbeat",
    "stats",
    "registration",
    "notification",
    "result",
];

/// `VIGIL_SINK_BINDS` value binding each type to an ephemeral local port.
pub fn sink_binds(types: &[&str]) -> String {
    types
        .iter()
        .map(|t| format!("{t}=tcp://127.0.0.1:*"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The routers' client endpoints, as `VIGIL_ROUTERS` takes them.
pub fn client_endpoints<'a>(routers: impl IntoIterator<Item = &'a Router>) -> String {
    endpoints(routers, |r| r.client.clone())
}

/// The routers' back-end endpoints, as `VIGIL_BACKENDS` takes them.
pub fn backend_endpoints<'a>(routers: impl IntoIterator<Item = &'a Router>) -> String {
    endpoints(routers, |r| r.backend.clone())
}

/// Every sink endpoint of the routers, as `VIGIL_SINK_CONNECT` takes them.
pub fn sink_connect<'a>(routers: impl IntoIterator<Item = &'a Router>) -> String {
    endpoints(routers, |r| {
        r.sinks
            .iter()
            .map(|(ty, ep)| format!("{ty}={ep}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn endpoints<'a>(
    routers: impl IntoIterator<Item = &'a Router>,
    each: impl Fn(&Router) -> String,
) -> String {
    routers.into_iter().map(each).collect::<Vec<_>>().join(",")
}

/// Unix time now, in seconds, as the router's `received_at` is.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A fresh UUID in canonical text form (lowercase, hyphenated).
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A value unique within this test run, to tell apart probes and fences.
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Configuration of one router process before it is started.
pub struct RouterBuilder {
    name: String,
    env: Vec<(String, String)>,
}

impl RouterBuilder {
    /// Sets (or overrides) one environment variable of the router.
    pub fn env(mut self, key: &str, value: &str) -> RouterBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.arg("router");
        // The test's own environment must not leak a VIGIL_* setting in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VIGIL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:*")
            .env("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:*")
            .env("VIGIL_SINK_BINDS", sink_binds(&SINK_TYPES))
            .env("VIGIL_LOG", "info")
            .env("VIGIL_ROUTER_NAME", &self.name);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the router and waits (bounded) for its `ready:` line.
    pub fn start(self) -> Router {
        let mut child = self
            .command()
            .spawn()
            .expect("spawn the vigil binary (CARGO_BIN_EXE_vigil)");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let log = Arc::clone(&log);
            thread::Builder::new()
                .name(format!("stderr-{}", self.name))
                .spawn(move || read_stderr(stderr, &log, ready_tx))
                .expect("spawn stderr reader")
        };
        let mut router = Router {
            child,
            reader: Some(reader),
            log,
            name: self.name,
            client: String::new(),
            backend: String::new(),
            sinks: BTreeMap::new(),
            ctx: zmq::Context::new(),
        };
        match ready_rx.recv_timeout(START_WAIT) {
            Ok(line) => router.parse_ready(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "router {} printed no `ready:` line within {START_WAIT:?}",
                    router.name
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = router.wait_exit(START_WAIT);
                panic!(
                    "router {} closed stderr before its `ready:` line; exit status {status}",
                    router.name
                )
            }
        }
        router
    }

    /// Runs a router that is expected to stop on its own (bad configuration):
    /// returns its exit status and its stderr lines.
    pub fn run_to_exit(self) -> (ExitStatus, Vec<String>) {
        let mut child = self.command().spawn().expect("spawn the vigil binary");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let reader = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            bytes
        });
        let deadline = Instant::now() + START_WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let bytes = reader.join().unwrap_or_default();
                panic!(
                    "router {} did not exit within {START_WAIT:?}; stderr:\n{}",
                    self.name,
                    String::from_utf8_lossy(&bytes)
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        let bytes = reader.join().expect("stderr reader");
        let lines = String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        (status, lines)
    }
}

/// Copies the router's stderr, line by line, into `log`, and passes the first
/// `ready:` line to the starter.
fn read_stderr(
    stderr: std::process::ChildStderr,
    log: &Mutex<Vec<String>>,
    ready_tx: mpsc::Sender<String>,
) {
    let mut reader = BufReader::new(stderr);
    let mut ready_tx = Some(ready_tx);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.contains("ready: ") {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(line.clone());
            }
        }
        log.lock().expect("log lock").push(line);
    }
}

/// A running `vigil router` process and the endpoints it reported.
pub struct Router {
    child: Child,
    reader: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
    /// The `VIGIL_ROUTER_NAME` it was given.
    pub name: String,
    /// The client ROUTER endpoint.
    pub client: String,
    /// The back-end REP endpoint.
    pub backend: String,
    /// Sink PUSH endpoint per type.
    pub sinks: BTreeMap<String, String>,
    /// The test side's zmq context.
    pub ctx: zmq::Context,
}

impl Router {
    pub fn builder(name: &str) -> RouterBuilder {
        RouterBuilder {
            name: name.to_string(),
            env: Vec::new(),
        }
    }

    /// Starts a router with the default test configuration.
    pub fn start(name: &str) -> Router {
        Router::builder(name).start()
    }

    fn parse_ready(&mut self, line: &str) {
        let fields =
            vigil::ready::parse(line).unwrap_or_else(|| panic!("unreadable ready line {line:?}"));
        for (key, value) in fields {
            match key.as_str() {
                "client" => self.client = value,
                "backend" => self.backend = value,
                "sinks" => self.sinks.extend(
                    vigil::ready::pairs(&value)
                        .unwrap_or_else(|| panic!("bad sinks field {value:?} in {line:?}")),
                ),
                _ => {}
            }
        }
        assert!(
            self.client.starts_with("tcp://127.0.0.1:"),
            "no client endpoint in ready line {line:?}"
        );
        assert!(
            self.backend.starts_with("tcp://127.0.0.1:"),
            "no backend endpoint in ready line {line:?}"
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The router's stderr so far, one entry per line.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Endpoint of the PUSH socket for `ty`.
    pub fn sink_endpoint(&self, ty: &str) -> &str {
        self.sinks
            .get(ty)
            .unwrap_or_else(|| panic!("router {} reported no sink for {ty:?}", self.name))
    }

    /// A DEALER with a libzmq-assigned (random) routing id and a fresh UUID.
    pub fn client(&self) -> Client {
        Client::connect(&self.ctx, &[&self.client], &new_uuid(), None)
    }

    /// A DEALER whose routing id is its UUID text, as `vigil agent` does.
    pub fn agent(&self) -> Client {
        let uuid = new_uuid();
        Client::connect(&self.ctx, &[&self.client], &uuid, Some(uuid.as_bytes()))
    }

    /// A PULL sink connected to this router's endpoint for `ty`.
    pub fn sink(&self, ty: &str) -> Sink {
        Sink::connect(&self.ctx, &[self.sink_endpoint(ty)], None)
    }

    /// A REQ socket connected to the back-end endpoint.
    pub fn backend(&self) -> Backend {
        Backend::connect(&self.ctx, &self.backend)
    }

    /// One back-end request on a fresh REQ socket; returns the JSON reply.
    pub fn request(&self, body: &[u8]) -> Value {
        self.backend().request(body)
    }

    /// `{"op":"status"}`, checked for `ok:true`.
    pub fn status(&self) -> Value {
        let status = self.request(br#"{"op":"status"}"#);
        assert_eq!(status["ok"], json!(true), "status reply: {status}");
        status
    }

    /// Sends SIGTERM with the `kill` command.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "router {} still running {timeout:?} after it should have exited",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if thread::panicking() {
            let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!(
                "----- stderr of router {} (pid {}) -----\n{log}\n----- end of stderr -----",
                self.name,
                self.child.id()
            );
        }
    }
}

/// A test socket: no linger, bounded sends and receives.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let sock = ctx.socket(kind).expect("create socket");
    sock.set_linger(0).expect("linger");
    sock.set_sndtimeo(WAIT.as_millis() as i32)
        .expect("sndtimeo");
    sock.set_rcvtimeo(WAIT.as_millis() as i32)
        .expect("rcvtimeo");
    sock
}

/// Receives one multipart message if one arrives within `timeout`.
pub fn recv_within(sock: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let ready = sock
        .poll(zmq::POLLIN, timeout.as_millis() as i64)
        .expect("zmq poll");
    if ready == 0 {
        return None;
    }
    Some(
        sock.recv_multipart(zmq::DONTWAIT)
            .expect("recv after POLLIN"),
    )
}

/// Waits until one of `socks` is readable; returns its index.
pub fn poll_any(socks: &[&zmq::Socket], timeout: Duration) -> Option<usize> {
    let mut items: Vec<_> = socks.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
    let n = zmq::poll(&mut items, timeout.as_millis() as i64).expect("zmq poll");
    if n == 0 {
        return None;
    }
    items.iter().position(|i| i.is_readable())
}

fn show(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{text}... ({} bytes)", bytes.len())
    } else {
        text
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {:?}", show(bytes)))
}

/// A client: one DEALER, connected to one or more routers, and the UUID it
/// puts in its messages.
pub struct Client {
    pub sock: zmq::Socket,
    pub uuid: String,
}

impl Client {
    /// Connects a DEALER; `routing_id` None leaves libzmq to assign one.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[&str],
        uuid: &str,
        routing_id: Option<&[u8]>,
    ) -> Client {
        Client::connect_with(ctx, endpoints, uuid, routing_id, |_| {})
    }

    /// As [`Client::connect`], with `setup` run on the socket before connecting.
    pub fn connect_with(
        ctx: &zmq::Context,
        endpoints: &[&str],
        uuid: &str,
        routing_id: Option<&[u8]>,
        setup: impl FnOnce(&zmq::Socket),
    ) -> Client {
        let sock = socket(ctx, zmq::DEALER);
        if let Some(id) = routing_id {
            sock.set_identity(id).expect("routing id");
        }
        setup(&sock);
        for endpoint in endpoints {
            sock.connect(endpoint).expect("connect DEALER");
        }
        Client {
            sock,
            uuid: uuid.to_string(),
        }
    }

    /// A message of type `ty` from this client, with `extra` fields added.
    pub fn frame(&self, ty: &str, extra: Value) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("uuid".into(), json!(self.uuid));
        obj.insert("type".into(), json!(ty));
        if let Value::Object(fields) = extra {
            obj.extend(fields);
        }
        serde_json::to_vec(&Value::Object(obj)).expect("serialize")
    }

    pub fn send(&self, frame: &[u8]) {
        self.sock
            .send(frame, 0)
            .unwrap_or_else(|e| panic!("client send failed ({e}): {:?}", show(frame)));
    }

    /// Sends without waiting; `false` when the socket has no connection
    /// to queue on now (a refused handshake is retried by libzmq, and
    /// until one succeeds a blocking send would time out).
    pub fn offer(&self, frame: &[u8]) -> bool {
        match self.sock.send(frame, zmq::DONTWAIT) {
            Ok(()) => true,
            Err(zmq::Error::EAGAIN) => false,
            Err(e) => panic!("client send failed ({e}): {:?}", show(frame)),
        }
    }

    pub fn send_multipart(&self, frames: &[&[u8]]) {
        self.sock
            .send_multipart(frames.iter().copied(), 0)
            .unwrap_or_else(|e| panic!("client multipart send failed: {e}"));
    }

    /// Receives a reply that must be exactly one frame.
    pub fn recv(&self, what: &str) -> Vec<u8> {
        let frames = recv_within(&self.sock, WAIT)
            .unwrap_or_else(|| panic!("client {}: no {what} within {WAIT:?}", self.uuid));
        assert_eq!(
            frames.len(),
            1,
            "client {}: {what} must be one frame, got {:?}",
            self.uuid,
            frames.iter().map(|f| show(f)).collect::<Vec<_>>()
        );
        frames.into_iter().next().expect("one frame")
    }

    /// Receives a one-frame JSON reply.
    pub fn recv_json(&self, what: &str) -> Value {
        parse_json(&self.recv(what), what)
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(&self, wait: Duration, what: &str) {
        if let Some(frames) = recv_within(&self.sock, wait) {
            panic!(
                "client {}: expected no message ({what}), got {:?}",
                self.uuid,
                frames.iter().map(|f| show(f)).collect::<Vec<_>>()
            );
        }
    }

    /// Sends `hello` and returns the reply.
    pub fn hello(&self) -> Value {
        self.send(&self.frame("hello", json!({})));
        self.recv_json("reply to hello")
    }

    /// Sends `hello` and asserts the exact welcome from router `name`; this is
    /// also the handshake proving the client is connected.
    pub fn expect_welcome(&self, name: &str) {
        let reply = self.hello();
        assert_eq!(
            reply,
            json!({"type": "welcome", "uuid": self.uuid, "router": name}),
            "welcome to {}",
            self.uuid
        );
    }

    /// Sends `frame` and asserts the exact error reply.
    pub fn expect_error(&self, frame: &[u8], code: &str, id: Value) {
        self.send(frame);
        let reply = self.recv_json(&format!("`{code}` error for {:?}", show(frame)));
        check_error(&reply, code, &id, &show(frame));
    }
}

/// Asserts `reply` is `{"type":"error","error":CODE,"detail":TEXT,"id":ID}`.
pub fn check_error(reply: &Value, code: &str, id: &Value, sent: &str) {
    let obj = reply
        .as_object()
        .unwrap_or_else(|| panic!("error reply is not an object: {reply} (sent {sent:?})"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["detail", "error", "id", "type"]),
        "error reply fields: {reply} (sent {sent:?})"
    );
    assert_eq!(
        reply["type"],
        json!("error"),
        "reply {reply} (sent {sent:?})"
    );
    assert_eq!(reply["error"], json!(code), "reply {reply} (sent {sent:?})");
    assert_eq!(&reply["id"], id, "echoed id in {reply} (sent {sent:?})");
    let detail = reply["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty(),
        "detail must be a non-empty string: {reply} (sent {sent:?})"
    );
}

/// One message as a sink receives it.
pub struct Forwarded {
    /// The client's frame.
    pub frame: Vec<u8>,
    /// The router's metadata frame, parsed.
    pub meta: Value,
}

impl Forwarded {
    pub fn json(&self) -> Value {
        parse_json(&self.frame, "forwarded frame")
    }

    /// Asserts the metadata is exactly `{"router","received_at","peer"}` with
    /// the given router name, a time within 10 s of now and peer 127.0.0.1.
    pub fn check_meta(&self, router: &str) {
        let meta = &self.meta;
        let obj = meta
            .as_object()
            .unwrap_or_else(|| panic!("metadata is not an object: {meta}"));
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["peer", "received_at", "router"]),
            "metadata fields: {meta}"
        );
        assert_eq!(meta["router"], json!(router), "metadata {meta}");
        assert_eq!(meta["peer"], json!("127.0.0.1"), "metadata {meta}");
        let at = meta["received_at"]
            .as_f64()
            .unwrap_or_else(|| panic!("received_at is not a number: {meta}"));
        let now = now_secs();
        assert!(
            (at - now).abs() < 10.0,
            "received_at {at} is not close to now {now}: {meta}"
        );
    }
}

/// A PULL socket standing for a back-end sink.
pub struct Sink {
    pub sock: zmq::Socket,
}

impl Sink {
    pub fn connect(ctx: &zmq::Context, endpoints: &[&str], rcvhwm: Option<i32>) -> Sink {
        let sock = socket(ctx, zmq::PULL);
        if let Some(hwm) = rcvhwm {
            sock.set_rcvhwm(hwm).expect("rcvhwm");
        }
        for endpoint in endpoints {
            sock.connect(endpoint).expect("connect PULL");
        }
        Sink { sock }
    }

    fn parts(frames: Vec<Vec<u8>>) -> Forwarded {
        assert_eq!(
            frames.len(),
            2,
            "a forwarded message must be exactly two frames, got {:?}",
            frames.iter().map(|f| show(f)).collect::<Vec<_>>()
        );
        let mut frames = frames.into_iter();
        let frame = frames.next().expect("frame 1");
        let meta = parse_json(&frames.next().expect("frame 2"), "metadata frame");
        Forwarded { frame, meta }
    }

    /// Receives one forwarded message (bounded).
    pub fn recv(&self, what: &str) -> Forwarded {
        let frames = recv_within(&self.sock, WAIT)
            .unwrap_or_else(|| panic!("sink: no {what} within {WAIT:?}"));
        Sink::parts(frames)
    }

    pub fn try_recv(&self, wait: Duration) -> Option<Forwarded> {
        recv_within(&self.sock, wait).map(Sink::parts)
    }

    /// Receives the next message and asserts it is `frame`, byte for byte.
    pub fn expect_frame(&self, frame: &[u8], what: &str) -> Forwarded {
        let got = self.recv(what);
        assert!(
            got.frame == frame,
            "sink: expected {what} {:?}, got {:?}",
            show(frame),
            show(&got.frame)
        );
        got
    }

    /// Asserts nothing arrives within `wait`.
    pub fn expect_silence(&self, wait: Duration, what: &str) {
        if let Some(got) = self.try_recv(wait) {
            panic!(
                "sink: expected nothing ({what}), got {:?}",
                show(&got.frame)
            );
        }
    }
}

/// Sends probe messages of `ty` from `client` until every one of `sinks`
/// (all connected to that type) has received one, so all are known to be
/// connected; every probe sent is received before this returns.
pub fn sync_sinks(client: &Client, ty: &str, sinks: &[&Sink]) {
    let socks: Vec<&zmq::Socket> = sinks.iter().map(|s| &s.sock).collect();
    let mut seen = vec![false; sinks.len()];
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while seen.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "sinks of {ty:?} not all connected within {WAIT:?} ({seen:?})"
        );
        let probe = client.frame(ty, json!({"probe": n, "token": token()}));
        client.send(&probe);
        let i = poll_any(&socks, WAIT)
            .unwrap_or_else(|| panic!("probe {n} of {ty:?} reached no sink within {WAIT:?}"));
        let got = Sink::parts(socks[i].recv_multipart(zmq::DONTWAIT).expect("recv probe"));
        assert!(
            got.frame == probe,
            "sink {i} expected probe {:?}, got {:?}",
            show(&probe),
            show(&got.frame)
        );
        seen[i] = true;
        n += 1;
    }
}

/// A REQ socket on the router's back-end endpoint.
pub struct Backend {
    pub sock: zmq::Socket,
}

impl Backend {
    pub fn connect(ctx: &zmq::Context, endpoint: &str) -> Backend {
        let sock = socket(ctx, zmq::REQ);
        sock.connect(endpoint).expect("connect REQ");
        Backend { sock }
    }

    /// Sends one request frame and returns the one-frame JSON reply.
    pub fn request(&self, body: &[u8]) -> Value {
        self.sock
            .send(body, 0)
            .unwrap_or_else(|e| panic!("backend send failed ({e}): {:?}", show(body)));
        self.reply(&show(body))
    }

    /// Receives the reply to a request already sent.
    pub fn reply(&self, sent: &str) -> Value {
        let frames = recv_within(&self.sock, WAIT)
            .unwrap_or_else(|| panic!("backend: no reply within {WAIT:?} to {sent:?}"));
        assert_eq!(
            frames.len(),
            1,
            "backend reply must be one frame (request {sent:?})"
        );
        parse_json(&frames[0], "backend reply")
    }
}

/// Reads `counters.NAME` from a status reply.
pub fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no counters.{name}: {status}"))
}

/// Reads `SECTION.KEY` (e.g. `rejected_by_code.bad_json`), 0 when absent.
pub fn count_in(status: &Value, section: &str, key: &str) -> u64 {
    let map = status[section]
        .as_object()
        .unwrap_or_else(|| panic!("status has no object {section:?}: {status}"));
    match map.get(key) {
        None => 0,
        Some(v) => v
            .as_u64()
            .unwrap_or_else(|| panic!("{section}.{key} is not a count: {status}")),
    }
}

/// A small deterministic generator for hostile input (no `rand` dependency).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
