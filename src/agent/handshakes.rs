//! Refused CURVE handshakes, and dialling those routers again.
//!
//! libzmq 4.3.4 treats a refused handshake (the router's ZAP handler said
//! no: the agent's key is not enrolled yet, or was removed) as a protocol
//! error and never reconnects that endpoint. An agent started before its
//! key was enrolled would so stay cut off from that router until
//! restarted. A socket monitor is the only way to learn of the refusal:
//! the watcher thread here owns the monitor's socket and passes each
//! refused endpoint to the link thread, which owns the DEALER and dials the
//! endpoint anew after [`REDIAL_AFTER`] ([`Redial`]).

use crate::doorbell::Ringer;
use crossbeam_channel::{Receiver, Sender};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long after a refusal the endpoint is dialled again: routers read
/// their key files every second, so an enrolled agent is in within this,
/// and an unenrolled one costs each router one handshake per period.
pub const REDIAL_AFTER: Duration = Duration::from_secs(10);

/// libzmq's monitor events (zmq.h) this module listens for.
const HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;
const HANDSHAKE_FAILED_AUTH: u16 = 0x4000;
const MONITOR_STOPPED: u16 = 0x0400;

/// Starts watching `dealer`'s refused handshakes (call before it
/// connects). Each refused endpoint comes on the returned channel, and
/// `bell` is rung for it.
pub fn watch(
    ctx: &zmq::Context,
    dealer: &zmq::Socket,
    bell: Ringer,
) -> std::io::Result<Receiver<String>> {
    let endpoint = "inproc://vigil-agent-handshakes";
    let events = HANDSHAKE_FAILED_PROTOCOL | HANDSHAKE_FAILED_AUTH | MONITOR_STOPPED;
    dealer.monitor(endpoint, i32::from(events))?;
    let reader = ctx.socket(zmq::PAIR)?;
    reader.set_linger(0)?;
    reader.connect(endpoint)?;
    let (tx, rx) = crossbeam_channel::bounded(64);
    std::thread::Builder::new()
        .name("handshakes".into())
        .spawn(move || read_events(&reader, &tx, &bell))?;
    Ok(rx)
}

/// Passes refused endpoints on until the monitor stops (the DEALER was
/// closed) or the link thread has gone.
fn read_events(reader: &zmq::Socket, refused: &Sender<String>, bell: &Ringer) {
    loop {
        let Ok(frames) = reader.recv_multipart(0) else {
            return;
        };
        let Some((event, endpoint)) = parse_event(&frames) else {
            continue;
        };
        if event == MONITOR_STOPPED {
            return;
        }
        // A full channel already holds refusals enough to redial for.
        match refused.try_send(endpoint) {
            Ok(()) => bell.ring(),
            Err(crossbeam_channel::TrySendError::Full(_)) => {}
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
        }
    }
}

/// A monitor message: `[event u16 LE, value u32 LE]`, then the endpoint.
fn parse_event(frames: &[Vec<u8>]) -> Option<(u16, String)> {
    let [head, endpoint] = frames else {
        return None;
    };
    let event = u16::from_le_bytes(head.get(..2)?.try_into().ok()?);
    Some((event, String::from_utf8_lossy(endpoint).into_owned()))
}

/// The endpoints to dial again, and when. Owned by the link thread.
#[derive(Default)]
pub struct Redial {
    due: BTreeMap<String, Instant>,
    /// Endpoints already logged at warn level (later refusals: debug).
    told: std::collections::BTreeSet<String>,
}

impl Redial {
    /// Notes a refusal of `endpoint` at `now`.
    pub fn refused(&mut self, endpoint: String, now: Instant) {
        if self.told.insert(endpoint.clone()) {
            log::warn!(
                "router {endpoint} refused this agent's CURVE key (not enrolled there yet? \
                 its VIGIL_CLIENT_KEYS needs the line `vigil agent --print-key` prints); \
                 dialling it again every {} s",
                REDIAL_AFTER.as_secs()
            );
        } else {
            log::debug!("router {endpoint} refused this agent's CURVE key again");
        }
        self.due.entry(endpoint).or_insert(now + REDIAL_AFTER);
    }

    /// When the next endpoint is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Takes the endpoints due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        for endpoint in &due {
            self.due.remove(endpoint);
        }
        due
    }
}

/// The configured router (`VIGIL_ROUTERS` as written, which is what
/// `disconnect` needs) that a monitor's endpoint names: libzmq reports a
/// tcp endpoint by its resolved address, so a host name is resolved to
/// compare.
pub fn configured<'a>(routers: &'a [String], reported: &str) -> Option<&'a str> {
    if let Some(same) = routers.iter().find(|r| r.as_str() == reported) {
        return Some(same);
    }
    let reported: std::net::SocketAddr = reported.strip_prefix("tcp://")?.parse().ok()?;
    routers.iter().map(String::as_str).find(|router| {
        use std::net::ToSocketAddrs;
        router
            .strip_prefix("tcp://")
            .and_then(|hostport| hostport.to_socket_addrs().ok())
            .is_some_and(|mut addrs| addrs.any(|a| a == reported))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_endpoint_maps_to_the_router_as_configured() {
        let routers = vec![
            "tcp://localhost:5555".to_string(),
            "ipc:///run/r".to_string(),
        ];
        assert_eq!(configured(&routers, "ipc:///run/r"), Some("ipc:///run/r"));
        assert_eq!(
            configured(&routers, "tcp://127.0.0.1:5555"),
            Some("tcp://localhost:5555")
        );
        assert_eq!(configured(&routers, "tcp://127.0.0.1:5556"), None);
    }

    #[test]
    fn a_refused_endpoint_is_due_once_after_the_wait() {
        let mut redial = Redial::default();
        let t0 = Instant::now();
        redial.refused("tcp://a:1".into(), t0);
        // A second refusal before the redial does not move it later.
        redial.refused("tcp://a:1".into(), t0 + Duration::from_secs(5));
        assert_eq!(redial.next_due(), Some(t0 + REDIAL_AFTER));
        assert!(redial.take_due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            redial.take_due(t0 + REDIAL_AFTER),
            vec!["tcp://a:1".to_string()]
        );
        assert_eq!(redial.next_due(), None);
    }

    #[test]
    fn monitor_messages_are_parsed() {
        let head = [0x00, 0x40, 1, 0, 0, 0].to_vec();
        let frames = vec![head, b"tcp://127.0.0.1:5555".to_vec()];
        assert_eq!(
            parse_event(&frames),
            Some((HANDSHAKE_FAILED_AUTH, "tcp://127.0.0.1:5555".into()))
        );
        assert_eq!(parse_event(&frames[..1]), None);
    }
}
