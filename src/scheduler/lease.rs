//! The scheduler lease: which of several schedulers may send runs.
//!
//! One row of table `leases` (name `scheduler`) names the holder and when
//! its lease expires. A scheduler takes or renews it in one write
//! transaction: the read locks the row (SQLite's write lock; `FOR UPDATE`
//! on PostgreSQL), and the upsert is conditional (it changes the row only
//! if it is ours or expired), so of two schedulers racing for a free or
//! lapsed lease, on one host or two, exactly one wins. The holder renews
//! well before expiry; a holder killed with -9 simply stops renewing and a
//! peer takes over once the lease lapses. Every batch of runs is recorded
//! only while the lease is held, checked inside the recording transaction
//! with the row share-locked (see `dispatch.rs`), so a takeover waits for
//! a recording under way to commit and then sees its runs, and a holder
//! that lost the lease stops sending at once.

use crate::params;
use crate::store::{Result, Store, Tx};

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

/// Reads the lease row inside a transaction, locking it for an update.
pub fn read(tx: &Tx) -> Result<Option<Lease>> {
    read_with(
        tx,
        "SELECT holder, expires_at FROM leases WHERE name = ?1 /*pg: FOR UPDATE*/",
    )
}

fn read_with(tx: &Tx, sql: &str) -> Result<Option<Lease>> {
    tx.query_opt(sql, params![NAME])?
        .map(|r| {
            Ok(Lease {
                holder: r.get(0)?,
                expires_at: r.get(1)?,
            })
        })
        .transpose()
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
pub fn acquire(store: &mut Store, me: &str, secs: f64, now: f64) -> Result<Option<Held>> {
    let tx = store.write()?;
    let current = read(&tx)?;
    if !may_take(current.as_ref(), me, now) {
        return Ok(None);
    }
    let continued = current.is_some_and(|lease| lease.holder == me && lease.expires_at > now);
    let expires_at = now + secs;
    // Conditional, for the row that did not exist when read (two inserting
    // at once: the second finds the first's row and takes it only if the
    // first's lease is over).
    let changed = tx.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
        params![NAME, me, expires_at, now],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    tx.commit()?;
    Ok(Some(Held {
        expires_at,
        continued,
    }))
}

/// Whether `me` holds an unexpired lease, read inside the caller's
/// transaction so what it writes next is covered by the lease: the row is
/// share-locked on PostgreSQL, so no peer takes it over until that
/// transaction ends.
pub fn held_in(tx: &Tx, me: &str, now: f64) -> Result<bool> {
    let lease = read_with(
        tx,
        "SELECT holder, expires_at FROM leases WHERE name = ?1 /*pg: FOR SHARE*/",
    )?;
    Ok(lease.is_some_and(|lease| lease.holder == me && lease.expires_at > now))
}

/// Gives the lease up (on a clean stop), so a peer takes over at its next
/// check instead of waiting for expiry. Returns whether `me` held it.
pub fn release(store: &mut Store, me: &str) -> Result<bool> {
    let n = store.in_write(|tx| {
        tx.execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![NAME, me],
        )
    })?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn a_lapsed_lease_taken_again_is_not_a_continuation() {
        let mut a = test_store();
        let first = acquire(&mut a, "a", 10.0, 100.0).unwrap().unwrap();
        assert!(!first.continued, "a first take");
        let renewed = acquire(&mut a, "a", 10.0, 105.0).unwrap().unwrap();
        assert!(renewed.continued);
        // Stalled past the expiry: someone may have held it meanwhile.
        let after_lapse = acquire(&mut a, "a", 10.0, 120.0).unwrap().unwrap();
        assert!(!after_lapse.continued);
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

    fn expiry(store: &mut Store, me: &str, now: f64) -> Option<f64> {
        acquire(store, me, 10.0, now).unwrap().map(|h| h.expires_at)
    }

    #[test]
    fn one_holder_until_it_lapses_or_is_released() {
        let mut a = test_store();
        let mut b = a.open_again();
        assert_eq!(expiry(&mut a, "a", 100.0), Some(110.0));
        assert_eq!(expiry(&mut b, "b", 105.0), None);
        assert_eq!(expiry(&mut a, "a", 105.0), Some(115.0));
        assert_eq!(expiry(&mut b, "b", 115.0), Some(125.0));
        let tx = a.read().unwrap();
        assert!(!held_in(&tx, "a", 116.0).unwrap());
        drop(tx);
        assert!(!release(&mut a, "a").unwrap());
        assert!(release(&mut b, "b").unwrap());
        assert_eq!(expiry(&mut a, "a", 116.0), Some(126.0));
        let tx = a.read().unwrap();
        assert!(held_in(&tx, "a", 120.0).unwrap());
    }

    /// Many schedulers on as many connections racing for one lapsed lease
    /// at once: exactly one wins each round (on PostgreSQL, a real race
    /// between server sessions).
    #[test]
    fn racing_schedulers_one_winner() {
        const RACERS: usize = 4;
        let first = test_store();
        for round in 0..5 {
            let now = 1000.0 + 100.0 * round as f64;
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(RACERS));
            let winners = std::thread::scope(|s| {
                let handles: Vec<_> = (0..RACERS)
                    .map(|i| {
                        let barrier = barrier.clone();
                        let target = first.target.clone();
                        s.spawn(move || {
                            let mut store = Store::open(&target).unwrap();
                            barrier.wait();
                            acquire(&mut store, &format!("s{i}"), 10.0, now)
                                .unwrap()
                                .is_some()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .filter(|won| *won)
                    .count()
            });
            assert_eq!(winners, 1, "round {round}");
        }
    }
}
