//! The `processes` and `plugins` tables: what each client's processes
//! declared in their last registration.
//!
//! A registration replaces that (client, process)'s row and its whole
//! plugin set, so a plugin dropped from the agent's configuration
//! disappears. A plugin name is unique per client (`run_plugin` names only
//! the plugin): a process declaring a name another process of the same
//! client had takes it over.

use super::{Backend, Result, Tx};
use crate::params;
use std::collections::{BTreeMap, HashMap};

/// The `process` object of a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub name: String,
    pub pid: Option<i64>,
    pub version: Option<String>,
}

/// One declared plugin, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub name: String,
    pub command: String,
    /// None: run only on request, never scheduled.
    pub interval_s: Option<f64>,
    pub timeout_s: f64,
}

/// Replaces `process` of client `uuid` and its plugin set with `plugins`.
/// Returns how many plugins the previous set had.
pub fn register(
    tx: &Tx,
    uuid: &str,
    process: &Process,
    plugins: &[Plugin],
    at: f64,
) -> Result<usize> {
    tx.execute(
        "INSERT INTO processes (uuid, name, pid, version, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (uuid, name) DO UPDATE SET
             pid = excluded.pid, version = excluded.version,
             registered_at = excluded.registered_at",
        params![uuid, &process.name, process.pid, &process.version, at],
    )?;
    let removed = tx.execute(
        "DELETE FROM plugins WHERE uuid = ?1 AND process = ?2",
        params![uuid, &process.name],
    )?;
    for p in plugins {
        tx.execute(
            "INSERT INTO plugins
                 (uuid, name, process, command, interval_s, timeout_s, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (uuid, name) DO UPDATE SET
                 process = excluded.process, command = excluded.command,
                 interval_s = excluded.interval_s, timeout_s = excluded.timeout_s,
                 registered_at = excluded.registered_at",
            params![
                uuid,
                &p.name,
                &process.name,
                &p.command,
                p.interval_s,
                p.timeout_s,
                at
            ],
        )?;
    }
    Ok(removed)
}

/// A stored `plugins` row, without its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub process: String,
    pub command: Option<String>,
    pub interval_s: Option<f64>,
    pub timeout_s: Option<f64>,
    pub registered_at: f64,
}

/// Every client's plugins by name.
pub type Sets = HashMap<String, BTreeMap<String, Declared>>;

/// The plugin sets of `uuids` (distinct). The caller holds their client
/// rows (the batch upserted them), so no other process registers for
/// them until it commits.
pub fn load_many(tx: &Tx, uuids: &[&str]) -> Result<Sets> {
    const COLUMNS: &str = "uuid, name, process, command, interval_s, timeout_s, registered_at";
    let rows = match tx.backend() {
        Backend::Sqlite => {
            let mut rows = Vec::new();
            for uuid in uuids {
                rows.extend(tx.query(
                    &format!("SELECT {COLUMNS} FROM plugins WHERE uuid = ?1"),
                    params![*uuid],
                )?);
            }
            rows
        }
        Backend::Postgres => {
            let list: Vec<Option<&str>> = uuids.iter().map(|u| Some(*u)).collect();
            tx.query(
                &format!("SELECT {COLUMNS} FROM plugins WHERE uuid = ANY(?1::TEXT[])"),
                params![&list[..]],
            )?
        }
    };
    let mut sets = Sets::new();
    for uuid in uuids {
        sets.insert(uuid.to_string(), BTreeMap::new());
    }
    for r in rows {
        let uuid: String = r.get(0)?;
        sets.entry(uuid).or_default().insert(
            r.get(1)?,
            Declared {
                process: r.get(2)?,
                command: r.get(3)?,
                interval_s: r.get(4)?,
                timeout_s: r.get(5)?,
                registered_at: r.get(6)?,
            },
        );
    }
    Ok(sets)
}

/// What [`register`] does to a client's set, in memory: `process`'s
/// plugins replaced by `plugins`, a name another process had taken over.
pub fn apply(set: &mut BTreeMap<String, Declared>, process: &str, plugins: &[Plugin], at: f64) {
    set.retain(|_, d| d.process != process);
    for p in plugins {
        set.insert(
            p.name.clone(),
            Declared {
                process: process.to_string(),
                command: Some(p.command.clone()),
                interval_s: p.interval_s,
                timeout_s: Some(p.timeout_s),
                registered_at: at,
            },
        );
    }
}

