//! The ZAP handler thread: decides every CURVE handshake of the router.
//!
//! libzmq asks the REP socket bound to `inproc://zeromq.zap.01` on the
//! socket's context (the router has two: the back end's socket has its own
//! I/O thread, so one ZAP socket per context) about each peer that completes a CURVE handshake; the
//! socket's ZAP domain says which of the router's sockets it is (clients,
//! back end, sinks). This thread owns those sockets, and the key files: it
//! polls them for changes once a second and re-reads them on SIGHUP, and
//! sends each new version to the threads that check messages against it
//! (the client and back-end threads) and tells the sink threads when a
//! sink key was removed. It answers a client with its UUID as the User-Id
//! and every peer with its public key as the `X-Key` property, so the
//! socket threads can tell, per message, who sent it.
//!
//! Fail closed: with CURVE on and no ZAP handler bound, libzmq lets every
//! key in. So the socket is bound before any CURVE server socket binds, it
//! lives outside the thread's body (a panic cannot unbind it early), and
//! if the body fails or panics the process exits at once. It is stopped
//! last, after every other socket is closed.

use super::auth::{Access, AuthConfig, KEY_PROPERTY};
use super::clients::Command;
use super::metrics::Metrics;
use crate::curve::PublicKey;
use crate::doorbell::{Doorbell, Ringer};
use crossbeam_channel::Sender;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where libzmq looks for the ZAP handler.
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// How often the key files are checked for changes (PROTOCOL.md: within 5 s).
const FILE_POLL: Duration = Duration::from_secs(1);
/// ZAP requests answered per wake-up before the files and bell are looked at.
const BURST: usize = 256;
/// At most one log line about refused handshakes per window.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Binds the ZAP socket: call before any CURVE server socket binds.
pub fn bind(ctx: &zmq::Context) -> zmq::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::REP)?;
    socket.set_linger(0)?;
    socket.bind(ZAP_ENDPOINT)?;
    Ok(socket)
}

/// The threads a new key set goes to.
pub struct Subscribers {
    pub clients: Sender<Command>,
    pub client_bell: Ringer,
    pub backend: Sender<Arc<Access>>,
    pub backend_bell: Ringer,
    /// One per sink thread: "make your PUSH socket anew".
    pub sinks: Vec<(Sender<()>, Ringer)>,
}

pub struct ZapThread {
    pub config: AuthConfig,
    pub subscribers: Subscribers,
    pub metrics: Arc<Metrics>,
    /// Handshake-event readers of the CURVE sockets (see [`watch_handshakes`]).
    pub monitors: Vec<zmq::Socket>,
}

/// Handshakes that fail before ZAP is asked (a plaintext peer, a wrong
/// server key, garbage) are refused by libzmq alone; a socket monitor is
/// the only way to count them. ZAP refusals are counted where they are
/// decided, so their `HANDSHAKE_FAILED_AUTH` events are not watched.
const FAILED_BEFORE_ZAP: i32 = 0x0800 | 0x2000; // NO_DETAIL | PROTOCOL

/// Starts a monitor of `socket`'s failed handshakes and returns its reader.
pub fn watch_handshakes(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    n: usize,
) -> zmq::Result<zmq::Socket> {
    let endpoint = format!("inproc://vigil-handshakes-{n}");
    socket.monitor(&endpoint, FAILED_BEFORE_ZAP)?;
    let reader = ctx.socket(zmq::PAIR)?;
    reader.set_linger(0)?;
    reader.connect(&endpoint)?;
    Ok(reader)
}

/// The running thread, stopped by [`ZapHandle::stop`].
pub struct ZapHandle {
    stop: Arc<AtomicBool>,
    ringer: Ringer,
    thread: JoinHandle<()>,
}

impl ZapHandle {
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        self.ringer.ring();
        let _ = self.thread.join();
    }
}

