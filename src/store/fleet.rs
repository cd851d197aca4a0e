//! Read-only queries of the fleet for `vigil web`: counts, problems first,
//! one host, pages of hosts and notifications. The rows are those of
//! `vigil status` (`status::snapshot`), so the JSON API and `status --json`
//! say the same things the same way; only what a page needs is read, so a
//! page of a 10,000-host fleet does not read 10,000 hosts.

use crate::status::snapshot::{state_name, ClientRow, NotificationRow, PluginRow};
use rusqlite::{params, Connection, OptionalExtension, Row};
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
pub fn client_row(r: &Row, now: f64, grace: f64) -> rusqlite::Result<ClientRow> {
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

fn plugin_row(r: &Row) -> rusqlite::Result<PluginRow> {
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

fn notification_row(r: &Row) -> rusqlite::Result<NotificationRow> {
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

pub fn summary(conn: &Connection, now: f64, grace: f64) -> rusqlite::Result<Summary> {
    let mut s = Summary::default();
    conn.prepare_cached(&format!(
        "SELECT COUNT(*), COALESCE(SUM(last_heartbeat IS NULL), 0), COALESCE(SUM({DOWN}), 0)
         FROM clients"
    ))?
    .query_row(params![now, grace], |r| {
        s.hosts = r.get(0)?;
        s.hosts_unknown = r.get(1)?;
        s.hosts_down = r.get(2)?;
        Ok(())
    })?;
    s.hosts_up = s.hosts - s.hosts_unknown - s.hosts_down;
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM results GROUP BY status")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        match r.get::<_, i64>(0)? {
            0 => s.checks_ok += n,
            1 => s.checks_warning += n,
            2 => s.checks_critical += n,
            _ => s.checks_unknown += n,
        }
    }
    s.checks_pending = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM plugins p
             WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.uuid = p.uuid AND r.plugin = p.name)",
        )?
        .query_row([], |r| r.get(0))?;
    s.notifications_unhandled = conn
        .prepare_cached("SELECT COUNT(*) FROM notifications WHERE state IN ('pending', 'failed')")?
        .query_row([], |r| r.get(0))?;
    Ok(s)
}

/// Down hosts, longest silent first.
pub fn down_hosts(
    conn: &Connection,
    now: f64,
    grace: f64,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<Vec<ClientRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients WHERE {DOWN}
         ORDER BY last_heartbeat, hostname, uuid LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![now, grace, limit as i64, offset as i64], |r| {
        client_row(r, now, grace)
    })?;
    rows.collect()
}

/// Results that are not OK: CRITICAL, then WARNING, then UNKNOWN, the
/// most recent change first in each.
pub fn problem_checks(
    conn: &Connection,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<Vec<PluginRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM results r
         LEFT JOIN clients c ON c.uuid = r.uuid
         LEFT JOIN plugins p ON p.uuid = r.uuid AND p.name = r.plugin
         WHERE r.status IN (1, 2, 3)
         ORDER BY CASE r.status WHEN 2 THEN 0 WHEN 1 THEN 1 ELSE 2 END, r.changed_at DESC
         LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map(params![limit as i64, offset as i64], plugin_row)?;
    rows.collect()
}

/// Notifications whose handlers have not all succeeded, newest first.
pub fn unhandled_notifications(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<NotificationRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications
         WHERE state IN ('pending', 'failed') ORDER BY seq DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], notification_row)?;
    rows.collect()
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
/// `search`, when given), and how many match in all.
pub fn hosts(
    conn: &Connection,
    now: f64,
    grace: f64,
    search: Option<&str>,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<(Vec<ClientRow>, i64)> {
    let pattern = like_pattern(search.unwrap_or(""));
    let filter =
        |n: &str| format!("(hostname LIKE ?{n} ESCAPE '\\' OR uuid LIKE ?{n} ESCAPE '\\')");
    let total = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM clients WHERE {}",
            filter("1")
        ))?
        .query_row([&pattern], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients WHERE {}
         ORDER BY hostname, uuid LIMIT ?4 OFFSET ?5",
        filter("3")
    ))?;
    let rows = stmt
        .query_map(
            params![now, grace, pattern, limit as i64, offset as i64],
            |r| client_row(r, now, grace),
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows, total))
}

pub fn host(
    conn: &Connection,
    now: f64,
    grace: f64,
    uuid: &str,
) -> rusqlite::Result<Option<ClientRow>> {
    conn.prepare_cached(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients WHERE uuid = ?1"
    ))?
    .query_row([uuid], |r| client_row(r, now, grace))
    .optional()
}

/// Every plugin of one host: results, and declared plugins without one.
pub fn host_plugins(conn: &Connection, uuid: &str) -> rusqlite::Result<Vec<PluginRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM results r
         LEFT JOIN clients c ON c.uuid = r.uuid
         LEFT JOIN plugins p ON p.uuid = r.uuid AND p.name = r.plugin
         WHERE r.uuid = ?1
         UNION ALL
         SELECT p.uuid, c.hostname, p.name, NULL, NULL, NULL, NULL, p.interval_s
         FROM plugins p LEFT JOIN clients c ON c.uuid = p.uuid
         WHERE p.uuid = ?1
           AND NOT EXISTS (SELECT 1 FROM results r WHERE r.uuid = p.uuid AND r.plugin = p.name)
         ORDER BY 3"
    ))?;
    let rows = stmt.query_map([uuid], plugin_row)?;
    rows.collect()
}

/// One host's most recent notifications, newest first; `origin` narrows
/// them (`result` gives its plugins' state changes).
pub fn host_notifications(
    conn: &Connection,
    uuid: &str,
    origin: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<NotificationRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications
         WHERE uuid = ?1 AND (?2 IS NULL OR origin = ?2)
         ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![uuid, origin, limit as i64], notification_row)?;
    rows.collect()
}

/// A page of notifications, newest first, with their handlers' outcome,
/// and how many there are in all.
pub fn notifications(
    conn: &Connection,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<(Vec<NotificationDetail>, i64)> {
    let total = conn
        .prepare_cached("SELECT COUNT(*) FROM notifications")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS}, handlers_done, last_error, next_attempt_at
         FROM notifications ORDER BY seq DESC LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt
        .query_map(params![limit as i64, offset as i64], |r| {
            let done: String = r.get(10)?;
            Ok(NotificationDetail {
                row: notification_row(r)?,
                handlers_done: serde_json::from_str(&done).unwrap_or_default(),
                last_error: r.get(11)?,
                next_attempt_at: r.get(12)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn counts_problems_and_search() {
        let store = test_store();
        let c = &store.conn;
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
            [],
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
        assert_eq!(host(c, now, 3.0, "u1").unwrap().unwrap().state, "up");
    }
}
