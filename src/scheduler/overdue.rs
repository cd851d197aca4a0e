//! Runs whose result never came: recorded as UNKNOWN "result overdue", with
//! a notification, so a check can never go silently stale.
//!
//! A run is overdue when no result carrying its `run_id` arrived by its
//! `due_by` (sent_at + the plugin's timeout + `VIGIL_RESULT_GRACE_SECS`);
//! the result sink marks arrivals by setting `runs.completed_at`. Only the
//! lease holder sweeps, inside one IMMEDIATE transaction that checks the
//! lease, so two schedulers never report the same run twice.
//!
//! For each overdue run: `runs.overdue` is set; the plugin's row in
//! `results` becomes status 3 "result overdue" unless a result newer than
//! the run has arrived meanwhile (the plugin is not stale then);
//! `changed_at` moves only when the status changes. A pending
//! notification (origin `scheduler`) is raised when the plugin *becomes*
//! overdue, not again for every further overdue run of a plugin already
//! shown as overdue, so a silent agent does not flood the handlers; the
//! result sink reports the recovery as a state change when results return.

use super::lease;
use crate::protocol::{Framed, Notification, Severity};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The output written for an overdue run, and how it is recognised.
pub const OUTPUT: &str = "result overdue";
/// UNKNOWN in the Nagios plugin API.
const UNKNOWN: i64 = 3;
/// Severity of the notification raised.
const SEVERITY: Severity = Severity::Warning;
/// Overdue runs handled per sweep; the rest wait for the next one.
const BATCH: i64 = 1_000;

/// The plugin's last result as stored, for the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct LastResult {
    pub status: i64,
    pub output: Option<String>,
    pub ts: f64,
}

/// What an overdue run changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result newer than the run arrived: only the run is marked.
    Superseded,
    /// The result becomes "result overdue"; `notify` when it was not
    /// already.
    Record { notify: bool },
}

pub fn outcome(last: Option<&LastResult>, sent_at: f64) -> Outcome {
    match last {
        // Already shown as overdue (perhaps by an earlier run of this very
        // sweep): only the run id moves on.
        Some(last) if last.status == UNKNOWN && last.output.as_deref() == Some(OUTPUT) => {
            Outcome::Record { notify: false }
        }
        Some(last) if last.ts >= sent_at => Outcome::Superseded,
        _ => Outcome::Record { notify: true },
    }
}

/// One run found overdue, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct OverdueRun {
    pub run_id: String,
    pub uuid: String,
    pub plugin: String,
    pub hostname: Option<String>,
    pub outcome: Outcome,
}

/// Handles the runs that became overdue by `now` with `due_by` after
/// `since`. Returns None when `me` does not hold the lease.
pub fn sweep(
    conn: &mut Connection,
    me: &str,
    now: f64,
    since: f64,
) -> rusqlite::Result<Option<Vec<OverdueRun>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !lease::held_in(&tx, me, now)? {
        return Ok(None);
    }
    let runs: Vec<(String, String, String, f64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT run_id, uuid, plugin, sent_at FROM runs
             WHERE completed_at IS NULL AND due_by > ?1 AND due_by <= ?2 AND overdue = 0
             ORDER BY due_by LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since, now, BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut found = Vec::with_capacity(runs.len());
    for (run_id, uuid, plugin, sent_at) in runs {
        tx.execute("UPDATE runs SET overdue = 1 WHERE run_id = ?1", [&run_id])?;
        let last = last_result(&tx, &uuid, &plugin)?;
        let outcome = outcome(last.as_ref(), sent_at);
        let hostname: Option<String> = tx
            .query_row(
                "SELECT hostname FROM clients WHERE uuid = ?1",
                [&uuid],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if let Outcome::Record { notify } = outcome {
            record_result(&tx, &uuid, &plugin, &run_id, now)?;
            if notify {
                raise(&tx, &uuid, &plugin, &run_id, hostname.as_deref(), now)?;
            }
        }
        found.push(OverdueRun {
            run_id,
            uuid,
            plugin,
            hostname,
            outcome,
        });
    }
    tx.commit()?;
    Ok(Some(found))
}

fn last_result(tx: &Connection, uuid: &str, plugin: &str) -> rusqlite::Result<Option<LastResult>> {
    tx.query_row(
        "SELECT status, output, ts FROM results WHERE uuid = ?1 AND plugin = ?2",
        [uuid, plugin],
        |r| {
            Ok(LastResult {
                status: r.get(0)?,
                output: r.get(1)?,
                ts: r.get(2)?,
            })
        },
    )
    .optional()
}

fn record_result(
    tx: &Connection,
    uuid: &str,
    plugin: &str,
    run_id: &str,
    now: f64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO results (uuid, plugin, status, output, perfdata, duration_ms, run_id, ts, changed_at)
         VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5, ?6, ?6)
         ON CONFLICT (uuid, plugin) DO UPDATE SET
           changed_at = CASE WHEN results.status = excluded.status
                             THEN results.changed_at ELSE excluded.changed_at END,
           status = excluded.status, output = excluded.output, perfdata = NULL,
           duration_ms = NULL, run_id = excluded.run_id, ts = excluded.ts",
        params![uuid, plugin, UNKNOWN, OUTPUT, run_id, now],
    )?;
    Ok(())
}

