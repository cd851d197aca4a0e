//! The `results` and `runs` tables: the last result per (client, plugin),
//! and the completion of runs the scheduler asked for.
//!
//! The result sink reads the stored status to decide whether a new one is
//! a change worth a notification; on PostgreSQL that read locks the row,
//! so two sinks given copies of one result raise one notification.

use super::{Backend, Result, Tx};
use crate::params;
use std::collections::HashMap;

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

/// The stored row of a (client, plugin) that a batch of results decides on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub status: i64,
    pub ts: f64,
    pub changed_at: f64,
}

/// The stored rows of `keys` (distinct (uuid, plugin) pairs), locked on
/// PostgreSQL until the transaction ends (one statement, in key order), so
/// two sinks given copies of one result decide on it one after the other.
pub fn lock_many(tx: &Tx, keys: &[(&str, &str)]) -> Result<HashMap<(String, String), Stored>> {
    let mut out = HashMap::new();
    let mut put = |r: &super::Row| -> Result<()> {
        out.insert(
            (r.get(0)?, r.get(1)?),
            Stored {
                status: r.get(2)?,
                ts: r.get(3)?,
                changed_at: r.get(4)?,
            },
        );
        Ok(())
    };
    match tx.backend() {
        Backend::Sqlite => {
            for (uuid, plugin) in keys {
                if let Some(r) = tx.query_opt(
                    "SELECT uuid, plugin, status, ts, changed_at FROM results
                     WHERE uuid = ?1 AND plugin = ?2",
                    params![*uuid, *plugin],
                )? {
                    put(&r)?;
                }
            }
        }
        Backend::Postgres => {
            let uuids: Vec<Option<&str>> = keys.iter().map(|k| Some(k.0)).collect();
            let plugins: Vec<Option<&str>> = keys.iter().map(|k| Some(k.1)).collect();
            for r in tx.query(
                "SELECT r.uuid, r.plugin, r.status, r.ts, r.changed_at FROM results r
                 JOIN unnest(?1::TEXT[], ?2::TEXT[]) AS k(uuid, plugin)
                   ON r.uuid = k.uuid AND r.plugin = k.plugin
                 ORDER BY r.uuid, r.plugin FOR UPDATE OF r",
                params![&uuids[..], &plugins[..]],
            )? {
                put(&r)?;
            }
        }
    }
    Ok(out)
}

/// Stores the last result of distinct (client, plugin) pairs, each with
/// its `changed_at` as decided by the caller (who holds the rows, see
/// [`lock_many`]); a stored result newer than the one given stays. On
/// PostgreSQL one statement.
pub fn store_many(tx: &Tx, rows: &[(&PluginResult, f64)]) -> Result<()> {
    const SET: &str = "ON CONFLICT (uuid, plugin) DO UPDATE SET
             changed_at  = excluded.changed_at,
             status      = excluded.status,
             output      = excluded.output,
             perfdata    = excluded.perfdata,
             duration_ms = excluded.duration_ms,
             run_id      = excluded.run_id,
             ts          = excluded.ts
         WHERE results.ts <= excluded.ts";
    match tx.backend() {
        Backend::Sqlite => {
            let sql = format!(
                "INSERT INTO results
                     (uuid, plugin, status, output, perfdata, duration_ms, run_id, ts, changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) {SET}"
            );
            for (r, changed_at) in rows {
                tx.execute(
                    &sql,
                    params![
                        &r.uuid,
                        &r.plugin,
                        r.status,
                        &r.output,
                        &r.perfdata,
                        r.duration_ms,
                        &r.run_id,
                        r.at,
                        *changed_at
                    ],
                )?;
            }
        }
        Backend::Postgres => {
            let text = |f: fn(&PluginResult) -> Option<&str>| -> Vec<Option<&str>> {
                rows.iter().map(|(r, _)| f(r)).collect()
            };
            let uuids = text(|r| Some(&r.uuid));
            let plugins = text(|r| Some(&r.plugin));
            let outputs = text(|r| r.output.as_deref());
            let perfdata = text(|r| r.perfdata.as_deref());
            let run_ids = text(|r| r.run_id.as_deref());
            let status: Vec<Option<i64>> = rows.iter().map(|(r, _)| Some(r.status)).collect();
            let durations: Vec<Option<i64>> = rows.iter().map(|(r, _)| r.duration_ms).collect();
            let ts: Vec<Option<f64>> = rows.iter().map(|(r, _)| Some(r.at)).collect();
            let changed: Vec<Option<f64>> = rows.iter().map(|(_, c)| Some(*c)).collect();
            tx.execute(
                &format!(
                    "INSERT INTO results
                         (uuid, plugin, status, output, perfdata, duration_ms, run_id, ts, changed_at)
                     SELECT * FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::INT8[], ?4::TEXT[],
                                          ?5::TEXT[], ?6::INT8[], ?7::TEXT[], ?8::FLOAT8[],
                                          ?9::FLOAT8[])
                     {SET}"
                ),
                params![
                    &uuids[..],
                    &plugins[..],
                    &status[..],
                    &outputs[..],
                    &perfdata[..],
                    &durations[..],
                    &run_ids[..],
                    &ts[..],
                    &changed[..]
                ],
            )?;
        }
    }
    Ok(())
}