impl ZapThread {
    /// Starts the thread with its (already bound) sockets, one per context.
    pub fn start(self, sockets: Vec<zmq::Socket>) -> std::io::Result<ZapHandle> {
        let (bell, ringer) = Doorbell::new()?;
        let (hup_rx, hup_tx) = UnixStream::pair()?;
        hup_rx.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_tx)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || {
                let body = std::panic::AssertUnwindSafe(|| self.run(&sockets, bell, hup_rx, &flag));
                let failure = match std::panic::catch_unwind(body) {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "panicked".to_string(),
                };
                // The sockets are still bound: no handshake goes unchecked.
                log::error!(
                    "the ZAP handler failed ({failure}); stopping now, since no CURVE \
                     handshake may go unchecked"
                );
                std::process::exit(1);
            })?;
        Ok(ZapHandle {
            stop,
            ringer,
            thread,
        })
    }

    fn run(
        mut self,
        sockets: &[zmq::Socket],
        mut bell: Doorbell,
        mut hup: UnixStream,
        stop: &AtomicBool,
    ) -> Result<(), zmq::Error> {
        let mut state = State {
            access: Arc::new(self.config.initial.clone()),
            unsent_clients: false,
            unsent_backend: false,
            refusals: RefusalLog::default(),
        };
        let mut next_poll = Instant::now() + FILE_POLL;
        loop {
            let timeout = next_poll.saturating_duration_since(Instant::now());
            let mut items = vec![
                bell.poll_item(),
                zmq::PollItem::from_fd(hup.as_raw_fd(), zmq::POLLIN),
            ];
            items.extend(sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)));
            items.extend(self.monitors.iter().map(|m| m.as_poll_item(zmq::POLLIN)));
            match zmq::poll(&mut items, timeout.as_millis() as i64 + 1) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(e),
            }
            let (rung, hupped) = (items[0].is_readable(), items[1].is_readable());
            let readable: Vec<bool> = items[2..].iter().map(|i| i.is_readable()).collect();
            let (requests, events) = readable.split_at(sockets.len());
            drop(items);
            for (monitor, _) in self.monitors.iter().zip(events).filter(|(_, e)| **e) {
                count_failed_handshakes(monitor, &self.metrics)?;
            }
            if rung {
                bell.clear();
            }
            if stop.load(Relaxed) {
                return Ok(());
            }
            for (socket, _) in sockets.iter().zip(requests).filter(|(_, r)| **r) {
                for _ in 0..BURST {
                    if !self.serve_one(socket, &mut state)? {
                        break;
                    }
                }
            }
            if hupped {
                let mut buf = [0u8; 64];
                while matches!(hup.read(&mut buf), Ok(n) if n > 0) {}
                log::info!("SIGHUP: re-reading the key files");
                self.reload(&mut state, true);
            }
            if Instant::now() >= next_poll {
                self.reload(&mut state, false);
                next_poll = Instant::now() + FILE_POLL;
            }
            self.publish(&mut state);
        }
    }

    /// Answers one ZAP request; `false` when none was waiting.
    fn serve_one(&self, socket: &zmq::Socket, state: &mut State) -> Result<bool, zmq::Error> {
        let frames = match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(false),
            Err(e) => return Err(e),
        };
        let request_id = frames.get(1).cloned().unwrap_or_default();
        let domain = frames
            .get(2)
            .map(|d| String::from_utf8_lossy(d).into_owned());
        let decision = match parse_request(&frames) {
            Ok(key) => state
                .access
                .decide(domain.as_deref().unwrap_or(""), &key)
                .map(|user_id| (user_id, key)),
            Err(reason) => Err(reason),
        };
        let reply: Vec<Vec<u8>> = match decision {
            Ok((user_id, key)) => vec![
                b"1.0".to_vec(),
                request_id,
                b"200".to_vec(),
                b"OK".to_vec(),
                user_id.into_bytes(),
                metadata(KEY_PROPERTY, key.to_z85().as_bytes()),
            ],
            Err(reason) => {
                self.metrics.auth_failures.fetch_add(1, Relaxed);
                let address = frames
                    .get(3)
                    .map(|a| String::from_utf8_lossy(a).into_owned());
                state.refusals.note(
                    domain.as_deref().unwrap_or("?"),
                    address.as_deref().unwrap_or("?"),
                    reason,
                );
                vec![
                    b"1.0".to_vec(),
                    request_id,
                    b"400".to_vec(),
                    reason.as_bytes().to_vec(),
                    Vec::new(),
                    Vec::new(),
                ]
            }
        };
        socket.send_multipart(reply, 0)?;
        Ok(true)
    }

    /// Re-reads the files that changed (all of them when `force`). A file
    /// that cannot be read or parsed keeps its last good version.
    fn reload(&mut self, state: &mut State, force: bool) {
        let mut next = (*state.access).clone();
        let config = &mut self.config;
        if let Some(w) = &mut config.client_keys {
            if let Some(keys) = refresh(w, force) {
                next.clients = keys;
            }
        }
        if let Some(w) = &mut config.client_deny {
            if let Some(keys) = refresh(w, force) {
                next.deny = keys.into_keys().collect();
            }
        }
        if let Some(keys) = refresh(&mut config.backend_keys, force) {
            next.backend = keys;
        }
        if let Some(keys) = refresh(&mut config.sink_keys, force) {
            next.sinks = keys;
        }
        if next == *state.access {
            return;
        }
        log::info!(
            "key files changed: {} client key(s), {} denied, {} back-end, {} sink",
            next.clients.len(),
            next.deny.len(),
            next.backend.len(),
            next.sinks.len()
        );
        if state.access.sinks_removed_in(&next) {
            log::warn!(
                "a sink key was removed: every PUSH socket is made anew, so only listed \
                 sinks reconnect (messages libzmq held for connected sinks are lost)"
            );
            for (tx, ringer) in &self.subscribers.sinks {
                // Full means a rebuild is already asked for: the same thing.
                let _ = tx.try_send(());
                ringer.ring();
            }
        }
        state.access = Arc::new(next);
        state.unsent_clients = true;
        state.unsent_backend = true;
    }

    /// Sends the current key set to the threads that have not had it; a
    /// full channel is tried again on the next wake-up (at most a second).
    fn publish(&self, state: &mut State) {
        let subs = &self.subscribers;
        if state.unsent_clients {
            let command = Command::Access(Arc::clone(&state.access));
            if subs.clients.try_send(command).is_ok() {
                state.unsent_clients = false;
                subs.client_bell.ring();
            }
        }
        if state.unsent_backend && subs.backend.try_send(Arc::clone(&state.access)).is_ok() {
            state.unsent_backend = false;
            subs.backend_bell.ring();
        }
    }
}

