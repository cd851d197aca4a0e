//! The scheduler lease: which of several schedulers may send runs.
//!
//! One row of table `leases` (name `scheduler`) names the holder and when
//! its lease expires. A scheduler takes or renews it in one IMMEDIATE
//! transaction (SQLite's write lock, so two cannot both win): it wins when
//! there is no row, the row is its own, or the row has expired. The holder
//! renews well before expiry; a holder killed with -9 simply stops renewing
//! and a peer takes over once the lease lapses. Every batch of runs is
//! recorded only while the lease is held (see `dispatch.rs`), so a holder
//! that lost the lease stops sending at once.

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

/// The lease's name in table `leases`.
pub const NAME: &str = "scheduler";

/// The lease row as read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub holder: String,
    pub expires_at: f64,
}

/// Whether `me` may take (or keep) `current` at `now`.
pub fn may_take(current: Option<&Lease>, me: &str, now: f64) -> bool {
    match current {
        None => true,
        Some(lease) => lease.holder == me || lease.expires_at <= now,
    }
}

/// Reads the lease row inside a transaction.
pub fn read(tx: &Connection) -> rusqlite::Result<Option<Lease>> {
    tx.query_row(
        "SELECT holder, expires_at FROM leases WHERE name = ?1",
        [NAME],
        |r| {
            Ok(Lease {
                holder: r.get(0)?,
                expires_at: r.get(1)?,
            })
        },
    )
    .optional()
}

/// A lease `me` holds after [`acquire`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    pub expires_at: f64,
    /// The lease was already ours and had not lapsed: nobody else can have
    /// sent runs since our last renewal. False after a lapse, even if no
    /// one else took it meanwhile: another may have held it and let go.
    pub continued: bool,
}

/// Takes or renews the lease for `secs` seconds. Returns it when `me`
/// holds it, None when another holder's lease is still running.
pub fn acquire(
    conn: &mut Connection,
    me: &str,
    secs: f64,
    now: f64,
) -> rusqlite::Result<Option<Held>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = read(&tx)?;
    if !may_take(current.as_ref(), me, now) {
        return Ok(None);
    }
    let continued = current.is_some_and(|lease| lease.holder == me && lease.expires_at > now);
    let expires_at = now + secs;
    tx.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
        params![NAME, me, expires_at],
    )?;
    tx.commit()?;
    Ok(Some(Held {
        expires_at,
        continued,
    }))
}

/// Whether `me` holds an unexpired lease, read inside the caller's
/// transaction so what it writes next is covered by the lease.
pub fn held_in(tx: &Transaction, me: &str, now: f64) -> rusqlite::Result<bool> {
    Ok(read(tx)?.is_some_and(|lease| lease.holder == me && lease.expires_at > now))
}

/// Gives the lease up (on a clean stop), so a peer takes over at its next
/// check instead of waiting for expiry. Returns whether `me` held it.
pub fn release(conn: &Connection, me: &str) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
        params![NAME, me],
    )?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_lease_taken_again_is_not_a_continuation() {
        let dir = std::env::temp_dir().join(format!("vigil-lease-{}", uuid::Uuid::new_v4()));
        let mut a = crate::store::Store::open(&dir.join("v.db")).unwrap();
        let first = acquire(&mut a.conn, "a", 10.0, 100.0).unwrap().unwrap();
        assert!(!first.continued, "a first take");
        let renewed = acquire(&mut a.conn, "a", 10.0, 105.0).unwrap().unwrap();
        assert!(renewed.continued);
        // Stalled past the expiry: someone may have held it meanwhile.
        let after_lapse = acquire(&mut a.conn, "a", 10.0, 120.0).unwrap().unwrap();
        assert!(!after_lapse.continued);
        std::fs::remove_dir_all(dir).unwrap();
    }
    use crate::store::Store;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("vigil-lease-{}", uuid::Uuid::new_v4()));
        let store = Store::open(&dir.join("vigil.db")).unwrap();
        (store, dir)
    }

    #[test]
    fn decision() {
        let lease = Lease {
            holder: "a".into(),
            expires_at: 100.0,
        };
        assert!(may_take(None, "b", 50.0));
        assert!(may_take(Some(&lease), "a", 50.0));
        assert!(!may_take(Some(&lease), "b", 99.9));
        assert!(may_take(Some(&lease), "b", 100.0));
    }

    #[test]
    fn one_holder_until_it_lapses_or_is_released() {
        let (mut a, dir) = store();
        let mut b = Store::open(a.path()).unwrap();
        assert_eq!(
            acquire(&mut a.conn, "a", 10.0, 100.0)
                .unwrap()
                .map(|h| h.expires_at),
            Some(110.0)
        );
        assert_eq!(
            acquire(&mut b.conn, "b", 10.0, 105.0)
                .unwrap()
                .map(|h| h.expires_at),
            None
        );
        assert_eq!(
            acquire(&mut a.conn, "a", 10.0, 105.0)
                .unwrap()
                .map(|h| h.expires_at),
            Some(115.0)
        );
        assert_eq!(
            acquire(&mut b.conn, "b", 10.0, 115.0)
                .unwrap()
                .map(|h| h.expires_at),
            Some(125.0)
        );
        let tx = a.conn.transaction().unwrap();
        assert!(!held_in(&tx, "a", 116.0).unwrap());
        drop(tx);
        assert!(!release(&a.conn, "a").unwrap());
        assert!(release(&b.conn, "b").unwrap());
        assert_eq!(
            acquire(&mut a.conn, "a", 10.0, 116.0)
                .unwrap()
                .map(|h| h.expires_at),
            Some(126.0)
        );
        let tx = a.conn.transaction().unwrap();
        assert!(held_in(&tx, "a", 120.0).unwrap());
        drop(tx);
        drop((a, b));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
