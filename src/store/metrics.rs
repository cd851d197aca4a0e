//! Recent metric samples per (client, metric name), so `vigil web` can plot
//! a host's metrics with nothing but the store: Graphite stays the
//! long-term home of the same numbers.
//!
//! Two tables keep the store bounded: `metric_raw` holds every sample for
//! the raw retention (an hour by default); [`roll_up`] folds older raw
//! samples into `metric_minute` (a sum and a count per minute, so folding
//! the same minute in two passes still averages right) and deletes them,
//! and drops minutes past the minute retention (a day by default). The
//! sinks insert inside their batch's transaction, so a batch of samples
//! costs one commit.

use super::{Backend, Result, Store, Tx};
use crate::params;

/// A metric name longer than this is refused (it would only bloat the
/// store; Graphite paths are far shorter).
pub const MAX_NAME: usize = 250;

/// One point of a series: Unix seconds and the value (a minute's average
/// for rolled-up samples).
pub type Point = (f64, f64);

/// Stores one sample. The caller clamps `ts` to the time it was received,
/// so a client's clock far in the future cannot keep samples forever.
/// Returns false (and stores nothing) for a non-finite value or a name that
/// is empty or too long. A second sample at the same time replaces the
/// first.
pub fn record(tx: &Tx, uuid: &str, name: &str, ts: f64, value: f64) -> Result<bool> {
    if !value.is_finite() || !ts.is_finite() || name.is_empty() || name.len() > MAX_NAME {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO metric_raw (uuid, name, ts, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (uuid, name, ts) DO UPDATE SET value = excluded.value",
        params![uuid, name, ts, value],
    )?;
    Ok(true)
}

/// One sample waiting to be stored with its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub uuid: String,
    pub name: String,
    pub ts: f64,
    pub value: f64,
}

/// Stores a batch's samples, as [`record`] one by one would (what it
/// refuses is left out, a later sample at the same time replaces an
/// earlier one): on PostgreSQL one statement. Returns how many were kept.
pub fn record_many(tx: &Tx, samples: &[Sample]) -> Result<usize> {
    let keep = |s: &&Sample| {
        s.value.is_finite() && s.ts.is_finite() && !s.name.is_empty() && s.name.len() <= MAX_NAME
    };
    match tx.backend() {
        Backend::Sqlite => {
            let mut n = 0;
            for s in samples.iter().filter(keep) {
                n += usize::from(record(tx, &s.uuid, &s.name, s.ts, s.value)?);
            }
            Ok(n)
        }
        Backend::Postgres => {
            // One row per key (the last wins), in key order: a statement
            // may not touch a row twice, and two sinks lock in one order.
            let mut last: std::collections::BTreeMap<(&str, &str, u64), f64> =
                std::collections::BTreeMap::new();
            for s in samples.iter().filter(keep) {
                last.insert((&s.uuid, &s.name, s.ts.to_bits()), s.value);
            }
            if last.is_empty() {
                return Ok(0);
            }
            let uuids: Vec<Option<&str>> = last.keys().map(|k| Some(k.0)).collect();
            let names: Vec<Option<&str>> = last.keys().map(|k| Some(k.1)).collect();
            let ts: Vec<Option<f64>> = last.keys().map(|k| Some(f64::from_bits(k.2))).collect();
            let values: Vec<Option<f64>> = last.values().map(|v| Some(*v)).collect();
            tx.execute(
                "INSERT INTO metric_raw (uuid, name, ts, value)
                 SELECT * FROM unnest(?1::TEXT[], ?2::TEXT[], ?3::FLOAT8[], ?4::FLOAT8[])
                 ON CONFLICT (uuid, name, ts) DO UPDATE SET value = excluded.value",
                params![&uuids[..], &names[..], &ts[..], &values[..]],
            )?;
            Ok(last.len())
        }
    }
}

/// What one [`roll_up`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollUp {
    /// Raw samples folded into minutes (and deleted).
    pub folded: usize,
    /// Minutes dropped past the minute retention.
    pub dropped: usize,
}

/// `floor(ts / 60)` as an integer, in the backend's dialect: SQLite's CAST
/// truncates (times are positive), PostgreSQL's rounds.
fn minute_of_ts(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST(ts / 60 AS INTEGER)",
        Backend::Postgres => "CAST(FLOOR(ts / 60) AS BIGINT)",
    }
}

