//! Read-only queries of the fleet for `vigil web`: counts, problems first,
//! one host, pages of hosts and notifications. The rows are those of
//! `vigil status` (`status::snapshot`), so the JSON API and `status --json`
//! say the same things the same way; only what a page needs is read, so a
//! page of a 10,000-host fleet does not read 10,000 hosts.

use super::{Result, Row, Tx};
use crate::params;
use crate::status::snapshot::{state_name, ClientRow, NotificationRow, PluginRow};
use serde::Serialize;

/// The overview's counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub hosts: i64,
    pub hosts_up: i64,
    pub hosts_down: i64,
    /// Never sent a heartbeat.
    pub hosts_unknown: i64,
    pub checks_ok: i64,
    pub checks_warning: i64,
    pub checks_critical: i64,
    pub checks_unknown: i64,
    /// Declared plugins without a result yet.
    pub checks_pending: i64,
    /// Notifications whose handlers have not all succeeded yet.
    pub notifications_unhandled: i64,
}

/// A notification with its handlers' outcome, for the notifications page.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationDetail {
    #[serde(flatten)]
    pub row: NotificationRow,
    /// The handlers that already succeeded (JSON array as stored).
    pub handlers_done: Vec<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<f64>,
}

/// The SQL condition "down" for a clients row, with the scheduler's rule
/// (`plan::schedulable`): ?1 = now, ?2 = grace.
const DOWN: &str = "(last_heartbeat IS NOT NULL AND NOT (heartbeat_interval_s > 0
     AND last_heartbeat + heartbeat_interval_s * ?2 > ?1))";

const CLIENT_COLUMNS: &str =
    "uuid, hostname, last_seen, last_heartbeat, heartbeat_interval_s, last_router";

/// One `clients` row (selected as `CLIENT_COLUMNS`) with its state; also
/// the reading `vigil status` uses.
pub fn client_row(r: &Row, now: f64, grace: f64) -> Result<ClientRow> {
    let last_heartbeat: Option<f64> = r.get(3)?;
    let interval: Option<f64> = r.get(4)?;
    let state = if last_heartbeat.is_none() {
        "unknown"
    } else if crate::scheduler::plan::schedulable(last_heartbeat, interval, grace, now) {
        "up"
    } else {
        "down"
    };
    Ok(ClientRow {
        uuid: r.get(0)?,
        hostname: r.get(1)?,
        state: state.to_string(),
        last_seen: r.get(2)?,
        last_heartbeat,
        heartbeat_interval_s: interval,
        last_router: r.get(5)?,
    })
}

const PLUGIN_COLUMNS: &str =
    "r.uuid, c.hostname, r.plugin, r.status, r.output, r.ts, r.changed_at, p.interval_s";

/// One plugin row, from `PLUGIN_COLUMNS` in that order (status reads
/// its own query's rows with it too).
pub(crate) fn plugin_row(r: &Row) -> Result<PluginRow> {
    let status: Option<i64> = r.get(3)?;
    Ok(PluginRow {
        uuid: r.get(0)?,
        hostname: r.get(1)?,
        plugin: r.get(2)?,
        status,
        state: state_name(status).to_string(),
        output: r.get(4)?,
        ts: r.get(5)?,
        changed_at: r.get(6)?,
        interval_s: r.get(7)?,
    })
}

const NOTIFICATION_COLUMNS: &str =
    "seq, created_at, uuid, hostname, origin, severity, source, message, state, attempts";

fn notification_row(r: &Row) -> Result<NotificationRow> {
    Ok(NotificationRow {
        seq: r.get(0)?,
        created_at: r.get(1)?,
        uuid: r.get(2)?,
        hostname: r.get(3)?,
        origin: r.get(4)?,
        severity: r.get(5)?,
        source: r.get(6)?,
        message: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
    })
}

