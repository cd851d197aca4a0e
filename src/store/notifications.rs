//! The `notifications` table: every notification, from clients and raised
//! by vigil itself, with the bookkeeping that makes handler retries safe.
//!
//! States: `pending` rows wait for the notification sink's outbox, which
//! claims a due row, runs the handlers not yet done (`handlers_done`), and
//! either marks it `handled` or schedules the next attempt. A client's
//! notification with `ack:true` whose handlers failed is `failed`: the
//! agent's resend, not the outbox, retries it.
//!
//! Across processes: a client notification has one row per (uuid, id) (a
//! unique index; the second sink to record it finds the first's row);
//! claims are conditional updates, and the outbox on PostgreSQL takes the
//! most overdue row that no other outbox holds (`FOR UPDATE SKIP
//! LOCKED`), so several outboxes work through the queue side by side.

use super::{Backend, Result, Row, Tx};
use crate::params;
use crate::protocol::{Framed, Notification, Severity};
use serde_json::Value;

/// A notification vigil raises itself (heartbeat loss, result change...).
#[derive(Debug, Clone, PartialEq)]
pub struct Raised<'a> {
    /// `heartbeat`, `result` or `scheduler`.
    pub origin: &'a str,
    pub uuid: &'a str,
    pub hostname: Option<&'a str>,
    pub severity: Severity,
    pub source: &'a str,
    pub message: String,
    /// A return to normal (heartbeats back, status back to OK).
    pub recovery: bool,
    pub at: f64,
}

impl Raised<'_> {
    /// The notification as the handlers see it: shaped like a client's,
    /// with a fresh id.
    pub fn body(&self, id: &str) -> Value {
        let notification = Notification {
            severity: self.severity,
            source: Some(self.source.to_string()),
            message: self.message.clone(),
            hostname: self.hostname.map(str::to_string),
            recovery: self.recovery,
        };
        Framed::new(self.uuid, self.at, &notification)
            .with_id(id, false)
            .to_value()
    }
}

/// Inserts a raised notification as `pending`, due now. Returns its seq.
pub fn raise(tx: &Tx, n: &Raised) -> Result<i64> {
    let id = uuid::Uuid::new_v4().to_string();
    let body = n.body(&id).to_string();
    tx.query_value(
        "INSERT INTO notifications
             (uuid, id, origin, severity, source, message, hostname, body,
              created_at, state, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?9)
         RETURNING seq",
        params![
            n.uuid,
            &id,
            n.origin,
            n.severity.as_str(),
            n.source,
            &n.message,
            n.hostname,
            &body,
            n.at
        ],
    )
}

/// [`raise`] for several: on PostgreSQL one statement.
pub fn raise_many(tx: &Tx, raised: &[Raised]) -> Result<()> {
    match tx.backend() {
        Backend::Sqlite => {
            for n in raised {
                raise(tx, n)?;
            }
        }
        Backend::Postgres => {
            let ids: Vec<String> = raised
                .iter()
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect();
            let bodies: Vec<String> = raised
                .iter()
                .zip(&ids)
                .map(|(n, id)| n.body(id).to_string())
                .collect();
            let uuids: Vec<Option<&str>> = raised.iter().map(|n| Some(n.uuid)).collect();
            let origins: Vec<Option<&str>> = raised.iter().map(|n| Some(n.origin)).collect();
            let severities: Vec<Option<&str>> =
                raised.iter().map(|n| Some(n.severity.as_str())).collect();
            let sources: Vec<Option<&str>> = raised.iter().map(|n| Some(n.source)).collect();
            let messages: Vec<Option<&str>> =
                raised.iter().map(|n| Some(n.message.as_str())).collect();
            let hosts: Vec<Option<&str>> = raised.iter().map(|n| n.hostname).collect();
            let ids: Vec<Option<&str>> = ids.iter().map(|i| Some(i.as_str())).collect();
            let bodies: Vec<Option<&str>> = bodies.iter().map(|b| Some(b.as_str())).collect();
            let ats: Vec<Option<f64>> = raised.iter().map(|n| Some(n.at)).collect();
            tx.execute(
                "INSERT INTO notifications
                     (uuid, id, origin, severity, source, message, hostname, body,
                      created_at, state, next_attempt_at)
                 SELECT u, i, o, sev, src, m, h, b, t, 'pending', t
                 FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::TEXT[], ?4::TEXT[], ?5::TEXT[],
                             ?6::TEXT[], ?7::TEXT[], ?8::TEXT[], ?9::FLOAT8[])
                     AS n(u, i, o, sev, src, m, h, b, t)",
                params![
                    &uuids[..],
                    &ids[..],
                    &origins[..],
                    &severities[..],
                    &sources[..],
                    &messages[..],
                    &hosts[..],
                    &bodies[..],
                    &ats[..]
                ],
            )?;
        }
    }
    Ok(())
}

