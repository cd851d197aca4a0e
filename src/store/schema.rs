//! The store's schema and its numbered migrations, the same on both
//! backends.
//!
//! `MIGRATIONS[i]` takes the store from version i to i + 1: its SQLite
//! text was released first and is never edited; its PostgreSQL text makes
//! the same tables with PostgreSQL's types (DOUBLE PRECISION for REAL,
//! BIGINT for INTEGER, an identity column for AUTOINCREMENT). A change is
//! a new entry with both texts. Each runs in one transaction that holds
//! the store's migration lock (SQLite's write lock; a PostgreSQL advisory
//! lock), so two processes starting together cannot both apply it. The
//! version is `PRAGMA user_version` on SQLite and the one row of
//! `vigil_schema` on PostgreSQL.
//!
//! All times are Unix seconds (REAL / DOUBLE PRECISION). JSON columns hold
//! the text as received.

use super::{Backend, DbError, Result, Store};

/// One migration, in each backend's dialect.
struct Migration {
    sqlite: &'static str,
    postgres: &'static str,
}

/// 1 → 2 (the same SQL on both backends): the notification sink's retry
/// bookkeeping.
const HANDLERS_DONE: &str = r#"
    -- Names of the handlers that already succeeded for a notification (a
    -- JSON array), so a retry never re-sends an email that went out.
    ALTER TABLE notifications ADD COLUMN handlers_done TEXT NOT NULL DEFAULT '[]';
    -- A client's resend finds its earlier row by (uuid, id).
    CREATE INDEX notifications_client_id ON notifications (uuid, id);
    "#;

/// 2 → 3 (both backends): a scheduler that takes the lease reads the last
/// run sent per (client, plugin); without this index that is a scan of
/// every run.
const RUNS_LAST_SENT: &str = r#"
    CREATE INDEX runs_last_sent ON runs (uuid, plugin, sent_at);
    "#;