pub fn summary(tx: &Tx, now: f64, grace: f64) -> Result<Summary> {
    let mut s = Summary::default();
    let r = tx.query_row(
        &format!(
            "SELECT COUNT(*),
                    COALESCE(SUM(CASE WHEN last_heartbeat IS NULL THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN {DOWN} THEN 1 ELSE 0 END), 0)
             FROM clients"
        ),
        params![now, grace],
    )?;
    s.hosts = r.get(0)?;
    s.hosts_unknown = r.get(1)?;
    s.hosts_down = r.get(2)?;
    s.hosts_up = s.hosts - s.hosts_unknown - s.hosts_down;
    for r in tx.query("SELECT status, COUNT(*) FROM results GROUP BY status", &[])? {
        let n: i64 = r.get(1)?;
        match r.get::<i64>(0)? {
            0 => s.checks_ok += n,
            1 => s.checks_warning += n,
            2 => s.checks_critical += n,
            _ => s.checks_unknown += n,
        }
    }
    s.checks_pending = tx.query_value(
        "SELECT COUNT(*) FROM plugins p
         WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.uuid = p.uuid AND r.plugin = p.name)",
        &[],
    )?;
    s.notifications_unhandled = tx.query_value(
        "SELECT COUNT(*) FROM notifications WHERE state IN ('pending', 'failed')",
        &[],
    )?;
    Ok(s)
}

/// Down hosts, longest silent first.
pub fn down_hosts(
    tx: &Tx,
    now: f64,
    grace: f64,
    limit: usize,
    offset: usize,
) -> Result<Vec<ClientRow>> {
    tx.query(
        &format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE {DOWN}
             ORDER BY last_heartbeat, hostname NULLS FIRST, uuid LIMIT ?3 OFFSET ?4"
        ),
        params![now, grace, limit as i64, offset as i64],
    )?
    .iter()
    .map(|r| client_row(r, now, grace))
    .collect()
}

/// Results that are not OK: CRITICAL, then WARNING, then UNKNOWN, the
/// most recent change first in each.
pub fn problem_checks(tx: &Tx, limit: usize, offset: usize) -> Result<Vec<PluginRow>> {
    tx.query(
        &format!(
            "SELECT {PLUGIN_COLUMNS} FROM results r
             LEFT JOIN clients c ON c.uuid = r.uuid
             LEFT JOIN plugins p ON p.uuid = r.uuid AND p.name = r.plugin
             WHERE r.status IN (1, 2, 3)
             ORDER BY CASE r.status WHEN 2 THEN 0 WHEN 1 THEN 1 ELSE 2 END, r.changed_at DESC,
                      r.uuid, r.plugin
             LIMIT ?1 OFFSET ?2"
        ),
        params![limit as i64, offset as i64],
    )?
    .iter()
    .map(plugin_row)
    .collect()
}

/// The latest `limit` notifications, newest first.
pub fn recent_notifications(tx: &Tx, limit: usize) -> Result<Vec<NotificationRow>> {
    tx.query(
        &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications ORDER BY seq DESC LIMIT ?1"),
        params![limit as i64],
    )?
    .iter()
    .map(notification_row)
    .collect()
}