/// A client notification's fields as stored beside its body.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientNotification<'a> {
    pub uuid: &'a str,
    pub id: &'a str,
    pub severity: &'a str,
    pub source: Option<&'a str>,
    pub message: &'a str,
    pub hostname: Option<&'a str>,
    /// The client's frame as received.
    pub body: &'a str,
    pub at: f64,
    /// Sent with `ack:true`: the client resends it until acked. One sent
    /// without is recorded `pending`, so that if the attempt that recorded
    /// it dies (the process killed between its two transactions) the
    /// outbox takes it over once the attempt's claim runs out.
    pub ack: bool,
}

impl ClientNotification<'_> {
    /// The state it is recorded in, before its handlers run.
    fn first_state(&self) -> &'static str {
        if self.ack {
            "failed"
        } else {
            "pending"
        }
    }
}

/// A stored notification's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub seq: i64,
    pub state: String,
    /// Handlers that already succeeded for it.
    pub done: Vec<String>,
}

/// The row of client notification (uuid, id), if one was recorded.
pub fn find_client(tx: &Tx, uuid: &str, id: &str) -> Result<Option<Progress>> {
    tx.query_opt(
        "SELECT seq, state, handlers_done FROM notifications
         WHERE uuid = ?1 AND id = ?2 AND origin = 'client'
         ORDER BY seq DESC LIMIT 1",
        params![uuid, id],
    )?
    .map(|r| progress(&r))
    .transpose()
}

fn progress(r: &Row) -> Result<Progress> {
    Ok(Progress {
        seq: r.get(0)?,
        state: r.get(1)?,
        done: parse_done(&r.get::<String>(2)?),
    })
}