struct State {
    access: Arc<Access>,
    unsent_clients: bool,
    unsent_backend: bool,
    refusals: RefusalLog,
}

fn refresh<T>(w: &mut super::keyfiles::Watched<T>, force: bool) -> Option<T> {
    let result = if force { w.read().map(Some) } else { w.poll() };
    match result {
        Ok(found) => found,
        Err(e) => {
            log::error!(
                "{}: cannot use the new version ({e}); keeping the last good one",
                w.var
            );
            None
        }
    }
}

/// Counts the failed-handshake events waiting on a monitor reader.
fn count_failed_handshakes(monitor: &zmq::Socket, metrics: &Metrics) -> Result<(), zmq::Error> {
    for _ in 0..BURST {
        match monitor.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => {
                let event = frames.first().filter(|f| f.len() >= 2);
                let event = event.map_or(0, |f| u16::from_le_bytes([f[0], f[1]]) as i32);
                if event & FAILED_BEFORE_ZAP != 0 {
                    metrics.auth_failures.fetch_add(1, Relaxed);
                }
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The client's public key from a ZAP request, or why it is malformed.
/// Frames: version, request id, domain, address, routing id, mechanism,
/// then the mechanism's credentials (CURVE: the 32-byte key).
fn parse_request(frames: &[Vec<u8>]) -> Result<PublicKey, &'static str> {
    if frames.len() < 7 || frames[0] != b"1.0" {
        return Err("malformed ZAP request");
    }
    if frames[5] != b"CURVE" {
        return Err("only CURVE is accepted");
    }
    let key: [u8; 32] = frames[6]
        .as_slice()
        .try_into()
        .map_err(|_| "malformed CURVE key")?;
    Ok(PublicKey(key))
}

/// One ZMTP metadata property: name length, name, value length, value.
fn metadata(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + name.len() + 4 + value.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Logs refused handshakes at most once per window: anyone can knock.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn note(&mut self, domain: &str, address: &str, reason: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_WINDOW)
        {
            self.suppressed += 1;
            return;
        }
        log::warn!(
            "refused a CURVE handshake on the {domain} socket from {address}: {reason} \
             ({} more refusals not logged)",
            self.suppressed
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_zmtp_property_encoding() {
        assert_eq!(
            metadata("X-Key", b"ab"),
            b"\x05X-Key\x00\x00\x00\x02ab".to_vec()
        );
    }

    #[test]
    fn requests_must_be_curve_with_a_key() {
        let mut frames: Vec<Vec<u8>> = ["1.0", "1", "clients", "1.2.3.4", "", "CURVE"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert!(parse_request(&frames).is_err());
        frames.push(vec![7; 32]);
        assert_eq!(parse_request(&frames), Ok(PublicKey([7; 32])));
        frames[5] = b"NULL".to_vec();
        assert!(parse_request(&frames).is_err());
        frames[5] = b"CURVE".to_vec();
        frames[6] = vec![1; 31];
        assert!(parse_request(&frames).is_err());
    }
}