/// Notifications whose handlers have not all succeeded, newest first.
pub fn unhandled_notifications(tx: &Tx, limit: usize) -> Result<Vec<NotificationRow>> {
    tx.query(
        &format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications
             WHERE state IN ('pending', 'failed') ORDER BY seq DESC LIMIT ?1"
        ),
        params![limit as i64],
    )?
    .iter()
    .map(notification_row)
    .collect()
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A page of hosts by name (those whose hostname or UUID contains
/// `search`, when given, ignoring ASCII case), and how many match in all.
pub fn hosts(
    tx: &Tx,
    now: f64,
    grace: f64,
    search: Option<&str>,
    limit: usize,
    offset: usize,
) -> Result<(Vec<ClientRow>, i64)> {
    let pattern = like_pattern(search.unwrap_or(""));
    // SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does.
    const FILTER: &str =
        "(hostname /*pg:I*/LIKE ?1 ESCAPE '\\' OR uuid /*pg:I*/LIKE ?1 ESCAPE '\\')";
    let total = tx.query_value(
        &format!("SELECT COUNT(*) FROM clients WHERE {FILTER}"),
        params![&pattern],
    )?;
    let rows = tx
        .query(
            &format!(
                "SELECT {CLIENT_COLUMNS} FROM clients WHERE {FILTER}
                 ORDER BY hostname NULLS FIRST, uuid LIMIT ?2 OFFSET ?3"
            ),
            params![&pattern, limit as i64, offset as i64],
        )?
        .iter()
        .map(|r| client_row(r, now, grace))
        .collect::<Result<_>>()?;
    Ok((rows, total))
}

pub fn host(tx: &Tx, now: f64, grace: f64, uuid: &str) -> Result<Option<ClientRow>> {
    tx.query_opt(
        &format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE uuid = ?1"),
        params![uuid],
    )?
    .map(|r| client_row(&r, now, grace))
    .transpose()
}

/// The most plugins a host's page or API shows: a client may report
/// results under any number of names, and a page must stay cheap.
pub const HOST_PLUGINS_MAX: usize = 1_000;

/// One host's plugins, by name, at most [`HOST_PLUGINS_MAX`]: results, and
/// declared plugins without one.
pub fn host_plugins(tx: &Tx, uuid: &str) -> Result<Vec<PluginRow>> {
    tx.query(
        &format!(
            "SELECT {PLUGIN_COLUMNS} FROM results r
             LEFT JOIN clients c ON c.uuid = r.uuid
             LEFT JOIN plugins p ON p.uuid = r.uuid AND p.name = r.plugin
             WHERE r.uuid = ?1
             UNION ALL
             SELECT p.uuid, c.hostname, p.name, NULL, NULL, NULL, NULL, p.interval_s
             FROM plugins p LEFT JOIN clients c ON c.uuid = p.uuid
             WHERE p.uuid = ?1
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.uuid = p.uuid AND r.plugin = p.name)
             ORDER BY 3 LIMIT ?2"
        ),
        params![uuid, HOST_PLUGINS_MAX as i64],
    )?
    .iter()
    .map(plugin_row)
    .collect()
}

/// One host's most recent notifications, newest first; `origin` narrows
/// them (`result` gives its plugins' state changes).
pub fn host_notifications(
    tx: &Tx,
    uuid: &str,
    origin: Option<&str>,
    limit: usize,
) -> Result<Vec<NotificationRow>> {
    // Two statements rather than `?2 IS NULL OR origin = ?2`, which
    // PostgreSQL cannot plan once for both cases.
    let rows = match origin {
        Some(origin) => tx.query(
            &format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications
                 WHERE uuid = ?1 AND origin = ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            params![uuid, origin, limit as i64],
        )?,
        None => tx.query(
            &format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications
                 WHERE uuid = ?1 ORDER BY seq DESC LIMIT ?2"
            ),
            params![uuid, limit as i64],
        )?,
    };
    rows.iter().map(notification_row).collect()
}

