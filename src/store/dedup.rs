//! The `handled` table: message ids already handled, per client, so a
//! message the agent resent (its ack was lost, or it went through two
//! routers) is not handled twice.

//!
//! The primary key (uuid, id) is what makes it hold across processes: of
//! two sinks marking the same id, one inserts and the other finds it.

use super::{Backend, Result, Tx};
use crate::params;

/// Whether `(uuid, id)` was handled already.
pub fn is_handled(tx: &Tx, uuid: &str, id: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM handled WHERE uuid = ?1 AND id = ?2",
            params![uuid, id],
        )?
        .is_some())
}

/// Records `(uuid, id)` as handled. Returns false when it already was.
pub fn mark_handled(tx: &Tx, uuid: &str, id: &str, kind: &str, at: f64) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO handled (uuid, id, type, handled_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (uuid, id) DO NOTHING",
        params![uuid, id, kind, at],
    )?;
    Ok(inserted == 1)
}

/// [`mark_handled`] for several (uuid, id) of one type: on PostgreSQL one
/// statement.
pub fn mark_handled_many(tx: &Tx, keys: &[(&str, &str)], kind: &str, at: f64) -> Result<()> {
    match tx.backend() {
        Backend::Sqlite => {
            for (uuid, id) in keys {
                mark_handled(tx, uuid, id, kind, at)?;
            }
        }
        Backend::Postgres => {
            let uuids: Vec<Option<&str>> = keys.iter().map(|k| Some(k.0)).collect();
            let ids: Vec<Option<&str>> = keys.iter().map(|k| Some(k.1)).collect();
            tx.execute(
                "INSERT INTO handled (uuid, id, type, handled_at)
                 SELECT k.uuid, k.id, ?3, ?4 FROM unnest(?1::TEXT[], ?2::TEXT[]) AS k(uuid, id)
                 ON CONFLICT (uuid, id) DO NOTHING",
                params![&uuids[..], &ids[..], kind, at],
            )?;
        }
    }
    Ok(())
}

/// Forgets ids handled before `before`, and the handled notifications
/// logged before it: an agent gives up resending long before, so both
/// tables stay bounded (pending and failed notifications are kept).
/// Returns how many rows were removed.
pub fn prune(tx: &Tx, before: f64) -> Result<usize> {
    let ids = tx.execute("DELETE FROM handled WHERE handled_at < ?1", params![before])?;
    let log = tx.execute(
        "DELETE FROM notifications WHERE state = 'handled' AND created_at < ?1",
        params![before],
    )?;
    Ok(ids + log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn marks_once_and_prunes() {
        let mut store = test_store();
        let c = &store.write().unwrap();
        assert!(!is_handled(c, "u", "1").unwrap());
        assert!(mark_handled(c, "u", "1", "notification", 10.0).unwrap());
        assert!(!mark_handled(c, "u", "1", "notification", 11.0).unwrap());
        assert!(is_handled(c, "u", "1").unwrap());
        assert!(!is_handled(c, "v", "1").unwrap());
        assert_eq!(prune(c, 10.5).unwrap(), 1);
        assert!(!is_handled(c, "u", "1").unwrap());
    }
}
