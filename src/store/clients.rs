//! The `clients` table: who has been seen, where from, and whether their
//! heartbeats say they are alive.
//!
//! Every sink upserts the sender of every message it accepts; the
//! heartbeat sink also keeps `last_heartbeat`, `heartbeat_interval_s` and
//! `liveness`. Times only move forward: a message relayed late by a second
//! router never makes a client look older than it is.
//!
//! Across processes (several sinks on one PostgreSQL): the upsert is one
//! statement; a heartbeat locks its client's row before reading the
//! liveness it decides on, so two sinks given copies of one heartbeat
//! raise one recovery; marking down is a conditional update, so one of
//! several sweeps raises each down notification.

use super::{Backend, Result, Tx};
use crate::params;
use std::collections::HashMap;

/// One sighting of a client: the envelope and the router's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    pub uuid: &'a str,
    pub hostname: Option<&'a str>,
    /// The router's `received_at`.
    pub at: f64,
    pub router: &'a str,
    pub peer: Option<&'a str>,
}

/// What a sighting changes in a known client's row (an `ON CONFLICT`
/// clause): a macro, so that [`upsert`]'s statement is one literal.
macro_rules! upsert_set {
    () => {
        "ON CONFLICT (uuid) DO UPDATE SET
             hostname    = COALESCE(excluded.hostname, clients.hostname),
             first_seen  = CASE WHEN excluded.first_seen < clients.first_seen
                           THEN excluded.first_seen ELSE clients.first_seen END,
             last_seen   = CASE WHEN excluded.last_seen > clients.last_seen
                           THEN excluded.last_seen ELSE clients.last_seen END,
             last_router = CASE WHEN excluded.last_seen >= clients.last_seen
                           THEN excluded.last_router ELSE clients.last_router END,
             peer        = CASE WHEN excluded.last_seen >= clients.last_seen
                           THEN COALESCE(excluded.peer, clients.peer) ELSE clients.peer END"
    };
}

const UPSERT_SET: &str = upsert_set!();

/// Inserts the client or updates what this sighting tells. A missing
/// hostname keeps the known one.
pub fn upsert(tx: &Tx, s: &Sighting) -> Result<()> {
    tx.execute(
        concat!(
            "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_router, peer)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5) ",
            upsert_set!()
        ),
        params![s.uuid, s.hostname, s.at, s.router, s.peer],
    )?;
    Ok(())
}

/// What a batch of messages tells of their clients, merged per client, so
/// a batch costs one client write (one statement on PostgreSQL for all its
/// clients), not one per message. The merge gives what the messages'
/// upserts one by one would leave: the last hostname given, the earliest
/// and latest times, and the router and peer of the newest message.
#[derive(Debug, Default, Clone)]
pub struct Sightings {
    order: Vec<Seen>,
    index: HashMap<String, usize>,
}

/// One client's merged sightings.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub uuid: String,
    pub hostname: Option<String>,
    pub first: f64,
    pub last: f64,
    pub router: String,
    pub peer: Option<String>,
}

impl Sightings {
    pub fn add(&mut self, s: &Sighting) {
        match self.index.get(s.uuid) {
            Some(&i) => {
                let seen = &mut self.order[i];
                if let Some(h) = s.hostname {
                    seen.hostname = Some(h.to_string());
                }
                seen.first = seen.first.min(s.at);
                if s.at >= seen.last {
                    seen.last = s.at;
                    seen.router = s.router.to_string();
                    if let Some(p) = s.peer {
                        seen.peer = Some(p.to_string());
                    }
                }
            }
            None => {
                self.index.insert(s.uuid.to_string(), self.order.len());
                self.order.push(Seen {
                    uuid: s.uuid.to_string(),
                    hostname: s.hostname.map(str::to_string),
                    first: s.at,
                    last: s.at,
                    router: s.router.to_string(),
                    peer: s.peer.map(str::to_string),
                });
            }
        }
    }