/// Records a client notification before its handlers run, unclaimed:
/// `failed` when the client resends it (nothing succeeded yet; it is not
/// for the outbox), else `pending` with no time set (the claim that
/// follows sets one). Returns its row: the new one, or the one another
/// process recorded first.
pub fn record_client(tx: &Tx, n: &ClientNotification) -> Result<Progress> {
    let state = n.first_state();
    let inserted = tx.query_opt(
        "INSERT INTO notifications
             (uuid, id, origin, severity, source, message, hostname, body, created_at, state)
         VALUES (?1, ?2, 'client', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (uuid, id) WHERE origin = 'client' DO NOTHING
         RETURNING seq",
        params![n.uuid, n.id, n.severity, n.source, n.message, n.hostname, n.body, n.at, state],
    )?;
    match inserted {
        Some(row) => Ok(Progress {
            seq: row.get(0)?,
            state: state.into(),
            done: vec![],
        }),
        None => find_client(tx, n.uuid, n.id)?.ok_or(super::DbError::NoRow),
    }
}

/// Records new client notifications (distinct (uuid, id)), each claimed
/// by the caller until `claimed_until` as [`claim`] would (that time is
/// the claim's token) and in [`ClientNotification`]'s first state: a row nobody
/// else has seen is free. Returns the seq of each one recorded now, by
/// (uuid, id); one handled before (in `handled`), or that another process
/// recorded first, is left out (the caller goes the one-by-one way for
/// it). On PostgreSQL one statement.
pub fn record_new_clients(
    tx: &Tx,
    list: &[ClientNotification],
    claimed_until: f64,
) -> Result<std::collections::HashMap<(String, String), i64>> {
    let mut out = std::collections::HashMap::new();
    match tx.backend() {
        Backend::Sqlite => {
            for n in list {
                if let Some(r) = tx.query_opt(
                    "INSERT INTO notifications
                         (uuid, id, origin, severity, source, message, hostname, body, created_at,
                          state, next_attempt_at)
                     SELECT ?1, ?2, 'client', ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?9
                     WHERE NOT EXISTS (SELECT 1 FROM handled WHERE uuid = ?1 AND id = ?2)
                     ON CONFLICT (uuid, id) WHERE origin = 'client' DO NOTHING
                     RETURNING seq",
                    params![
                        n.uuid,
                        n.id,
                        n.severity,
                        n.source,
                        n.message,
                        n.hostname,
                        n.body,
                        n.at,
                        claimed_until,
                        n.first_state()
                    ],
                )? {
                    out.insert((n.uuid.to_string(), n.id.to_string()), r.get(0)?);
                }
            }
        }
        Backend::Postgres => {
            let uuids: Vec<Option<&str>> = list.iter().map(|n| Some(n.uuid)).collect();
            let ids: Vec<Option<&str>> = list.iter().map(|n| Some(n.id)).collect();
            let severities: Vec<Option<&str>> = list.iter().map(|n| Some(n.severity)).collect();
            let sources: Vec<Option<&str>> = list.iter().map(|n| n.source).collect();
            let messages: Vec<Option<&str>> = list.iter().map(|n| Some(n.message)).collect();
            let hosts: Vec<Option<&str>> = list.iter().map(|n| n.hostname).collect();
            let bodies: Vec<Option<&str>> = list.iter().map(|n| Some(n.body)).collect();
            let ats: Vec<Option<f64>> = list.iter().map(|n| Some(n.at)).collect();
            let states: Vec<Option<&str>> = list.iter().map(|n| Some(n.first_state())).collect();
            for r in tx.query(
                "INSERT INTO notifications
                     (uuid, id, origin, severity, source, message, hostname, body, created_at,
                      state, next_attempt_at)
                 SELECT u, i, 'client', sev, src, m, h, b, t, st, ?9
                 FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::TEXT[], ?4::TEXT[], ?5::TEXT[],
                             ?6::TEXT[], ?7::TEXT[], ?8::FLOAT8[], ?10::TEXT[])
                     AS n(u, i, sev, src, m, h, b, t, st)
                 WHERE NOT EXISTS (SELECT 1 FROM handled d WHERE d.uuid = n.u AND d.id = n.i)
                 ORDER BY u, i
                 ON CONFLICT (uuid, id) WHERE origin = 'client' DO NOTHING
                 RETURNING uuid, id, seq",
                params![
                    &uuids[..],
                    &ids[..],
                    &severities[..],
                    &sources[..],
                    &messages[..],
                    &hosts[..],
                    &bodies[..],
                    &ats[..],
                    claimed_until,
                    &states[..]
                ],
            )? {
                out.insert((r.get(0)?, r.get(1)?), r.get(2)?);
            }
        }
    }
    Ok(out)
}

/// Claims a notification for one attempt by the caller: its next attempt
/// moves to `now + lease_s`, so no other process (another notification
/// sink, an outbox) runs its handlers meanwhile. Returns the claim's
/// token (that time: while the row still has it, the caller holds it), or
/// `None` when it is handled already or someone else holds it.
pub fn claim(tx: &Tx, seq: i64, now: f64, lease_s: f64) -> Result<Option<f64>> {
    let token = now + lease_s;
    let taken = tx.execute(
        "UPDATE notifications SET next_attempt_at = ?3
         WHERE seq = ?1 AND state != 'handled'
           AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)",
        params![seq, now, token],
    )?;
    Ok((taken == 1).then_some(token))
}

/// Extends the caller's claim `token` on `seq` to `new_token`, if the
/// caller still holds it: a batch whose handlers ran long must not run a
/// notification whose claim lapsed and that another process took.
pub fn renew(tx: &Tx, seq: i64, token: f64, new_token: f64) -> Result<bool> {
    let kept = tx.execute(
        "UPDATE notifications SET next_attempt_at = ?3
         WHERE seq = ?1 AND state != 'handled' AND next_attempt_at = ?2",
        params![seq, token, new_token],
    )?;
    Ok(kept == 1)
}

/// What becomes of a notification after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<'a> {
    /// Every handler succeeded.
    Handled,
    /// Some failed: the outbox tries again at `at`.
    RetryAt { at: f64, error: &'a str },
    /// Some failed: the client's resend will retry it.
    AwaitResend { error: &'a str },
}

/// One attempt of a sink (not the outbox's) at a notification it claimed
/// with `token`: the handlers done so far and what next.
pub struct Outcome<'a> {
    pub seq: i64,
    pub token: f64,
    pub done: &'a [String],
    pub next: Next<'a>,
}

