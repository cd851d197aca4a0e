//! The heartbeat sink: last-seen per client, and liveness.
//!
//! Each heartbeat records `received_at` and `interval_s`, and marks the
//! client up; a client that was down gets a recovery notification. A sweep
//! (every `VIGIL_HEARTBEAT_SWEEP_MS`) declares down every client silent for
//! longer than `VIGIL_HEARTBEAT_GRACE × interval_s` and raises a `critical`
//! notification for it.
//!
//! No storm at (re)start: a client's deadline is counted from the later of
//! its last heartbeat and this sink's start, so after an outage of the sink
//! itself, every client gets a full grace window to be heard again before
//! anyone is declared down. The store's conditional update makes sure
//! only one sweep (of several sink processes, on several hosts sharing
//! PostgreSQL) raises each notification, and the heartbeat's row lock that
//! only one of two sinks given copies of one heartbeat raises a recovery.

use super::config::SinkType;
use super::message::{Incoming, Malformed};
use super::worker::{Ctx, Effects, Failure, TypeSink};
use crate::protocol::Severity;
use crate::store::clients::{self, Liveness, Silent};
use crate::store::notifications::{self, Raised};
use crate::store::{now, DbError, Store, Tx};
use std::time::{Duration, Instant};

pub struct HeartbeatSink {
    /// When this sink started (Unix seconds).
    pub started: f64,
    pub grace: f64,
    pub sweep: Duration,
    /// This batch's heartbeats, one per client (the newest time, the last
    /// interval: what they leave one by one), written in one statement.
    pub pending: Vec<clients::Beat>,
}

impl HeartbeatSink {
    pub fn new(started: f64, grace: f64, sweep: Duration) -> HeartbeatSink {
        HeartbeatSink {
            started,
            grace,
            sweep,
            pending: Vec::new(),
        }
    }
}

impl TypeSink for HeartbeatSink {
    fn kind(&self) -> SinkType {
        SinkType::Heartbeat
    }

    fn handle(&mut self, _: &Tx, msg: &Incoming, _: &mut Effects) -> Result<(), Failure> {
        let interval_s = interval_s(msg)?;
        let at = msg.meta.received_at;
        match self.pending.iter_mut().find(|b| b.uuid == msg.uuid) {
            Some(beat) => {
                beat.at = beat.at.max(at);
                beat.interval_s = interval_s;
            }
            None => self.pending.push(clients::Beat {
                uuid: msg.uuid.clone(),
                at,
                interval_s,
            }),
        }
        Ok(())
    }