    /// The hostname this batch gave for `uuid`, if any.
    pub fn hostname(&self, uuid: &str) -> Option<&str> {
        let i = *self.index.get(uuid)?;
        self.order[i].hostname.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.index.clear();
    }

    /// Writes the merged sightings and forgets them.
    pub fn flush(&mut self, tx: &Tx) -> Result<()> {
        if !self.order.is_empty() {
            upsert_seen(tx, &self.order)?;
        }
        self.clear();
        Ok(())
    }
}

/// Upserts merged sightings of distinct clients: on PostgreSQL one
/// statement, its rows in uuid order (two sinks locking overlapping sets of
/// clients lock them in the same order, so they wait rather than deadlock).
pub fn upsert_seen(tx: &Tx, seen: &[Seen]) -> Result<()> {
    match tx.backend() {
        Backend::Sqlite => {
            let sql = format!(
                "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_router, peer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) {UPSERT_SET}"
            );
            for s in seen {
                tx.execute(
                    &sql,
                    params![&s.uuid, &s.hostname, s.first, s.last, &s.router, &s.peer],
                )?;
            }
        }
        Backend::Postgres => {
            let mut sorted: Vec<&Seen> = seen.iter().collect();
            sorted.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            let uuids: Vec<Option<&str>> = sorted.iter().map(|s| Some(s.uuid.as_str())).collect();
            let hosts: Vec<Option<&str>> = sorted.iter().map(|s| s.hostname.as_deref()).collect();
            let firsts: Vec<Option<f64>> = sorted.iter().map(|s| Some(s.first)).collect();
            let lasts: Vec<Option<f64>> = sorted.iter().map(|s| Some(s.last)).collect();
            let routers: Vec<Option<&str>> =
                sorted.iter().map(|s| Some(s.router.as_str())).collect();
            let peers: Vec<Option<&str>> = sorted.iter().map(|s| s.peer.as_deref()).collect();
            tx.execute(
                &format!(
                    "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_router, peer)
                     SELECT * FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::FLOAT8[], ?4::FLOAT8[],
                                          ?5::TEXT[], ?6::TEXT[])
                     {UPSERT_SET}"
                ),
                params![
                    &uuids[..],
                    &hosts[..],
                    &firsts[..],
                    &lasts[..],
                    &routers[..],
                    &peers[..]
                ],
            )?;
        }
    }
    Ok(())
}

/// The hostname a client last gave, if any.
pub fn hostname(tx: &Tx, uuid: &str) -> Result<Option<String>> {
    match tx.query_opt(
        "SELECT hostname FROM clients WHERE uuid = ?1",
        params![uuid],
    )? {
        Some(row) => row.get(0),
        None => Ok(None),
    }
}

/// A client's liveness as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
    Unknown,
}

impl Liveness {
    fn from_text(text: &str) -> Liveness {
        match text {
            "up" => Liveness::Up,
            "down" => Liveness::Down,
            _ => Liveness::Unknown,
        }
    }
}

/// Records a heartbeat (the client row must exist: upsert first) received
/// at `at`. A heartbeat newer than the last one marks the client up and
/// returns its liveness before, so the caller can raise a recovery when it
/// was down. An older one (a copy relayed late by another router) changes
/// nothing but the interval and returns `None`: it says nothing about now.
pub fn record_heartbeat(tx: &Tx, uuid: &str, at: f64, interval_s: f64) -> Result<Option<Liveness>> {
    let row = tx.query_row(
        "SELECT liveness, last_heartbeat FROM clients WHERE uuid = ?1 /*pg: FOR UPDATE*/",
        params![uuid],
    )?;
    let (before, last): (String, Option<f64>) = (row.get(0)?, row.get(1)?);
    let news = last.is_none_or(|last| at > last);
    tx.execute(
        "UPDATE clients SET
             last_heartbeat = CASE WHEN last_heartbeat IS NULL OR last_heartbeat < ?2
                              THEN ?2 ELSE last_heartbeat END,
             heartbeat_interval_s = ?3,
             liveness = CASE WHEN ?4 THEN 'up' ELSE liveness END
         WHERE uuid = ?1",
        params![uuid, at, interval_s, news],
    )?;
    Ok(news.then(|| Liveness::from_text(&before)))
}

