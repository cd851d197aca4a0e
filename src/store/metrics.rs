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

use rusqlite::{params, Connection};

/// A metric name longer than this is refused (it would only bloat the
/// store; Graphite paths are far shorter).
pub const MAX_NAME: usize = 250;

/// One point of a series: Unix seconds and the value (a minute's average
/// for rolled-up samples).
pub type Point = (f64, f64);

/// Stores one sample. The caller clamps `ts` to the time it was received,
/// so a client's clock far in the future cannot keep samples forever.
/// Returns false (and stores nothing) for a non-finite value or a name that
/// is empty or too long.
pub fn record(
    conn: &Connection,
    uuid: &str,
    name: &str,
    ts: f64,
    value: f64,
) -> rusqlite::Result<bool> {
    if !value.is_finite() || !ts.is_finite() || name.is_empty() || name.len() > MAX_NAME {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO metric_raw (uuid, name, ts, value) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![uuid, name, ts, value])?;
    Ok(true)
}

/// What one [`roll_up`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollUp {
    /// Raw samples folded into minutes (and deleted).
    pub folded: usize,
    /// Minutes dropped past the minute retention.
    pub dropped: usize,
}

/// Folds raw samples older than `raw_secs` into one-minute sums and counts,
/// deletes them, and drops minutes older than `minute_secs`. One
/// transaction, so a reader never sees a sample twice or not at all.
pub fn roll_up(
    conn: &mut Connection,
    now: f64,
    raw_secs: f64,
    minute_secs: f64,
) -> rusqlite::Result<RollUp> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let raw_cutoff = now - raw_secs;
    tx.execute(
        "INSERT INTO metric_minute (uuid, name, minute, sum, count)
         SELECT uuid, name, CAST(ts / 60 AS INTEGER), SUM(value), COUNT(*)
         FROM metric_raw WHERE ts < ?1
         GROUP BY uuid, name, CAST(ts / 60 AS INTEGER)
         ON CONFLICT (uuid, name, minute) DO UPDATE SET
             sum = sum + excluded.sum, count = count + excluded.count",
        [raw_cutoff],
    )?;
    let folded = tx.execute("DELETE FROM metric_raw WHERE ts < ?1", [raw_cutoff])?;
    let minute_cutoff = ((now - minute_secs) / 60.0).floor() as i64;
    let dropped = tx.execute(
        "DELETE FROM metric_minute WHERE minute < ?1",
        [minute_cutoff],
    )?;
    tx.commit()?;
    Ok(RollUp { folded, dropped })
}

/// The names of `uuid`'s series with a sample since `since`, sorted.
pub fn names(conn: &Connection, uuid: &str, since: f64) -> rusqlite::Result<Vec<String>> {
    let minute = (since / 60.0).floor() as i64;
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM metric_raw WHERE uuid = ?1 AND ts >= ?2
         UNION
         SELECT name FROM metric_minute WHERE uuid = ?1 AND minute >= ?3
         ORDER BY 1",
    )?;
    let rows = stmt.query_map(params![uuid, since, minute], |r| r.get(0))?;
    rows.collect()
}

/// The points of one series since `since`, oldest first: rolled-up minutes
/// (their average, at the minute's middle) then raw samples. At most
/// `max_points`: when more, raw samples are averaged per minute too, and
/// only the newest `max_points` are kept.
pub fn series(
    conn: &Connection,
    uuid: &str,
    name: &str,
    since: f64,
    max_points: usize,
) -> rusqlite::Result<Vec<Point>> {
    let minute = (since / 60.0).floor() as i64;
    let mut points: Vec<Point> = conn
        .prepare_cached(
            "SELECT minute * 60.0 + 30.0, sum / count FROM metric_minute
             WHERE uuid = ?1 AND name = ?2 AND minute >= ?3 ORDER BY minute",
        )?
        .query_map(params![uuid, name, minute], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let raw_count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM metric_raw WHERE uuid = ?1 AND name = ?2 AND ts >= ?3",
        )?
        .query_row(params![uuid, name, since], |r| r.get(0))?;
    let raw_sql = if points.len() + raw_count as usize > max_points {
        "SELECT CAST(ts / 60 AS INTEGER) * 60.0 + 30.0, AVG(value) FROM metric_raw
         WHERE uuid = ?1 AND name = ?2 AND ts >= ?3
         GROUP BY CAST(ts / 60 AS INTEGER) ORDER BY 1"
    } else {
        "SELECT ts, value FROM metric_raw WHERE uuid = ?1 AND name = ?2 AND ts >= ?3 ORDER BY ts"
    };
    let raw = conn
        .prepare_cached(raw_sql)?
        .query_map(params![uuid, name, since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<Point>>>()?;
    points.extend(raw);
    if points.len() > max_points {
        points.drain(..points.len() - max_points);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    const U: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn samples_roll_up_into_minute_averages_and_expire() {
        let mut store = test_store();
        let now = 1_700_000_000.0 - (1_700_000_000.0 % 60.0);
        // Three samples in one minute two hours ago, one recent.
        for (ts, v) in [
            (now - 7200.0, 1.0),
            (now - 7190.0, 2.0),
            (now - 7180.0, 6.0),
            (now - 10.0, 5.0),
        ] {
            assert!(record(&store.conn, U, "load.1m", ts, v).unwrap());
        }
        assert!(!record(&store.conn, U, "load.1m", now, f64::NAN).unwrap());
        assert!(!record(&store.conn, U, "", now, 1.0).unwrap());
        assert!(!record(&store.conn, U, &"x".repeat(MAX_NAME + 1), now, 1.0).unwrap());
        let r = roll_up(&mut store.conn, now, 3600.0, 86_400.0).unwrap();
        assert_eq!(
            r,
            RollUp {
                folded: 3,
                dropped: 0
            }
        );
        let points = series(&store.conn, U, "load.1m", now - 86_400.0, 1000).unwrap();
        assert_eq!(points, vec![(now - 7200.0 + 30.0, 3.0), (now - 10.0, 5.0)]);
        // A second pass over the same minute adds to it, not over it.
        record(&store.conn, U, "load.1m", now - 7170.0, 7.0).unwrap();
        roll_up(&mut store.conn, now, 3600.0, 86_400.0).unwrap();
        let points = series(&store.conn, U, "load.1m", now - 86_400.0, 1000).unwrap();
        assert_eq!(points[0].1, 4.0);
        assert_eq!(names(&store.conn, U, now - 86_400.0).unwrap(), ["load.1m"]);
        // A day later every minute is gone.
        let r = roll_up(&mut store.conn, now + 86_400.0 + 7200.0, 3600.0, 86_400.0).unwrap();
        assert_eq!(
            r,
            RollUp {
                folded: 1,
                dropped: 2
            }
        );
        assert!(names(&store.conn, U, 0.0).unwrap().is_empty());
    }

    #[test]
    fn many_raw_samples_are_averaged_per_minute() {
        let store = test_store();
        let now = 1_700_000_040.0;
        for i in 0..600 {
            record(&store.conn, U, "m", now - 600.0 + i as f64, i as f64).unwrap();
        }
        let all = series(&store.conn, U, "m", now - 3600.0, 1000).unwrap();
        assert_eq!(all.len(), 600);
        let few = series(&store.conn, U, "m", now - 3600.0, 100).unwrap();
        assert!(few.len() <= 11, "{}", few.len());
        assert!(few.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