/// Folds raw samples older than `raw_secs` into one-minute sums and counts,
/// deletes them, and drops minutes older than `minute_secs`. One
/// transaction, so a reader never sees a sample twice or not at all; two
/// sinks folding at once on PostgreSQL each fold what they deleted (the
/// second waits on the first's row locks and finds the rows gone).
pub fn roll_up(store: &mut Store, now: f64, raw_secs: f64, minute_secs: f64) -> Result<RollUp> {
    store.in_write(|tx| {
        let raw_cutoff = now - raw_secs;
        let minute = minute_of_ts(tx.backend());
        // Delete first and fold exactly what was deleted, so a sample is
        // counted once even when two processes roll up together.
        let folded = match tx.backend() {
            Backend::Postgres => tx.query_value::<i64>(
                &format!(
                    "WITH gone AS (DELETE FROM metric_raw WHERE ts < ?1 RETURNING uuid, name, ts, value),
                     folded AS (
                         INSERT INTO metric_minute (uuid, name, minute, sum, count)
                         SELECT uuid, name, {minute}, SUM(value), COUNT(*) FROM gone
                         GROUP BY uuid, name, {minute}
                         ON CONFLICT (uuid, name, minute) DO UPDATE SET
                             sum = metric_minute.sum + excluded.sum,
                             count = metric_minute.count + excluded.count)
                     SELECT COUNT(*) FROM gone"
                ),
                params![raw_cutoff],
            )? as usize,
            Backend::Sqlite => {
                // SQLite serialises writers: nobody deletes in between.
                tx.execute(
                    &format!(
                        "INSERT INTO metric_minute (uuid, name, minute, sum, count)
                         SELECT uuid, name, {minute}, SUM(value), COUNT(*)
                         FROM metric_raw WHERE ts < ?1
                         GROUP BY uuid, name, {minute}
                         ON CONFLICT (uuid, name, minute) DO UPDATE SET
                             sum = sum + excluded.sum, count = count + excluded.count"
                    ),
                    params![raw_cutoff],
                )?;
                tx.execute("DELETE FROM metric_raw WHERE ts < ?1", params![raw_cutoff])?
            }
        };
        let minute_cutoff = ((now - minute_secs) / 60.0).floor() as i64;
        let dropped = tx.execute(
            "DELETE FROM metric_minute WHERE minute < ?1",
            params![minute_cutoff],
        )?;
        Ok(RollUp { folded, dropped })
    })
}

/// The most series names a host's page or API lists: a client may send
/// stats under any number of names.
pub const NAMES_MAX: usize = 1_000;