/// A batch's heartbeats of one client, merged: the newest time and the
/// interval of the last one (what they leave one by one).
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub uuid: String,
    pub at: f64,
    pub interval_s: f64,
}

/// [`record_heartbeat`] for several clients (rows upserted, one beat
/// each): on PostgreSQL one statement that locks the rows in uuid order
/// and returns what they said before. Returns, per beat in `beats`'
/// order, the liveness before when the beat was news.
pub fn record_heartbeats(tx: &Tx, beats: &[Beat]) -> Result<Vec<Option<Liveness>>> {
    match tx.backend() {
        Backend::Sqlite => beats
            .iter()
            .map(|b| record_heartbeat(tx, &b.uuid, b.at, b.interval_s))
            .collect(),
        Backend::Postgres => {
            let uuids: Vec<Option<&str>> = beats.iter().map(|b| Some(b.uuid.as_str())).collect();
            let ats: Vec<Option<f64>> = beats.iter().map(|b| Some(b.at)).collect();
            let intervals: Vec<Option<f64>> = beats.iter().map(|b| Some(b.interval_s)).collect();
            let rows = tx.query(
                "WITH beat AS (
                     SELECT * FROM unnest(?1::TEXT[], ?2::FLOAT8[], ?3::FLOAT8[])
                         AS b(uuid, at, interval_s)),
                 old AS MATERIALIZED (
                     SELECT c.uuid, c.liveness, c.last_heartbeat FROM clients c
                     WHERE c.uuid IN (SELECT uuid FROM beat)
                     ORDER BY c.uuid FOR UPDATE)
                 UPDATE clients c SET
                     last_heartbeat = CASE WHEN old.last_heartbeat IS NULL
                                           OR old.last_heartbeat < beat.at
                                      THEN beat.at ELSE old.last_heartbeat END,
                     heartbeat_interval_s = beat.interval_s,
                     liveness = CASE WHEN old.last_heartbeat IS NULL OR beat.at > old.last_heartbeat
                                THEN 'up' ELSE old.liveness END
                 FROM beat, old
                 WHERE c.uuid = beat.uuid AND old.uuid = beat.uuid
                 RETURNING c.uuid, old.liveness, old.last_heartbeat, beat.at",
                params![&uuids[..], &ats[..], &intervals[..]],
            )?;
            let mut before: HashMap<String, Option<Liveness>> = HashMap::new();
            for r in rows {
                let (uuid, liveness, last, at): (String, String, Option<f64>, f64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let news = last.is_none_or(|last| at > last);
                before.insert(uuid, news.then(|| Liveness::from_text(&liveness)));
            }
            Ok(beats
                .iter()
                .map(|b| before.get(&b.uuid).copied().flatten())
                .collect())
        }
    }
}

/// A client whose heartbeats stopped for longer than its grace window.
#[derive(Debug, Clone, PartialEq)]
pub struct Silent {
    pub uuid: String,
    pub hostname: Option<String>,
    pub last_heartbeat: f64,
    pub interval_s: f64,
}

/// Clients not yet down whose deadline passed, the deadline being
/// `max(since, last_heartbeat) + grace × interval_s`. `since` is when the
/// asking sink started, so nobody is declared down before a full window of
/// its own watching.
pub fn silent(tx: &Tx, since: f64, grace: f64, now: f64) -> Result<Vec<Silent>> {
    let rows = tx.query(
        "SELECT uuid, hostname, last_heartbeat, heartbeat_interval_s FROM clients
         WHERE liveness != 'down'
           AND last_heartbeat IS NOT NULL
           AND heartbeat_interval_s > 0
           AND CASE WHEN ?1 > last_heartbeat THEN ?1 ELSE last_heartbeat END
               + ?2 * heartbeat_interval_s < ?3
         ORDER BY uuid",
        params![since, grace, now],
    )?;
    rows.iter()
        .map(|r| {
            Ok(Silent {
                uuid: r.get(0)?,
                hostname: r.get(1)?,
                last_heartbeat: r.get(2)?,
                interval_s: r.get(3)?,
            })
        })
        .collect()
}

