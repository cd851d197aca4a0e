//! The `results` and `runs` tables: the last result per (client, plugin),
//! and the completion of runs the scheduler asked for.
//!
//! The result sink reads the stored status to decide whether a new one is
//! a change worth a notification; on PostgreSQL that read locks the row,
//! so two sinks given copies of one result raise one notification.

use super::{Result, Tx};
use crate::params;

/// A plugin result, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginResult {
    pub uuid: String,
    pub plugin: String,
    pub status: i64,
    pub output: Option<String>,
    /// The perfdata as received, as JSON text.
    pub perfdata: Option<String>,
    pub duration_ms: Option<i64>,
    pub run_id: Option<String>,
    /// When it was received (the router's `received_at`).
    pub at: f64,
}

/// The status stored for (uuid, plugin) and when it was received, if any.
pub fn last(tx: &Tx, uuid: &str, plugin: &str) -> Result<Option<(i64, f64)>> {
    tx.query_opt(
        "SELECT status, ts FROM results WHERE uuid = ?1 AND plugin = ?2 /*pg: FOR UPDATE*/",
        params![uuid, plugin],
    )?
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .transpose()
}

/// Stores `r` as the last result; `changed_at` moves only when the status
/// differs from the stored one.
pub fn store(tx: &Tx, r: &PluginResult) -> Result<()> {
    tx.execute(
        "INSERT INTO results
             (uuid, plugin, status, output, perfdata, duration_ms, run_id, ts, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (uuid, plugin) DO UPDATE SET
             changed_at  = CASE WHEN results.status = excluded.status
                           THEN results.changed_at ELSE excluded.ts END,
             status      = excluded.status,
             output      = excluded.output,
             perfdata    = excluded.perfdata,
             duration_ms = excluded.duration_ms,
             run_id      = excluded.run_id,
             ts          = excluded.ts",
        params![
            &r.uuid,
            &r.plugin,
            r.status,
            &r.output,
            &r.perfdata,
            r.duration_ms,
            &r.run_id,
            r.at
        ],
    )?;
    Ok(())
}

/// Sets `completed_at` of run `run_id` (if it is this client's and still
/// open). Returns whether a run was completed.
pub fn complete_run(tx: &Tx, run_id: &str, uuid: &str, at: f64) -> Result<bool> {
    let n = tx.execute(
        "UPDATE runs SET completed_at = ?3
         WHERE run_id = ?1 AND uuid = ?2 AND completed_at IS NULL",
        params![run_id, uuid, at],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn result(status: i64, at: f64) -> PluginResult {
        PluginResult {
            uuid: "u".into(),
            plugin: "load".into(),
            status,
            output: Some("LOAD OK".into()),
            perfdata: None,
            duration_ms: Some(12),
            run_id: None,
            at,
        }
    }

    #[test]
    fn changed_at_moves_on_a_change_only() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        assert_eq!(last(c, "u", "load").unwrap(), None);
        store_and_check(c, result(0, 1.0), 1.0);
        store_and_check(c, result(0, 2.0), 1.0);
        store_and_check(c, result(2, 3.0), 3.0);
        assert_eq!(last(c, "u", "load").unwrap(), Some((2, 3.0)));
    }

    fn store_and_check(c: &Tx, r: PluginResult, changed_at: f64) {
        store(c, &r).unwrap();
        let got: f64 = c
            .query_value("SELECT changed_at FROM results", &[])
            .unwrap();
        assert_eq!(got, changed_at);
    }

    #[test]
    fn completes_a_run_once() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        c.execute(
            "INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES ('r1','u','load',1,2)",
            &[],
        )
        .unwrap();
        assert!(!complete_run(c, "r1", "other", 5.0).unwrap());
        assert!(complete_run(c, "r1", "u", 5.0).unwrap());
        assert!(!complete_run(c, "r1", "u", 6.0).unwrap());
    }
}