/// The names of `uuid`'s series with a sample since `since`, sorted, at
/// most [`NAMES_MAX`].
pub fn names(tx: &Tx, uuid: &str, since: f64) -> Result<Vec<String>> {
    let minute = (since / 60.0).floor() as i64;
    tx.query(
        "SELECT name FROM metric_raw WHERE uuid = ?1 AND ts >= ?2
         UNION
         SELECT name FROM metric_minute WHERE uuid = ?1 AND minute >= ?3
         ORDER BY 1 LIMIT ?4",
        params![uuid, since, minute, NAMES_MAX as i64],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn points(rows: Vec<super::Row>) -> Result<Vec<Point>> {
    rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
}

/// The points of one series since `since`, oldest first: rolled-up minutes
/// (their average, at the minute's middle) then raw samples. At most
/// `max_points`: when more, raw samples are averaged per minute too, and
/// only the newest `max_points` are kept.
pub fn series(
    tx: &Tx,
    uuid: &str,
    name: &str,
    since: f64,
    max_points: usize,
) -> Result<Vec<Point>> {
    let minute = (since / 60.0).floor() as i64;
    let mut out = points(tx.query(
        "SELECT CAST(minute * 60 + 30 AS DOUBLE PRECISION),
                CAST(sum AS DOUBLE PRECISION) / count FROM metric_minute
         WHERE uuid = ?1 AND name = ?2 AND minute >= ?3 ORDER BY minute",
        params![uuid, name, minute],
    )?)?;
    let raw_count: i64 = tx.query_value(
        "SELECT COUNT(*) FROM metric_raw WHERE uuid = ?1 AND name = ?2 AND ts >= ?3",
        params![uuid, name, since],
    )?;
    let raw_sql = if out.len() + raw_count as usize > max_points {
        let minute = minute_of_ts(tx.backend());
        format!(
            "SELECT CAST({minute} * 60 + 30 AS DOUBLE PRECISION), AVG(value) FROM metric_raw
             WHERE uuid = ?1 AND name = ?2 AND ts >= ?3
             GROUP BY {minute} ORDER BY 1"
        )
    } else {
        "SELECT ts, value FROM metric_raw WHERE uuid = ?1 AND name = ?2 AND ts >= ?3 ORDER BY ts"
            .to_string()
    };
    out.extend(points(tx.query(&raw_sql, params![uuid, name, since])?)?);
    if out.len() > max_points {
        out.drain(..out.len() - max_points);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scratch::with_tx;
    use crate::store::test_store;

    const U: &str = "11111111-1111-4111-8111-111111111111";

    fn read<T>(store: &mut Store, f: impl FnOnce(&Tx) -> Result<T>) -> T {
        let tx = store.read().unwrap();
        f(&tx).unwrap()
    }

    #[test]
    fn samples_roll_up_into_minute_averages_and_expire() {
        let mut store = test_store();
        let now = 1_700_000_000.0 - (1_700_000_000.0 % 60.0);
        with_tx(&mut store, |tx| {
            // Three samples in one minute two hours ago, one recent.
            for (ts, v) in [
                (now - 7200.0, 1.0),
                (now - 7190.0, 2.0),
                (now - 7180.0, 6.0),
                (now - 10.0, 5.0),
            ] {
                assert!(record(tx, U, "load.1m", ts, v).unwrap());
            }
            assert!(!record(tx, U, "load.1m", now, f64::NAN).unwrap());
            assert!(!record(tx, U, "", now, 1.0).unwrap());
            assert!(!record(tx, U, &"x".repeat(MAX_NAME + 1), now, 1.0).unwrap());
        });
        let r = roll_up(&mut store, now, 3600.0, 86_400.0).unwrap();
        assert_eq!(
            r,
            RollUp {
                folded: 3,
                dropped: 0
            }
        );
        let points = read(&mut store, |tx| {
            series(tx, U, "load.1m", now - 86_400.0, 1000)
        });
        assert_eq!(points, vec![(now - 7200.0 + 30.0, 3.0), (now - 10.0, 5.0)]);
        // A second pass over the same minute adds to it, not over it.
        with_tx(&mut store, |tx| {
            record(tx, U, "load.1m", now - 7170.0, 7.0).unwrap()
        });
        roll_up(&mut store, now, 3600.0, 86_400.0).unwrap();
        let points = read(&mut store, |tx| {
            series(tx, U, "load.1m", now - 86_400.0, 1000)
        });
        assert_eq!(points[0].1, 4.0);
        assert_eq!(
            read(&mut store, |tx| names(tx, U, now - 86_400.0)),
            ["load.1m"]
        );
        // A day later every minute is gone.
        let r = roll_up(&mut store, now + 86_400.0 + 7200.0, 3600.0, 86_400.0).unwrap();
        assert_eq!(
            r,
            RollUp {
                folded: 1,
                dropped: 2
            }
        );
        assert!(read(&mut store, |tx| names(tx, U, 0.0)).is_empty());
    }

    #[test]
    fn many_raw_samples_are_averaged_per_minute() {
        let mut store = test_store();
        let now = 1_700_000_040.0;
        with_tx(&mut store, |tx| {
            for i in 0..600 {
                record(tx, U, "m", now - 600.0 + i as f64, i as f64).unwrap();
            }
        });
        let all = read(&mut store, |tx| series(tx, U, "m", now - 3600.0, 1000));
        assert_eq!(all.len(), 600);
        let few = read(&mut store, |tx| series(tx, U, "m", now - 3600.0, 100));
        assert!(few.len() <= 11, "{}", few.len());
        assert!(few.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn a_sample_at_the_same_time_replaces_the_first() {
        let mut store = test_store();
        with_tx(&mut store, |tx| {
            record(tx, U, "m", 100.0, 1.0).unwrap();
            record(tx, U, "m", 100.0, 2.0).unwrap();
        });
        assert_eq!(
            read(&mut store, |tx| series(tx, U, "m", 0.0, 10)),
            [(100.0, 2.0)]
        );
    }
}