const SQLITE: [&str; 4] = [
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
    HANDLERS_DONE,
    RUNS_LAST_SENT,
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

const POSTGRES: [&str; 4] = [
    // 0 → 1
    r#"
    CREATE TABLE clients (
        uuid                 TEXT PRIMARY KEY,
        hostname             TEXT,
        first_seen           DOUBLE PRECISION NOT NULL,
        last_seen            DOUBLE PRECISION NOT NULL,
        last_router          TEXT,
        peer                 TEXT,
        last_heartbeat       DOUBLE PRECISION,
        heartbeat_interval_s DOUBLE PRECISION,
        liveness             TEXT NOT NULL DEFAULT 'unknown'
    );
    CREATE TABLE processes (
        uuid          TEXT NOT NULL,
        name          TEXT NOT NULL,
        pid           BIGINT,
        version       TEXT,
        registered_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (uuid, name)
    );
    CREATE TABLE plugins (
        uuid          TEXT NOT NULL,
        name          TEXT NOT NULL,
        process       TEXT NOT NULL,
        command       TEXT,
        interval_s    DOUBLE PRECISION,
        timeout_s     DOUBLE PRECISION,
        registered_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (uuid, name)
    );
    CREATE TABLE results (
        uuid        TEXT NOT NULL,
        plugin      TEXT NOT NULL,
        status      BIGINT NOT NULL,
        output      TEXT,
        perfdata    TEXT,
        duration_ms BIGINT,
        run_id      TEXT,
        ts          DOUBLE PRECISION NOT NULL,
        changed_at  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (uuid, plugin)
    );
    CREATE TABLE notifications (
        seq             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        uuid            TEXT,
        id              TEXT,
        origin          TEXT NOT NULL,
        severity        TEXT NOT NULL,
        source          TEXT,
        message         TEXT,
        hostname        TEXT,
        body            TEXT NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        state           TEXT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        last_error      TEXT
    );
    CREATE INDEX notifications_pending ON notifications (state, next_attempt_at);
    CREATE TABLE handled (
        uuid       TEXT NOT NULL,
        id         TEXT NOT NULL,
        type       TEXT NOT NULL,
        handled_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (uuid, id)
    );
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        uuid         TEXT NOT NULL,
        plugin       TEXT NOT NULL,
        sent_at      DOUBLE PRECISION NOT NULL,
        due_by       DOUBLE PRECISION NOT NULL,
        completed_at DOUBLE PRECISION,
        overdue      BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_open ON runs (completed_at, due_by);
    "#,
    HANDLERS_DONE,
    RUNS_LAST_SENT,
    // 3 → 4
    r#"
    CREATE TABLE metric_raw (
        uuid  TEXT NOT NULL,
        name  TEXT NOT NULL,
        ts    DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (uuid, name, ts)
    );
    CREATE INDEX metric_raw_ts ON metric_raw (ts);
    CREATE TABLE metric_minute (
        uuid   TEXT NOT NULL,
        name   TEXT NOT NULL,
        minute BIGINT NOT NULL,
        sum    DOUBLE PRECISION NOT NULL,
        count  BIGINT NOT NULL,
        PRIMARY KEY (uuid, name, minute)
    );
    CREATE INDEX metric_minute_minute ON metric_minute (minute);
    CREATE INDEX results_status ON results (status);
    "#,
];

/// 4 → 5, the same text on both: one row per client notification
/// (uuid, id), so two sinks given the same notification through two
/// routers record it once and one of them runs its handlers (the other
/// finds the row claimed). Older copies, if a store has any, are dropped
/// first (the newest carries the handlers done).
const CLIENT_NOTIFICATION_ONCE: &str = r#"
    DELETE FROM notifications
     WHERE origin = 'client'
       AND seq NOT IN (SELECT MAX(seq) FROM notifications
                       WHERE origin = 'client' GROUP BY uuid, id);
    CREATE UNIQUE INDEX notifications_client_once
        ON notifications (uuid, id) WHERE origin = 'client';
"#;

const MIGRATIONS: [Migration; 5] = [
    Migration {
        sqlite: SQLITE[0],
        postgres: POSTGRES[0],
    },
    Migration {
        sqlite: SQLITE[1],
        postgres: POSTGRES[1],
    },
    Migration {
        sqlite: SQLITE[2],
        postgres: POSTGRES[2],
    },
    Migration {
        sqlite: SQLITE[3],
        postgres: POSTGRES[3],
    },
    Migration {
        sqlite: CLIENT_NOTIFICATION_ONCE,
        postgres: CLIENT_NOTIFICATION_ONCE,
    },
];

/// The key of the PostgreSQL advisory lock migrations hold ("vigil").
const MIGRATION_LOCK: i64 = 0x76_69_67_69_6c;

/// The schema version this program writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// The store's schema version (0: empty).
pub fn version(store: &mut Store) -> Result<i64> {
    let tx = store.read()?;
    match tx.backend() {
        Backend::Sqlite => tx.query_value("PRAGMA user_version", &[]),
        Backend::Postgres => {
            let exists: bool =
                tx.query_value("SELECT to_regclass('vigil_schema') IS NOT NULL", &[])?;
            if !exists {
                return Ok(0);
            }
            tx.query_value("SELECT COALESCE(MAX(version), 0) FROM vigil_schema", &[])
        }
    }
}

/// Sets the recorded version (tests: a store "from a newer vigil").
#[cfg(test)]
pub fn set_version(store: &mut Store, v: i64) -> Result<()> {
    let tx = store.write()?;
    match tx.backend() {
        Backend::Sqlite => tx.batch(&format!("PRAGMA user_version = {v}"))?,
        Backend::Postgres => {
            tx.execute("UPDATE vigil_schema SET version = ?1", crate::params![v])?;
        }
    }
    tx.commit()
}

/// Applies every migration the store has not seen yet.
pub fn migrate(store: &mut Store) -> Result<()> {
    loop {
        let tx = store.write()?;
        let current: i64 = match tx.backend() {
            Backend::Sqlite => tx.query_value("PRAGMA user_version", &[])?,
            Backend::Postgres => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(?1)",
                    crate::params![MIGRATION_LOCK],
                )?;
                // Looked up first (under the lock, so no other process
                // creates it meanwhile): IF NOT EXISTS would have the
                // server send a NOTICE, logged at every start.
                let exists: bool =
                    tx.query_value("SELECT to_regclass('vigil_schema') IS NOT NULL", &[])?;
                if !exists {
                    tx.batch("CREATE TABLE vigil_schema (version BIGINT NOT NULL)")?;
                }
                tx.query_value("SELECT COALESCE(MAX(version), 0) FROM vigil_schema", &[])?
            }
        };
        if current > VERSION {
            // A newer vigil migrated this store: writing to it with an
            // older idea of the schema could corrupt what the newer one
            // relies on.
            return Err(DbError::Newer { found: current });
        }
        let Some(step) = MIGRATIONS.get(current as usize) else {
            return Ok(());
        };
        match tx.backend() {
            Backend::Sqlite => {
                tx.batch(step.sqlite)?;
                tx.batch(&format!("PRAGMA user_version = {}", current + 1))?;
            }
            Backend::Postgres => {
                tx.batch(step.postgres)?;
                tx.execute("DELETE FROM vigil_schema", &[])?;
                tx.execute(
                    "INSERT INTO vigil_schema (version) VALUES (?1)",
                    crate::params![current + 1],
                )?;
            }
        }
        tx.commit()?;
    }
}
