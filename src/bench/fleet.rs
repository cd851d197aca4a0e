//! Many simulated agents in one process: one DEALER each, with the agent's
//! UUID text as its routing id as PROTOCOL.md asks, and the `hello` →
//! `welcome` handshake that proves a client is connected and routable.

use super::curve::Curve;
use super::{poll, BenchError, Doing};
use std::time::{Duration, Instant};

/// libzmq refuses more than 1023 sockets per context (ZMQ_MAX_SOCKETS_DFLT)
/// and rust-zmq 0.10 has no setter for ZMQ_MAX_SOCKETS, so a large fleet is
/// spread over several contexts, each with its own I/O thread.
const SOCKETS_PER_CONTEXT: usize = 1000;

/// Hands out sockets, opening a new context whenever the newest is full.
/// Sockets keep their context alive, so the pool can be dropped early.
#[derive(Default)]
pub struct ContextPool {
    contexts: Vec<zmq::Context>,
    in_newest: usize,
}

impl ContextPool {
    /// A socket with linger 0: the benchmark never needs unsent messages
    /// once it closes a socket, and the default linger can hang the exit.
    pub fn socket(&mut self, kind: zmq::SocketType) -> Result<zmq::Socket, BenchError> {
        if self.contexts.is_empty() || self.in_newest == SOCKETS_PER_CONTEXT {
            self.contexts.push(zmq::Context::new());
            self.in_newest = 0;
        }
        let newest = self.contexts.len() - 1;
        let socket = self.contexts[newest]
            .socket(kind)
            .doing("creating a socket")?;
        socket.set_linger(0).doing("setting linger")?;
        self.in_newest += 1;
        Ok(socket)
    }
}

/// libzmq's default high-water mark, as a real agent's DEALER has.
pub const DEFAULT_HWM: i32 = 1000;

/// One simulated agent.
pub struct Dealer {
    pub socket: zmq::Socket,
    pub uuid: String,
}

impl Dealer {
    /// A client whose outgoing queue holds at most `sndhwm` messages.
    pub fn connect(
        pool: &mut ContextPool,
        endpoint: &str,
        sndhwm: i32,
        curve: Option<&Curve>,
    ) -> Result<Dealer, BenchError> {
        let socket = pool.socket(zmq::DEALER)?;
        // Under CURVE the client speaks as the UUID its own key derives
        // (the router runs `VIGIL_CLIENT_AUTH=derived`).
        let uuid = match curve {
            Some(curve) => curve.new_client(&socket)?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        // Before connect(): a pipe takes its HWM when it is created.
        socket
            .set_sndhwm(sndhwm)
            .doing("setting a DEALER's sndhwm")?;
        socket
            .set_identity(uuid.as_bytes())
            .doing("setting a DEALER's routing id")?;
        socket
            .connect(endpoint)
            .doing(&format!("connecting a DEALER to {endpoint}"))?;
        Ok(Dealer { socket, uuid })
    }

    pub fn send_hello(&self) -> Result<(), BenchError> {
        let hello = format!(r#"{{"uuid":"{}","type":"hello"}}"#, self.uuid);
        // A DEALER queues on its pipe from connect() on, so this cannot block.
        self.socket
            .send(hello.as_bytes(), zmq::DONTWAIT)
            .doing("sending hello")
    }
}

/// Connects `count` new clients to `endpoint`, each with `sndhwm`.
pub fn connect_all(
    pool: &mut ContextPool,
    endpoint: &str,
    count: usize,
    sndhwm: i32,
    curve: Option<&Curve>,
) -> Result<Vec<Dealer>, BenchError> {
    (0..count)
        .map(|_| Dealer::connect(pool, endpoint, sndhwm, curve))
        .collect()
}

/// Waits for a `welcome` on each of `dealers` (whose `hello` was sent)
/// until `deadline`, and says how many got one.
pub fn await_welcomes(dealers: &[Dealer], deadline: Instant) -> Result<usize, BenchError> {
    let mut pending: Vec<&Dealer> = dealers.iter().collect();
    while !pending.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let ready = poll_readable(&pending, left.min(Duration::from_millis(100)))?;
        let mut still = Vec::with_capacity(pending.len());
        for (dealer, ready) in pending.into_iter().zip(ready) {
            if !(ready && take_welcome(dealer)?) {
                still.push(dealer);
            }
        }
        pending = still;
    }
    Ok(dealers.len() - pending.len())
}

fn poll_readable(dealers: &[&Dealer], timeout: Duration) -> Result<Vec<bool>, BenchError> {
    let mut items: Vec<zmq::PollItem> = dealers
        .iter()
        .map(|d| d.socket.as_poll_item(zmq::POLLIN))
        .collect();
    poll(&mut items, timeout)?;
    Ok(items.iter().map(zmq::PollItem::is_readable).collect())
}

/// Reads one reply; true if it was the welcome. Anything else in answer to
/// a valid hello means the router broke the protocol.
fn take_welcome(dealer: &Dealer) -> Result<bool, BenchError> {
    let frame = match dealer.socket.recv_bytes(zmq::DONTWAIT) {
        Ok(frame) => frame,
        Err(zmq::Error::EAGAIN) => return Ok(false),
        Err(e) => return Err(BenchError::zmq("receiving a welcome", e)),
    };
    let reply: Option<serde_json::Value> = serde_json::from_slice(&frame).ok();
    match reply.as_ref().and_then(|r| r.get("type")?.as_str()) {
        Some("welcome") => Ok(true),
        _ => Err(BenchError::protocol(
            format!("waiting for the welcome of client {}", dealer.uuid),
            format!("got {}", String::from_utf8_lossy(&frame)),
        )),
    }
}
