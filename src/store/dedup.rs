//! The `handled` table: message ids already handled, per client, so a
//! message the agent resent (its ack was lost, or it went through two
//! routers) is not handled twice.

use rusqlite::{params, Connection, OptionalExtension};

/// Whether `(uuid, id)` was handled already.
pub fn is_handled(conn: &Connection, uuid: &str, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM handled WHERE uuid = ?1 AND id = ?2")?
        .query_row([uuid, id], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Records `(uuid, id)` as handled. Returns false when it already was.
pub fn mark_handled(
    conn: &Connection,
    uuid: &str,
    id: &str,
    kind: &str,
    at: f64,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO handled (uuid, id, type, handled_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![uuid, id, kind, at])?;
    Ok(inserted == 1)
}

/// Forgets ids handled before `before`, and the handled notifications
/// logged before it: an agent gives up resending long before, so both
/// tables stay bounded (pending and failed notifications are kept).
/// Returns how many rows were removed.
pub fn prune(conn: &Connection, before: f64) -> rusqlite::Result<usize> {
    let ids = conn
        .prepare_cached("DELETE FROM handled WHERE handled_at < ?1")?
        .execute([before])?;
    let log = conn
        .prepare_cached("DELETE FROM notifications WHERE state = 'handled' AND created_at < ?1")?
        .execute([before])?;
    Ok(ids + log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn marks_once_and_prunes() {
        let store = test_store();
        let c = &store.conn;
        assert!(!is_handled(c, "u", "1").unwrap());
        assert!(mark_handled(c, "u", "1", "notification", 10.0).unwrap());
        assert!(!mark_handled(c, "u", "1", "notification", 11.0).unwrap());
        assert!(is_handled(c, "u", "1").unwrap());
        assert!(!is_handled(c, "v", "1").unwrap());
        assert_eq!(prune(c, 10.5).unwrap(), 1);
        assert!(!is_handled(c, "u", "1").unwrap());
    }
}
