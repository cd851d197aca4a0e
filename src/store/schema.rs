//! The store's schema and its migrations.
//!
//! `MIGRATIONS[i]` takes the database from `user_version` i to i + 1. A
//! migration is never edited once released: a change is a new entry. Each
//! runs in one immediate transaction, so two processes starting together
//! cannot both apply it.
//!
//! All times are Unix seconds (REAL). JSON columns hold the text as received.

use rusqlite::{Connection, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first schema.
    r#"
    -- One row per client (agent), kept up to date by every sink.
    CREATE TABLE clients (
        uuid                 TEXT PRIMARY KEY,
        hostname             TEXT,
        first_seen           REAL NOT NULL,
        last_seen            REAL NOT NULL,   -- any message
        last_router          TEXT,            -- metadata.router of the last message
        peer                 TEXT,            -- metadata.peer of the last message
        last_heartbeat       REAL,            -- received_at of the last heartbeat
        heartbeat_interval_s REAL,            -- interval_s of the last heartbeat
        liveness             TEXT NOT NULL DEFAULT 'unknown'  -- 'up', 'down', 'unknown'
    );

    -- Processes that registered, per client. A registration replaces the
    -- row and that process's plugin set.
    CREATE TABLE processes (
        uuid          TEXT NOT NULL,
        name          TEXT NOT NULL,
        pid           INTEGER,
        version       TEXT,
        registered_at REAL NOT NULL,
        PRIMARY KEY (uuid, name)
    );

    -- Declared plugins. A plugin name is unique per client: run_plugin
    -- names only the plugin.
    CREATE TABLE plugins (
        uuid          TEXT NOT NULL,
        name          TEXT NOT NULL,
        process       TEXT NOT NULL,   -- processes.name that declared it
        command       TEXT,
        interval_s    REAL,
        timeout_s     REAL,
        registered_at REAL NOT NULL,
        PRIMARY KEY (uuid, name)
    );

    -- Last result per (client, plugin).
    CREATE TABLE results (
        uuid        TEXT NOT NULL,
        plugin      TEXT NOT NULL,
        status      INTEGER NOT NULL,  -- 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
        output      TEXT,
        perfdata    TEXT,              -- JSON as received
        duration_ms INTEGER,
        run_id      TEXT,
        ts          REAL NOT NULL,     -- when this result was received
        changed_at  REAL NOT NULL,     -- when status last changed
        PRIMARY KEY (uuid, plugin)
    );

    -- Every notification: from clients, and raised by vigil itself
    -- (heartbeat loss and recovery, result state changes, overdue runs).
    -- Raised ones are inserted with state 'pending'; the notification sink
    -- runs their handlers and retries until they succeed.
    CREATE TABLE notifications (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid            TEXT,          -- the client concerned
        id              TEXT,          -- the client's id, or a generated one
        origin          TEXT NOT NULL, -- 'client', 'heartbeat', 'result', 'scheduler'
        severity        TEXT NOT NULL,
        source          TEXT,
        message         TEXT,
        hostname        TEXT,
        body            TEXT NOT NULL, -- the notification as JSON
        created_at      REAL NOT NULL,
        state           TEXT NOT NULL, -- 'pending', 'handled', 'failed'
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_error      TEXT
    );
    CREATE INDEX notifications_pending ON notifications (state, next_attempt_at);

    -- Message ids already handled, for dropping duplicates by (uuid, id).
    CREATE TABLE handled (
        uuid       TEXT NOT NULL,
        id         TEXT NOT NULL,
        type       TEXT NOT NULL,
        handled_at REAL NOT NULL,
        PRIMARY KEY (uuid, id)
    );

    -- The scheduler lease: one row per lease name; the holder renews it.
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL
    );

    -- run_plugin requests sent by the scheduler; the result sink sets
    -- completed_at when a result with that run_id arrives.
    CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        uuid         TEXT NOT NULL,
        plugin       TEXT NOT NULL,
        sent_at      REAL NOT NULL,
        due_by       REAL NOT NULL,     -- sent_at + timeout + grace
        completed_at REAL,
        overdue      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_open ON runs (completed_at, due_by);
    "#,
    // 1 → 2: the notification sink's retry bookkeeping.
    r#"
    -- Names of the handlers that already succeeded for a notification (a
    -- JSON array), so a retry never re-sends an email that went out.
    ALTER TABLE notifications ADD COLUMN handlers_done TEXT NOT NULL DEFAULT '[]';
    -- A client's resend finds its earlier row by (uuid, id).
    CREATE INDEX notifications_client_id ON notifications (uuid, id);
    "#,
    // 2 → 3: a scheduler that takes the lease reads the last run sent per
    // (client, plugin); without this index that is a scan of every run.
    r#"
    CREATE INDEX runs_last_sent ON runs (uuid, plugin, sent_at);
    "#,
    // 3 → 4: recent metric samples, so the web view plots them without
    // Graphite (see store/metrics.rs): raw samples for a short while, then
    // one-minute sums and counts for longer.
    r#"
    CREATE TABLE metric_raw (
        uuid  TEXT NOT NULL,
        name  TEXT NOT NULL,   -- the metric's name below the host
        ts    REAL NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (uuid, name, ts)
    ) WITHOUT ROWID;
    CREATE INDEX metric_raw_ts ON metric_raw (ts);
    CREATE TABLE metric_minute (
        uuid   TEXT NOT NULL,
        name   TEXT NOT NULL,
        minute INTEGER NOT NULL,  -- floor(ts / 60)
        sum    REAL NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (uuid, name, minute)
    ) WITHOUT ROWID;
    CREATE INDEX metric_minute_minute ON metric_minute (minute);
    -- The web overview lists problems first: non-OK results without a scan.
    CREATE INDEX results_status ON results (status);
    "#,
];

/// The schema version this program writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration the database has not seen yet.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > VERSION {
            // A newer vigil migrated this file: writing to it with an older
            // idea of the schema could corrupt what the newer one relies on.
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!(
                    "schema version {current} is newer than this vigil's ({VERSION}): upgrade vigil"
                )),
            ));
        }
        let Some(step) = MIGRATIONS.get(current as usize) else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}