/// Records a sink's attempt if it still holds its claim (else whoever
/// took the row over records theirs). See [`counted`] for what `attempts`
/// counts.
pub fn record_attempt(tx: &Tx, o: &Outcome) -> Result<()> {
    record(tx, o.seq, Some(o.token), o.done, &o.next, counted(&o.next))
}

/// What a sink's attempt adds to `attempts`: 1, except when it hands the
/// row to the outbox (`RetryAt`). Then the outbox's first claim counts,
/// and its backoff starts from the shortest wait, as it always has.
fn counted(next: &Next) -> i64 {
    i64::from(!matches!(next, Next::RetryAt { .. }))
}

/// [`record_attempt`] for a row the outbox claimed with [`claim_due`],
/// which counted the attempt already (so one that kills the process still
/// counts, and its backoff grows).
pub fn record_claimed_attempt(tx: &Tx, seq: i64, done: &[String], next: &Next) -> Result<()> {
    record(tx, seq, None, done, next, 0)
}

/// The row's new state, and only while `token` (when given) is still the
/// claim on it.
fn record(
    tx: &Tx,
    seq: i64,
    token: Option<f64>,
    done: &[String],
    next: &Next,
    counted_now: i64,
) -> Result<()> {
    let done = serde_json::to_string(done).expect("a list of strings serializes");
    let (state, next_at, error) = next.columns();
    let set = "UPDATE notifications SET handlers_done = ?2, state = ?3, next_attempt_at = ?4,
             last_error = COALESCE(?5, last_error), attempts = attempts + ?6";
    match token {
        Some(token) => tx.execute(
            &format!("{set} WHERE seq = ?1 AND next_attempt_at = ?7"),
            params![seq, &done, state, next_at, error, counted_now, token],
        )?,
        None => tx.execute(
            &format!("{set} WHERE seq = ?1"),
            params![seq, &done, state, next_at, error, counted_now],
        )?,
    };
    Ok(())
}

impl Next<'_> {
    /// `state`, `next_attempt_at` and `last_error` as stored.
    fn columns(&self) -> (&'static str, Option<f64>, Option<&str>) {
        match self {
            Next::Handled => ("handled", None, None),
            Next::RetryAt { at, error } => ("pending", Some(*at), Some(*error)),
            Next::AwaitResend { error } => ("failed", None, Some(*error)),
        }
    }
}

/// The outcomes of a batch's attempts ([`record_attempt`] each), and the
/// (uuid, id) of the client notifications now handled
/// ([`super::dedup::mark_handled_many`]): on PostgreSQL one statement.
pub fn record_outcomes(
    tx: &Tx,
    attempts: &[Outcome],
    handled: &[(&str, &str)],
    at: f64,
) -> Result<()> {
    if tx.backend() == Backend::Sqlite {
        for outcome in attempts {
            record_attempt(tx, outcome)?;
        }
        return super::dedup::mark_handled_many(tx, handled, "notification", at);
    }
    let mut seqs = Vec::new();
    let mut tokens = Vec::new();
    let mut dones = Vec::new();
    let mut states = Vec::new();
    let mut next_ats = Vec::new();
    let mut errors = Vec::new();
    let mut incs = Vec::new();
    for o in attempts {
        let (state, next_at, error) = o.next.columns();
        seqs.push(Some(o.seq));
        tokens.push(Some(o.token));
        dones.push(serde_json::to_string(o.done).expect("a list of strings serializes"));
        states.push(Some(state));
        next_ats.push(next_at);
        errors.push(error);
        incs.push(Some(counted(&o.next)));
    }
    let dones: Vec<Option<&str>> = dones.iter().map(|d| Some(d.as_str())).collect();
    let uuids: Vec<Option<&str>> = handled.iter().map(|k| Some(k.0)).collect();
    let ids: Vec<Option<&str>> = handled.iter().map(|k| Some(k.1)).collect();
    tx.execute(
        "WITH attempt AS (
             UPDATE notifications n SET handlers_done = a.done, state = a.state,
                 next_attempt_at = a.next_at, last_error = COALESCE(a.error, n.last_error),
                 attempts = n.attempts + a.inc
             FROM unnest(?1::INT8[], ?2::TEXT[], ?3::TEXT[], ?4::FLOAT8[], ?5::TEXT[],
                         ?6::INT8[], ?10::FLOAT8[]) AS a(seq, done, state, next_at, error, inc, token)
             WHERE n.seq = a.seq AND n.next_attempt_at = a.token)
         INSERT INTO handled (uuid, id, type, handled_at)
         SELECT k.uuid, k.id, 'notification', ?9 FROM unnest(?7::TEXT[], ?8::TEXT[]) AS k(uuid, id)
         ON CONFLICT (uuid, id) DO NOTHING",
        params![
            &seqs[..],
            &dones[..],
            &states[..],
            &next_ats[..],
            &errors[..],
            &incs[..],
            &uuids[..],
            &ids[..],
            at,
            &tokens[..]
        ],
    )?;
    Ok(())
}

