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
use crate::params;
use crate::protocol::{Framed, Notification, Severity};
use crate::store::{Result, Store, Tx};

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

/// What one sweep did.
#[derive(Debug, Clone, PartialEq)]
pub struct Swept {
    pub runs: Vec<OverdueRun>,
    /// The query came back full: more may be overdue. Counted from the
    /// query, not from `runs`, which leaves out runs whose result arrived
    /// meanwhile (on PostgreSQL a sink may complete one between the query
    /// and the update).
    pub more: bool,
}

/// Handles the runs that became overdue by `now` with `due_by` after
/// `since`. Returns None when `me` does not hold the lease.
pub fn sweep(store: &mut Store, me: &str, now: f64, since: f64) -> Result<Option<Swept>> {
    let tx = store.write()?;
    if !lease::held_in(&tx, me, now)? {
        return Ok(None);
    }
    let runs = tx.query(
        "SELECT run_id, uuid, plugin, sent_at FROM runs
         WHERE completed_at IS NULL AND due_by > ?1 AND due_by <= ?2 AND overdue = 0
         ORDER BY due_by LIMIT ?3",
        params![since, now, BATCH],
    )?;
    let more = runs.len() as i64 >= BATCH;
    let mut found = Vec::with_capacity(runs.len());
    for row in runs {
        let (run_id, uuid, plugin, sent_at): (String, String, String, f64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        // The result row first, as the result sink locks it (then the run):
        // one order, no deadlock between the two on PostgreSQL.
        let last = last_result(&tx, &uuid, &plugin)?;
        let still_open = tx.execute(
            "UPDATE runs SET overdue = 1 WHERE run_id = ?1 AND completed_at IS NULL",
            params![&run_id],
        )?;
        if still_open == 0 {
            // Its result arrived meanwhile (another process).
            continue;
        }
        let outcome = outcome(last.as_ref(), sent_at);
        let hostname = crate::store::clients::hostname(&tx, &uuid)?;
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
    Ok(Some(Swept { runs: found, more }))
}

fn last_result(tx: &Tx, uuid: &str, plugin: &str) -> Result<Option<LastResult>> {
    tx.query_opt(
        "SELECT status, output, ts FROM results WHERE uuid = ?1 AND plugin = ?2 /*pg: FOR UPDATE*/",
        params![uuid, plugin],
    )?
    .map(|r| {
        Ok(LastResult {
            status: r.get(0)?,
            output: r.get(1)?,
            ts: r.get(2)?,
        })
    })
    .transpose()
}

fn record_result(tx: &Tx, uuid: &str, plugin: &str, run_id: &str, now: f64) -> Result<()> {
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
    tx: &Tx,
    uuid: &str,
    plugin: &str,
    run_id: &str,
    hostname: Option<&str>,
    now: f64,
) -> Result<()> {
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
    let body = Framed::new(uuid, now, &notification)
        .with_id(&id, false)
        .to_value()
        .to_string();
    tx.execute(
        "INSERT INTO notifications (uuid, id, origin, severity, source, message, hostname,
                                    body, created_at, state, attempts, next_attempt_at)
         VALUES (?1, ?2, 'scheduler', ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?8)",
        params![
            uuid,
            &id,
            SEVERITY.as_str(),
            &source,
            &message,
            hostname,
            &body,
            now
        ],
    )?;
    Ok(())
}

/// Deletes finished (completed or overdue) runs sent before `before`.
pub fn prune(store: &mut Store, before: f64) -> Result<usize> {
    store.in_write(|tx| {
        tx.execute(
            "DELETE FROM runs WHERE sent_at < ?1 AND (completed_at IS NOT NULL OR overdue = 1)",
            params![before],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scratch::{rows, with_tx};
    use crate::store::test_store;

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
        let mut store = test_store();
        let c = &mut *store;
        with_tx(c, |tx| {
            tx.batch(
                "INSERT INTO clients (uuid, hostname, first_seen, last_seen) VALUES ('u', 'web1', 0, 0);
                 INSERT INTO results (uuid, plugin, status, output, ts, changed_at) VALUES ('u', 'p', 2, 'bad', 10, 5);",
            )
            .unwrap();
            for (id, sent) in [("r1", 20.0), ("r2", 30.0)] {
                tx.execute(
                    "INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES (?1, 'u', 'p', ?2, ?3)",
                    params![id, sent, sent + 5.0],
                )
                .unwrap();
            }
        });
        assert_eq!(sweep(c, "me", 50.0, 0.0).unwrap(), None, "no lease");
        lease::acquire(c, "me", 100.0, 40.0).unwrap().unwrap();
        let swept = sweep(c, "me", 50.0, 0.0).unwrap().unwrap();
        assert!(!swept.more);
        let found = swept.runs;
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].outcome, Outcome::Record { notify: true });
        assert_eq!(found[1].outcome, Outcome::Record { notify: false });
        assert_eq!(found[0].hostname.as_deref(), Some("web1"));
        let all = rows(c, "SELECT status, output, run_id, changed_at FROM results");
        let r = &all[0];
        let (status, output, run_id, changed): (i64, String, String, f64) = (
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            r.get(2).unwrap(),
            r.get(3).unwrap(),
        );
        assert_eq!(
            (status, output.as_str(), run_id.as_str(), changed),
            (3, OUTPUT, "r2", 50.0)
        );
        let body: String = rows(
            c,
            "SELECT body FROM notifications WHERE origin = 'scheduler' AND state = 'pending'",
        )[0]
        .get(0)
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "notification");
        assert_eq!(body["uuid"], "u");
        assert_eq!(body["hostname"], "web1");
        let overdue: i64 = rows(c, "SELECT COUNT(*) FROM runs WHERE overdue = 1")[0]
            .get(0)
            .unwrap();
        assert_eq!(overdue, 2);
        // Nothing twice.
        assert_eq!(sweep(c, "me", 60.0, 0.0).unwrap().unwrap().runs.len(), 0);
        assert_eq!(prune(c, 100.0).unwrap(), 2);
    }
}