/// A page of notifications, newest first, with their handlers' outcome,
/// and how many there are in all.
pub fn notifications(
    tx: &Tx,
    limit: usize,
    offset: usize,
) -> Result<(Vec<NotificationDetail>, i64)> {
    let total = tx.query_value("SELECT COUNT(*) FROM notifications", &[])?;
    let rows = tx
        .query(
            &format!(
                "SELECT {NOTIFICATION_COLUMNS}, handlers_done, last_error, next_attempt_at
                 FROM notifications ORDER BY seq DESC LIMIT ?1 OFFSET ?2"
            ),
            params![limit as i64, offset as i64],
        )?
        .iter()
        .map(|r| {
            let done: String = r.get(10)?;
            Ok(NotificationDetail {
                row: notification_row(r)?,
                handlers_done: serde_json::from_str(&done).unwrap_or_default(),
                last_error: r.get(11)?,
                next_attempt_at: r.get(12)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn counts_problems_and_search() {
        let mut store = test_store();
        let tx = store.write().unwrap();
        let c = &tx;
        let now = 1_700_000_000.0;
        for (uuid, host, hb) in [
            ("u1", "web_1", Some(now - 5.0)),
            ("u2", "db1", Some(now - 600.0)),
            ("u3", "new", None),
        ] {
            c.execute(
                "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_heartbeat, heartbeat_interval_s)
                 VALUES (?1, ?2, ?3, ?3, ?4, 10)",
                params![uuid, host, now - 1000.0, hb],
            )
            .unwrap();
        }
        for (plugin, status) in [("disk", 2), ("load", 0), ("swap", 1), ("x", 3)] {
            c.execute(
                "INSERT INTO results (uuid, plugin, status, ts, changed_at) VALUES ('u1', ?1, ?2, ?3, ?3)",
                params![plugin, status, now],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO plugins (uuid, name, process, registered_at) VALUES ('u2', 'p', 'agent', 0)",
            &[],
        )
        .unwrap();
        let s = summary(c, now, 3.0).unwrap();
        assert_eq!(
            (s.hosts, s.hosts_up, s.hosts_down, s.hosts_unknown),
            (3, 1, 1, 1)
        );
        assert_eq!(
            (
                s.checks_ok,
                s.checks_warning,
                s.checks_critical,
                s.checks_unknown,
                s.checks_pending
            ),
            (1, 1, 1, 1, 1)
        );
        let down = down_hosts(c, now, 3.0, 10, 0).unwrap();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].uuid, "u2");
        let problems: Vec<String> = problem_checks(c, 10, 0)
            .unwrap()
            .into_iter()
            .map(|p| p.state)
            .collect();
        assert_eq!(problems, ["CRITICAL", "WARNING", "UNKNOWN"]);
        // `_` is a literal in the search, not LIKE's wildcard.
        let (found, total) = hosts(c, now, 3.0, Some("b_"), 10, 0).unwrap();
        assert_eq!((found.len(), total), (1, 1));
        assert_eq!(found[0].uuid, "u1");
        let (_, total) = hosts(c, now, 3.0, None, 1, 0).unwrap();
        assert_eq!(total, 3);
        assert_eq!(host_plugins(c, "u2").unwrap()[0].state, "PENDING");
        // A client with more plugins than a page shows: the first by name.
        for n in 0..=HOST_PLUGINS_MAX {
            let name = format!("p{n:05}");
            c.execute(
                "INSERT INTO plugins (uuid, name, process, registered_at) VALUES ('u3', ?1, 'agent', 0)",
                params![name.as_str()],
            )
            .unwrap();
        }
        let many = host_plugins(c, "u3").unwrap();
        assert_eq!(many.len(), HOST_PLUGINS_MAX);
        assert_eq!(many[0].plugin, "p00000");
        assert_eq!(host(c, now, 3.0, "u1").unwrap().unwrap().state, "up");
        assert!(host(c, now, 3.0, "nobody").unwrap().is_none());
        // The search ignores ASCII case on both backends.
        let (found, _) = hosts(c, now, 3.0, Some("WEB"), 10, 0).unwrap();
        assert_eq!(found.len(), 1);
        c.execute(
            "INSERT INTO notifications (uuid, id, origin, severity, body, created_at, state)
             VALUES ('u1', 'n1', 'result', 'critical', '{}', ?1, 'pending'),
                    ('u1', 'n2', 'client', 'warning', '{}', ?1, 'handled')",
            params![now],
        )
        .unwrap();
        assert_eq!(host_notifications(c, "u1", None, 10).unwrap().len(), 2);
        let changes = host_notifications(c, "u1", Some("result"), 10).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].origin, "result");
        assert_eq!(unhandled_notifications(c, 10).unwrap().len(), 1);
        let (page, total) = notifications(c, 1, 0).unwrap();
        assert_eq!((page.len(), total), (1, 2));
        assert_eq!(summary(c, now, 3.0).unwrap().notifications_unhandled, 1);
    }
}