/// A pending notification claimed by one outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub seq: i64,
    pub body: String,
    pub done: Vec<String>,
    /// Attempts before this one.
    pub attempts: i64,
}

/// Claims the pending row that is most overdue at `now`: its next attempt
/// moves to `now + lease_s`, so another outbox (another process) leaves it
/// alone while this one works, and picks it up again if this one dies.
pub fn claim_due(tx: &Tx, now: f64, lease_s: f64) -> Result<Option<Claimed>> {
    let due = tx.query_opt(
        "SELECT seq, body, handlers_done, attempts, next_attempt_at FROM notifications
         WHERE state = 'pending' AND next_attempt_at <= ?1
         ORDER BY next_attempt_at LIMIT 1 /*pg: FOR UPDATE SKIP LOCKED*/",
        params![now],
    )?;
    let Some(r) = due else {
        return Ok(None);
    };
    let claimed = Claimed {
        seq: r.get(0)?,
        body: r.get(1)?,
        done: parse_done(&r.get::<String>(2)?),
        attempts: r.get(3)?,
    };
    let was_due: f64 = r.get(4)?;
    let taken = tx.execute(
        "UPDATE notifications SET next_attempt_at = ?3, attempts = attempts + 1
         WHERE seq = ?1 AND state = 'pending' AND next_attempt_at = ?2",
        params![claimed.seq, was_due, now + lease_s],
    )?;
    Ok((taken == 1).then_some(claimed))
}

/// When the next pending notification falls due, if any is pending.
pub fn next_due(tx: &Tx) -> Result<Option<f64>> {
    tx.query_value(
        "SELECT MIN(next_attempt_at) FROM notifications WHERE state = 'pending'",
        &[],
    )
}

