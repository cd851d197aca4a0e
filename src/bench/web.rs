//! `vigil-bench web`: how long the web overview takes to make for a large
//! fleet, from a warm store.
//!
//! It fills a fresh store with `--hosts` clients (default 10,000) and
//! `--checks` results (default 50,000, 5% of them not OK, a tenth of the
//! hosts down) and notifications, opens it read-only as `vigil web` does,
//! makes the overview once to warm the page cache and the prepared
//! statements, then times `--runs` more (default 30): the same code a
//! request for `/` runs (store queries and template), without the socket.

use super::BenchError;
use std::time::Instant;
use vigil::store::{params, Target};

const USAGE: &str = "usage: vigil-bench web [--hosts N] [--checks N] [--runs N]";

pub fn run(args: &[String]) -> Result<(), BenchError> {
    let (mut hosts, mut checks, mut runs) = (10_000usize, 50_000usize, 30usize);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--hosts" => &mut hosts,
            "--checks" => &mut checks,
            "--runs" => &mut runs,
            _ => return Err(BenchError::usage(format!("unexpected {arg:?}\n{USAGE}"))),
        };
        *slot = it
            .next()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| BenchError::usage(format!("{arg} needs a positive number\n{USAGE}")))?;
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-web-{}", uuid::Uuid::new_v4()));
    let db = Target::Sqlite(dir.join("vigil.db"));
    let started = Instant::now();
    fill(&db, hosts, checks).map_err(|e| BenchError::protocol("filling the store", e))?;
    println!(
        "store: {hosts} hosts, {checks} checks, filled in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        db
    );
    let mut store = vigil::status::snapshot::open_store(&db)
        .map_err(|e| BenchError::protocol("opening the store", e))?;
    let db_name = db.to_string();
    let mut render = || vigil::web::render_overview(&mut store, &db_name, 3.0);
    let first = Instant::now();
    let html = render().map_err(|e| BenchError::protocol("rendering", e))?;
    println!(
        "first (cold statements) overview: {:.1} ms, {} bytes",
        first.elapsed().as_secs_f64() * 1e3,
        html.len()
    );
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        render().map_err(|e| BenchError::protocol("rendering", e))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "warm overview over {runs} runs: min {:.1} ms, median {:.1} ms, p95 {:.1} ms, max {:.1} ms (target: under 100 ms)",
        pick(0.0),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fleet as the sinks would leave it, in one transaction.
fn fill(db: &Target, hosts: usize, checks: usize) -> Result<(), String> {
    let mut store = vigil::store::Store::open(db).map_err(|e| e.to_string())?;
    let now = vigil::store::now();
    let tx = store.write().map_err(|e| e.to_string())?;
    let uuid = |h: usize| format!("00000000-0000-4000-8000-{h:012}");
    for h in 0..hosts {
        let heartbeat = if h % 10 == 0 {
            now - 3_600.0
        } else {
            now - 5.0
        };
        tx.execute(
            "INSERT INTO clients (uuid, hostname, first_seen, last_seen, last_heartbeat, heartbeat_interval_s, last_router)
             VALUES (?1, ?2, ?3, ?4, ?4, 10, 'r1')",
            params![
                &uuid(h),
                &format!("host{h:05}.example.net"),
                now - 86_400.0,
                heartbeat
            ],
        )
        .map_err(|e| e.to_string())?;
    }
    for c in 0..checks {
        let h = c % hosts;
        let status: i64 = match c % 100 {
            0..=1 => 2,
            2..=3 => 1,
            4 => 3,
            _ => 0,
        };
        let output = format!("CHECK {status} - value {c} on host{h:05} | v={c}");
        let plugin = format!("check{}", c / hosts);
        tx.execute(
            "INSERT INTO results (uuid, plugin, status, output, ts, changed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![&uuid(h), &plugin, status, &output, now - (c % 300) as f64],
        )
        .map_err(|e| e.to_string())?;
        if status != 0 {
            let state = if c % 7 == 0 { "pending" } else { "handled" };
            tx.execute(
                "INSERT INTO notifications (uuid, id, origin, severity, source, message, hostname, body, created_at, state)
                 VALUES (?1, ?2, 'result', 'critical', ?3, ?4, ?5, '{}', ?6, ?7)",
                params![
                    &uuid(h),
                    &format!("n{c}"),
                    &plugin,
                    &output,
                    &format!("host{h:05}.example.net"),
                    now - (c % 3_000) as f64,
                    state
                ],
            )
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}