/// Marks a silent client down, unless a heartbeat (or another sink
/// process) changed it meanwhile. Returns whether this call did it, so
/// exactly one caller raises the notification.
pub fn mark_down(tx: &Tx, silent: &Silent) -> Result<bool> {
    let changed = tx.execute(
        "UPDATE clients SET liveness = 'down'
         WHERE uuid = ?1 AND liveness != 'down' AND last_heartbeat = ?2",
        params![&silent.uuid, silent.last_heartbeat],
    )?;
    Ok(changed == 1)
}

/// (hostname, first_seen, last_seen, last_router) of the one client in
/// the store (tests).
#[cfg(test)]
pub fn only_row(tx: &Tx) -> (String, f64, f64, String) {
    let r = tx
        .query_row(
            "SELECT hostname, first_seen, last_seen, last_router FROM clients",
            &[],
        )
        .unwrap();
    (
        r.get(0).unwrap(),
        r.get(1).unwrap(),
        r.get(2).unwrap(),
        r.get(3).unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn seen<'a>(
        uuid: &'a str,
        hostname: Option<&'a str>,
        at: f64,
        router: &'a str,
    ) -> Sighting<'a> {
        Sighting {
            uuid,
            hostname,
            at,
            router,
            peer: Some("10.0.0.1"),
        }
    }

    #[test]
    fn upsert_keeps_hostname_and_moves_forward_only() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        upsert(c, &seen("u1", Some("web1"), 100.0, "r1")).unwrap();
        upsert(c, &seen("u1", None, 200.0, "r2")).unwrap();
        upsert(c, &seen("u1", None, 150.0, "r3")).unwrap();
        assert_eq!(only_row(c), ("web1".into(), 100.0, 200.0, "r2".into()));
        assert_eq!(hostname(c, "u1").unwrap().as_deref(), Some("web1"));
        assert_eq!(hostname(c, "nobody").unwrap(), None);
    }

    #[test]
    fn silence_waits_a_full_window_since_start() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        upsert(c, &seen("u1", None, 100.0, "r1")).unwrap();
        assert_eq!(
            record_heartbeat(c, "u1", 100.0, 10.0).unwrap(),
            Some(Liveness::Unknown)
        );
        // Started at 1000: the old heartbeat does not count until 1030.
        assert!(silent(c, 1000.0, 3.0, 1029.0).unwrap().is_empty());
        let gone = silent(c, 1000.0, 3.0, 1031.0).unwrap();
        assert_eq!(gone.len(), 1);
        assert!(mark_down(c, &gone[0]).unwrap());
        assert!(!mark_down(c, &gone[0]).unwrap(), "only once");
        assert!(silent(c, 1000.0, 3.0, 2000.0).unwrap().is_empty());
        assert_eq!(
            record_heartbeat(c, "u1", 1990.0, 10.0).unwrap(),
            Some(Liveness::Down)
        );
        assert_eq!(
            record_heartbeat(c, "u1", 2000.0, 10.0).unwrap(),
            Some(Liveness::Up)
        );
        assert_eq!(
            record_heartbeat(c, "u1", 1995.0, 10.0).unwrap(),
            None,
            "a late copy is not news"
        );
        let last: f64 = c
            .query_value("SELECT last_heartbeat FROM clients", &[])
            .unwrap();
        assert_eq!(last, 2000.0, "a late heartbeat never moves time back");
    }
}