/// `handlers_done` as stored; anything unreadable counts as nothing done
/// (at worst a handler runs again, never one skipped).
fn parse_done(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A heartbeat-loss notification of client `u` raised at `at` (tests).
#[cfg(test)]
pub fn raised_for_tests(at: f64) -> Raised<'static> {
    Raised {
        origin: "heartbeat",
        uuid: "u",
        hostname: Some("web1"),
        severity: Severity::Critical,
        source: "heartbeat",
        message: "no heartbeat".into(),
        recovery: false,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;
    use serde_json::json;

    use super::raised_for_tests as raised;

    #[test]
    fn raised_body_is_shaped_like_a_client_notification() {
        let mut r = raised(5.0);
        r.recovery = true;
        assert_eq!(
            r.body("i1"),
            json!({"type":"notification","uuid":"u","id":"i1","severity":"critical",
                   "source":"heartbeat","message":"no heartbeat","hostname":"web1",
                   "ts":5.0,"recovery":true})
        );
    }

    #[test]
    fn claim_retry_and_finish() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        let seq = raise(c, &raised(10.0)).unwrap();
        assert_eq!(next_due(c).unwrap(), Some(10.0));
        assert_eq!(claim_due(c, 9.0, 60.0).unwrap(), None, "not due yet");
        let claimed = claim_due(c, 11.0, 60.0).unwrap().unwrap();
        assert_eq!((claimed.seq, claimed.attempts), (seq, 0));
        assert_eq!(claim_due(c, 12.0, 60.0).unwrap(), None, "leased");
        let done = vec!["mail".to_string()];
        let next = Next::RetryAt {
            at: 20.0,
            error: "pager: 503",
        };
        record_claimed_attempt(c, seq, &done, &next).unwrap();
        let again = claim_due(c, 20.0, 60.0).unwrap().unwrap();
        assert_eq!((again.attempts, again.done.clone()), (1, done.clone()));
        record_claimed_attempt(c, seq, &done, &Next::Handled).unwrap();
        let attempts: i64 = c
            .query_value(
                "SELECT attempts FROM notifications WHERE seq = ?1",
                params![seq],
            )
            .unwrap();
        assert_eq!(attempts, 2, "each claimed attempt counted once");
        assert_eq!(claim_due(c, 1e12, 60.0).unwrap(), None);
        assert_eq!(next_due(c).unwrap(), None);
    }

    fn client(id: &str, ack: bool) -> ClientNotification<'_> {
        ClientNotification {
            uuid: "u",
            id,
            severity: "error",
            source: None,
            message: "disk",
            hostname: None,
            body: "{}",
            at: 1.0,
            ack,
        }
    }

    #[test]
    fn client_rows_are_found_by_uuid_and_id() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        let n = client("m1", true);
        assert_eq!(find_client(c, "u", "m1").unwrap(), None);
        let seq = record_client(c, &n).unwrap().seq;
        assert_eq!(
            record_client(c, &n).unwrap().seq,
            seq,
            "one row per (uuid, id)"
        );
        let done = vec!["a".to_string()];
        let token = claim(c, seq, 5.0, 60.0)
            .unwrap()
            .expect("a new row is free");
        let failed = Next::AwaitResend { error: "b failed" };
        record_attempt(
            c,
            &Outcome {
                seq,
                token,
                done: &done,
                next: failed,
            },
        )
        .unwrap();
        let p = find_client(c, "u", "m1").unwrap().unwrap();
        assert_eq!(
            (p.seq, p.state.as_str(), p.done),
            (seq, "failed", done.clone())
        );
        assert_eq!(claim_due(c, 1e12, 1.0).unwrap(), None, "not for the outbox");
        assert!(claim(c, seq, 10.0, 60.0).unwrap().is_some());
        assert!(
            claim(c, seq, 20.0, 60.0).unwrap().is_none(),
            "held by the first"
        );
        let token = claim(c, seq, 71.0, 60.0)
            .unwrap()
            .expect("the lease ran out");
        // The first attempt's claim lapsed: what it records changes nothing.
        let lapsed = Outcome {
            seq,
            token: 70.0,
            done: &done,
            next: Next::Handled,
        };
        record_attempt(c, &lapsed).unwrap();
        assert_eq!(find_client(c, "u", "m1").unwrap().unwrap().state, "failed");
        record_attempt(
            c,
            &Outcome {
                seq,
                token,
                done: &done,
                next: Next::Handled,
            },
        )
        .unwrap();
        assert_eq!(find_client(c, "u", "m1").unwrap().unwrap().state, "handled");
        assert!(claim(c, seq, 1e12, 60.0).unwrap().is_none(), "handled");
    }

    /// A notification without ack whose attempt dies after recording it
    /// (no outcome ever written) is the outbox's once the claim runs out.
    #[test]
    fn an_unacked_client_row_goes_to_the_outbox_when_its_attempt_dies() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        let seq = record_client(c, &client("m2", false)).unwrap().seq;
        assert_eq!(claim(c, seq, 10.0, 60.0).unwrap(), Some(70.0));
        assert_eq!(claim_due(c, 69.0, 600.0).unwrap(), None, "claimed");
        assert_eq!(claim_due(c, 71.0, 600.0).unwrap().map(|r| r.seq), Some(seq));

        let recorded =
            record_new_clients(c, &[client("m3", false), client("m4", true)], 80.0).unwrap();
        assert_eq!(recorded.len(), 2);
        let due: Vec<i64> = std::iter::from_fn(|| claim_due(c, 81.0, 600.0).unwrap())
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            due,
            [recorded[&("u".into(), "m3".into())]],
            "only the unacked one"
        );
    }

    /// A claim is renewed only by the one who holds it.
    #[test]
    fn a_claim_is_renewed_only_by_its_holder() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        let seq = record_client(c, &client("m5", true)).unwrap().seq;
        let token = claim(c, seq, 10.0, 60.0).unwrap().unwrap();
        assert!(!renew(c, seq, token + 1.0, 200.0).unwrap(), "not our token");
        assert!(renew(c, seq, token, 200.0).unwrap());
        assert!(!renew(c, seq, token, 300.0).unwrap(), "the token moved on");
        assert!(
            claim(c, seq, 150.0, 60.0).unwrap().is_none(),
            "renewed until 200"
        );
    }
}
