//! The `processes` and `plugins` tables: what each client's processes
//! declared in their last registration.
//!
//! A registration replaces that (client, process)'s row and its whole
//! plugin set, so a plugin dropped from the agent's configuration
//! disappears. A plugin name is unique per client (`run_plugin` names only
//! the plugin): a process declaring a name another process of the same
//! client had takes it over.

use super::{Result, Tx};
use crate::params;

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