/// Writes the difference between two states of clients' plugin sets
/// (`before` as loaded, `after` as [`apply`] left them): rows gone are
/// deleted, rows new or changed upserted. On PostgreSQL two statements.
pub fn store_sets(tx: &Tx, before: &Sets, after: &Sets) -> Result<()> {
    let empty = BTreeMap::new();
    let mut gone: Vec<(&str, &str)> = Vec::new();
    let mut put: Vec<(&str, &str, &Declared)> = Vec::new();
    let mut uuids: Vec<&String> = after.keys().collect();
    uuids.sort();
    for uuid in uuids {
        let new = &after[uuid];
        let old = before.get(uuid).unwrap_or(&empty);
        gone.extend(
            old.keys()
                .filter(|name| !new.contains_key(*name))
                .map(|name| (uuid.as_str(), name.as_str())),
        );
        put.extend(
            new.iter()
                .filter(|(name, d)| old.get(*name) != Some(d))
                .map(|(name, d)| (uuid.as_str(), name.as_str(), d)),
        );
    }
    const UPSERT: &str = "ON CONFLICT (uuid, name) DO UPDATE SET
                 process = excluded.process, command = excluded.command,
                 interval_s = excluded.interval_s, timeout_s = excluded.timeout_s,
                 registered_at = excluded.registered_at";
    match tx.backend() {
        Backend::Sqlite => {
            for (uuid, name) in &gone {
                tx.execute(
                    "DELETE FROM plugins WHERE uuid = ?1 AND name = ?2",
                    params![*uuid, *name],
                )?;
            }
            let sql = format!(
                "INSERT INTO plugins
                     (uuid, name, process, command, interval_s, timeout_s, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {UPSERT}"
            );
            for (uuid, name, d) in &put {
                tx.execute(
                    &sql,
                    params![
                        *uuid,
                        *name,
                        &d.process,
                        &d.command,
                        d.interval_s,
                        d.timeout_s,
                        d.registered_at
                    ],
                )?;
            }
        }
        Backend::Postgres => {
            if !gone.is_empty() {
                let uuids: Vec<Option<&str>> = gone.iter().map(|g| Some(g.0)).collect();
                let names: Vec<Option<&str>> = gone.iter().map(|g| Some(g.1)).collect();
                tx.execute(
                    "DELETE FROM plugins USING unnest(?1::TEXT[], ?2::TEXT[]) AS g(uuid, name)
                     WHERE plugins.uuid = g.uuid AND plugins.name = g.name",
                    params![&uuids[..], &names[..]],
                )?;
            }
            if !put.is_empty() {
                let uuids: Vec<Option<&str>> = put.iter().map(|p| Some(p.0)).collect();
                let names: Vec<Option<&str>> = put.iter().map(|p| Some(p.1)).collect();
                let procs: Vec<Option<&str>> =
                    put.iter().map(|p| Some(p.2.process.as_str())).collect();
                let commands: Vec<Option<&str>> =
                    put.iter().map(|p| p.2.command.as_deref()).collect();
                let intervals: Vec<Option<f64>> = put.iter().map(|p| p.2.interval_s).collect();
                let timeouts: Vec<Option<f64>> = put.iter().map(|p| p.2.timeout_s).collect();
                let ats: Vec<Option<f64>> = put.iter().map(|p| Some(p.2.registered_at)).collect();
                tx.execute(
                    &format!(
                        "INSERT INTO plugins
                             (uuid, name, process, command, interval_s, timeout_s, registered_at)
                         SELECT * FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::TEXT[], ?4::TEXT[],
                                              ?5::FLOAT8[], ?6::FLOAT8[], ?7::FLOAT8[])
                         {UPSERT}"
                    ),
                    params![
                        &uuids[..],
                        &names[..],
                        &procs[..],
                        &commands[..],
                        &intervals[..],
                        &timeouts[..],
                        &ats[..]
                    ],
                )?;
            }
        }
    }
    Ok(())
}

/// Upserts the `processes` rows of distinct (uuid, process name) pairs.
pub fn store_processes(tx: &Tx, rows: &[(&str, &Process, f64)]) -> Result<()> {
    const UPSERT: &str = "ON CONFLICT (uuid, name) DO UPDATE SET
             pid = excluded.pid, version = excluded.version,
             registered_at = excluded.registered_at";
    match tx.backend() {
        Backend::Sqlite => {
            let sql = format!(
                "INSERT INTO processes (uuid, name, pid, version, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) {UPSERT}"
            );
            for (uuid, p, at) in rows {
                tx.execute(&sql, params![*uuid, &p.name, p.pid, &p.version, *at])?;
            }
        }
        Backend::Postgres => {
            let uuids: Vec<Option<&str>> = rows.iter().map(|r| Some(r.0)).collect();
            let names: Vec<Option<&str>> = rows.iter().map(|r| Some(r.1.name.as_str())).collect();
            let pids: Vec<Option<i64>> = rows.iter().map(|r| r.1.pid).collect();
            let versions: Vec<Option<&str>> = rows.iter().map(|r| r.1.version.as_deref()).collect();
            let ats: Vec<Option<f64>> = rows.iter().map(|r| Some(r.2)).collect();
            tx.execute(
                &format!(
                    "INSERT INTO processes (uuid, name, pid, version, registered_at)
                     SELECT * FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::INT8[], ?4::TEXT[],
                                          ?5::FLOAT8[])
                     {UPSERT}"
                ),
                params![&uuids[..], &names[..], &pids[..], &versions[..], &ats[..]],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn plugin(name: &str) -> Plugin {
        Plugin {
            name: name.into(),
            command: format!("/usr/lib/nagios/plugins/{name}"),
            interval_s: Some(60.0),
            timeout_s: 10.0,
        }
    }

    fn names(c: &Tx) -> Vec<(String, String)> {
        c.query("SELECT name, process FROM plugins ORDER BY name", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
            .collect()
    }

    #[test]
    fn reregistration_replaces_the_set_of_that_process_only() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        let agent = Process {
            name: "vigil-agent".into(),
            pid: Some(1),
            version: None,
        };
        let app = Process {
            name: "app".into(),
            pid: None,
            version: Some("2".into()),
        };
        register(c, "u", &agent, &[plugin("load"), plugin("disk")], 1.0).unwrap();
        register(c, "u", &app, &[plugin("queue")], 1.0).unwrap();
        assert_eq!(register(c, "u", &agent, &[plugin("load")], 2.0).unwrap(), 2);
        assert_eq!(
            names(c),
            vec![
                ("load".into(), "vigil-agent".into()),
                ("queue".into(), "app".into())
            ]
        );
        // Another process taking a name over.
        register(c, "u", &app, &[plugin("queue"), plugin("load")], 3.0).unwrap();
        assert_eq!(
            names(c),
            vec![
                ("load".into(), "app".into()),
                ("queue".into(), "app".into())
            ]
        );
    }
}