/// [`complete_run`] for several (run_id, uuid, at), distinct run ids: on
/// PostgreSQL one statement.
pub fn complete_runs(tx: &Tx, runs: &[(&str, &str, f64)]) -> Result<()> {
    match tx.backend() {
        Backend::Sqlite => {
            for (run_id, uuid, at) in runs {
                complete_run(tx, run_id, uuid, *at)?;
            }
        }
        Backend::Postgres => {
            let ids: Vec<Option<&str>> = runs.iter().map(|r| Some(r.0)).collect();
            let uuids: Vec<Option<&str>> = runs.iter().map(|r| Some(r.1)).collect();
            let ats: Vec<Option<f64>> = runs.iter().map(|r| Some(r.2)).collect();
            tx.execute(
                "UPDATE runs SET completed_at = k.at
                 FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::FLOAT8[]) AS k(run_id, uuid, at)
                 WHERE runs.run_id = k.run_id AND runs.uuid = k.uuid AND runs.completed_at IS NULL",
                params![&ids[..], &uuids[..], &ats[..]],
            )?;
        }
    }
    Ok(())
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
    fn the_given_changed_at_is_stored_and_a_newer_result_stays() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        assert_eq!(last(c, "u", "load").unwrap(), None);
        store_and_check(c, result(0, 2.0), 1.0, (0, 2.0, 1.0));
        store_and_check(c, result(2, 3.0), 3.0, (2, 3.0, 3.0));
        // A late copy of an older result changes nothing.
        store_and_check(c, result(0, 2.5), 2.5, (2, 3.0, 3.0));
        assert_eq!(last(c, "u", "load").unwrap(), Some((2, 3.0)));
        let locked = lock_many(c, &[("u", "load"), ("u", "disk")]).unwrap();
        let stored = Stored {
            status: 2,
            ts: 3.0,
            changed_at: 3.0,
        };
        assert_eq!(locked.len(), 1);
        assert_eq!(locked[&("u".to_string(), "load".to_string())], stored);
    }

    fn store_and_check(c: &Tx, r: PluginResult, changed_at: f64, row: (i64, f64, f64)) {
        store_many(c, &[(&r, changed_at)]).unwrap();
        let got = c
            .query_row("SELECT status, ts, changed_at FROM results", &[])
            .unwrap();
        let got: (i64, f64, f64) = (
            got.get(0).unwrap(),
            got.get(1).unwrap(),
            got.get(2).unwrap(),
        );
        assert_eq!(got, row);
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