/// Inserts the pending notification the notification sink will handle.
fn raise(
    tx: &Connection,
    uuid: &str,
    plugin: &str,
    run_id: &str,
    hostname: Option<&str>,
    now: f64,
) -> rusqlite::Result<()> {
    let id = uuid::Uuid::new_v4().to_string();
    let source = format!("plugin {plugin}");
    let message = format!(
        "{plugin} on {}: result overdue (UNKNOWN): run {run_id} sent no result in time",
        hostname.unwrap_or(uuid)
    );
    let notification = Notification {
        severity: SEVERITY,
        source: Some(source.clone()),
        message: message.clone(),
        hostname: hostname.map(str::to_string),
        recovery: false,
    };
    let body = Framed::new(uuid, now, &notification).with_id(&id, false);
    tx.execute(
        "INSERT INTO notifications (uuid, id, origin, severity, source, message, hostname,
                                    body, created_at, state, attempts, next_attempt_at)
         VALUES (?1, ?2, 'scheduler', ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?8)",
        params![
            uuid,
            id,
            SEVERITY.as_str(),
            source,
            message,
            hostname,
            String::from_utf8(body.to_frame()).expect("JSON is UTF-8"),
            now
        ],
    )?;
    Ok(())
}

/// Deletes finished (completed or overdue) runs sent before `before`.
pub fn prune(conn: &Connection, before: f64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM runs WHERE sent_at < ?1 AND (completed_at IS NOT NULL OR overdue = 1)",
        [before],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn last(status: i64, output: &str, ts: f64) -> LastResult {
        LastResult {
            status,
            output: Some(output.to_string()),
            ts,
        }
    }

    #[test]
    fn decides_per_previous_result() {
        assert_eq!(outcome(None, 100.0), Outcome::Record { notify: true });
        assert_eq!(
            outcome(Some(&last(0, "fine", 90.0)), 100.0),
            Outcome::Record { notify: true }
        );
        assert_eq!(
            outcome(Some(&last(0, "fine", 100.5)), 100.0),
            Outcome::Superseded
        );
        assert_eq!(
            outcome(Some(&last(3, OUTPUT, 90.0)), 100.0),
            Outcome::Record { notify: false }
        );
        // A plugin's own UNKNOWN is a different state: say so.
        assert_eq!(
            outcome(Some(&last(3, "no data", 90.0)), 100.0),
            Outcome::Record { notify: true }
        );
    }

    #[test]
    fn sweep_marks_records_and_notifies_once() {
        let dir = std::env::temp_dir().join(format!("vigil-overdue-{}", uuid::Uuid::new_v4()));
        let mut store = Store::open(&dir.join("vigil.db")).unwrap();
        let c = &mut store.conn;
        c.execute(
            "INSERT INTO clients (uuid, hostname, first_seen, last_seen) VALUES ('u', 'web1', 0, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO results (uuid, plugin, status, output, ts, changed_at) VALUES ('u', 'p', 2, 'bad', 10, 5)",
            [],
        )
        .unwrap();
        for (id, sent) in [("r1", 20.0), ("r2", 30.0)] {
            c.execute(
                "INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES (?1, 'u', 'p', ?2, ?2 + 5)",
                params![id, sent],
            )
            .unwrap();
        }
        assert_eq!(sweep(c, "me", 50.0, 0.0).unwrap(), None, "no lease");
        lease::acquire(c, "me", 100.0, 40.0).unwrap().unwrap();
        let found = sweep(c, "me", 50.0, 0.0).unwrap().unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].outcome, Outcome::Record { notify: true });
        assert_eq!(found[1].outcome, Outcome::Record { notify: false });
        assert_eq!(found[0].hostname.as_deref(), Some("web1"));
        let (status, output, run_id, changed): (i64, String, String, f64) = c
            .query_row(
                "SELECT status, output, run_id, changed_at FROM results",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (status, output.as_str(), run_id.as_str(), changed),
            (3, OUTPUT, "r2", 50.0)
        );
        let body: String = c
            .query_row(
                "SELECT body FROM notifications WHERE origin = 'scheduler' AND state = 'pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "notification");
        assert_eq!(body["uuid"], "u");
        assert_eq!(body["hostname"], "web1");
        let overdue: i64 = c
            .query_row("SELECT SUM(overdue) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(overdue, 2);
        // Nothing twice.
        assert_eq!(sweep(c, "me", 60.0, 0.0).unwrap().unwrap().len(), 0);
        assert_eq!(prune(c, 100.0).unwrap(), 2);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