    /// Records the batch's heartbeats; a client that was down gets its
    /// recovery (at its newest heartbeat of the batch).
    fn flush(&mut self, tx: &Tx, out: &mut Effects) -> Result<(), Failure> {
        let beats = std::mem::take(&mut self.pending);
        if beats.is_empty() {
            return Ok(());
        }
        let before = clients::record_heartbeats(tx, &beats)?;
        for (beat, before) in beats.iter().zip(before) {
            if before == Some(Liveness::Down) {
                let hostname = clients::hostname(tx, &beat.uuid)?;
                notifications::raise(tx, &recovery(&beat.uuid, hostname.as_deref(), beat.at))?;
                out.raised += 1;
            }
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    /// After a store outage, heartbeats of the outage are still being
    /// written: every client gets a full window again, as at a start, so
    /// the outage is no storm of false "down" notifications.
    fn store_back(&mut self) {
        self.started = now();
    }

    fn tick(&mut self, store: &mut Store, out: &mut Effects, mut ctx: Ctx) -> Option<Instant> {
        if let Err(e) = self.sweep_once(store, out) {
            ctx.store_error(0, &e);
        }
        Some(Instant::now() + self.sweep)
    }
}

impl HeartbeatSink {
    /// Declares down every client whose window has passed.
    fn sweep_once(&self, store: &mut Store, out: &mut Effects) -> Result<(), DbError> {
        let at = now();
        let tx = store.write()?;
        let mut raised = 0;
        for client in clients::silent(&tx, self.started, self.grace, at)? {
            if clients::mark_down(&tx, &client)? {
                log::warn!("heartbeat: {}", down_message(&client, self.grace, at));
                notifications::raise(&tx, &down(&client, self.grace, at))?;
                raised += 1;
            }
        }
        tx.commit()?;
        out.raised += raised;
        Ok(())
    }
}

/// The longest heartbeat interval taken: a day. The store multiplies it
/// (grace × interval), and a client's `1e308` would overflow that on
/// PostgreSQL, failing every sweep and overview query for all clients.
pub const MAX_INTERVAL_S: f64 = 86_400.0;

/// `interval_s`: required, a positive number of seconds, at most a day.
fn interval_s(msg: &Incoming) -> Result<f64, Malformed> {
    match msg.opt_num("interval_s")? {
        Some(i) if i > MAX_INTERVAL_S => Err(Malformed(format!(
            "interval_s must be at most {MAX_INTERVAL_S} (a day)"
        ))),
        Some(i) if i > 0.0 => Ok(i),
        Some(_) => Err(Malformed("interval_s must be above 0".into())),
        None => Err(Malformed("interval_s is missing".into())),
    }
}

fn name(uuid: &str, hostname: Option<&str>) -> String {
    match hostname {
        Some(host) => format!("{host} ({uuid})"),
        None => uuid.to_string(),
    }
}

fn down_message(c: &Silent, grace: f64, now: f64) -> String {
    format!(
        "no heartbeat from {} for {:.0} s (interval {} s, grace {grace}x)",
        name(&c.uuid, c.hostname.as_deref()),
        now - c.last_heartbeat,
        c.interval_s
    )
}

/// The `critical` notification for a client gone silent.
fn down(c: &Silent, grace: f64, now: f64) -> Raised<'_> {
    Raised {
        origin: "heartbeat",
        uuid: &c.uuid,
        hostname: c.hostname.as_deref(),
        severity: Severity::Critical,
        source: "heartbeat",
        message: down_message(c, grace, now),
        recovery: false,
        at: now,
    }
}

/// The `info` notification for a client heard again after being down.
fn recovery<'a>(uuid: &'a str, hostname: Option<&'a str>, at: f64) -> Raised<'a> {
    Raised {
        origin: "heartbeat",
        uuid,
        hostname,
        severity: Severity::Info,
        source: "heartbeat",
        message: format!("heartbeats from {} are back", name(uuid, hostname)),
        recovery: true,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::message::tests::{incoming, U};
    use crate::store::test_store;

    fn beat(interval: &str) -> Incoming {
        incoming(
            SinkType::Heartbeat,
            &format!(
                r#"{{"uuid":"{U}","type":"heartbeat","hostname":"web1","interval_s":{interval}}}"#
            ),
        )
    }

    fn pending(store: &mut Store) -> Vec<(String, String)> {
        crate::store::scratch::rows(
            store,
            "SELECT severity, body FROM notifications WHERE state='pending' ORDER BY seq",
        )
        .iter()
        .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
        .collect()
    }

    #[test]
    fn interval_is_required_and_positive() {
        assert!(interval_s(&beat("0")).is_err());
        assert!(interval_s(&beat("\"10\"")).is_err());
        assert!(
            interval_s(&beat("1e308")).is_err(),
            "would overflow grace × interval"
        );
        assert_eq!(interval_s(&beat("86400")).unwrap(), MAX_INTERVAL_S);
        assert_eq!(interval_s(&beat("2.5")).unwrap(), 2.5);
    }

    #[test]
    fn down_after_the_window_then_recovery() {
        let mut store = test_store();
        let mut sink = HeartbeatSink::new(0.0, 3.0, Duration::from_secs(1));
        let msg = beat("1");
        let mut out = Effects::default();
        crate::store::scratch::with_tx(&mut store, |tx| {
            crate::sink::worker::upsert_client(tx, &msg)
        })
        .unwrap();
        crate::store::scratch::with_tx(&mut store, |tx| {
            sink.handle(tx, &msg, &mut out)?;
            sink.flush(tx, &mut out)
        })
        .unwrap();
        assert_eq!(out.raised, 0, "first heartbeat raises nothing");
        // received_at is in the past (META), so the window has long passed.
        sink.sweep_once(&mut store, &mut out).unwrap();
        sink.sweep_once(&mut store, &mut out).unwrap();
        assert_eq!(out.raised, 1, "down once");
        crate::store::scratch::with_tx(&mut store, |tx| {
            sink.handle(tx, &msg, &mut out)?;
            sink.flush(tx, &mut out)
        })
        .unwrap();
        assert_eq!(out.raised, 1, "a copy of the old heartbeat is no recovery");
        let later = {
            let json = format!(r#"{{"uuid":"{U}","type":"heartbeat","interval_s":1}}"#);
            let meta = r#"{"router":"r2","received_at":1764072700.0}"#;
            let frames = vec![json.into_bytes(), meta.as_bytes().to_vec()];
            crate::sink::message::parse(&frames, SinkType::Heartbeat).unwrap()
        };
        crate::store::scratch::with_tx(&mut store, |tx| {
            sink.handle(tx, &later, &mut out)?;
            sink.flush(tx, &mut out)
        })
        .unwrap();
        assert_eq!(out.raised, 2, "recovery");
        let rows = pending(&mut store);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "critical");
        assert!(
            rows[0].1.contains("no heartbeat from web1"),
            "{}",
            rows[0].1
        );
        assert_eq!(rows[1].0, "info");
        assert!(rows[1].1.contains(r#""recovery":true"#), "{}", rows[1].1);
    }

    #[test]
    fn a_fresh_start_waits_a_full_window() {
        let mut store = test_store();
        let mut sink = HeartbeatSink::new(now(), 3.0, Duration::from_secs(1));
        let msg = beat("60");
        crate::store::scratch::with_tx(&mut store, |tx| {
            crate::sink::worker::upsert_client(tx, &msg)
        })
        .unwrap();
        let mut out = Effects::default();
        crate::store::scratch::with_tx(&mut store, |tx| {
            sink.handle(tx, &msg, &mut out)?;
            sink.flush(tx, &mut out)
        })
        .unwrap();
        sink.sweep_once(&mut store, &mut out).unwrap();
        assert_eq!(
            out.raised, 0,
            "an old heartbeat is not down before start + window"
        );
    }
}
