//! The store shared by the sinks, the scheduler and `vigil status`: one
//! interface over two backends, chosen by `VIGIL_DB` (see `target.rs`).
//!
//! - SQLite (a file path; the embedded default): several processes on one
//!   host open the same file; WAL mode lets readers run beside one writer,
//!   a busy timeout turns a brief lock into a wait, and a write
//!   transaction takes the file's write lock at its start (IMMEDIATE), so
//!   writers are serialised.
//! - PostgreSQL (a `postgres://` URL): sinks, schedulers and status on
//!   several hosts share one server. Writers run side by side; where a
//!   read decides a write, the row is locked (`FOR UPDATE`, written as a
//!   `/*pg: */` comment SQLite ignores), and what must happen once has a
//!   unique constraint or a conditional update behind it.
//!
//! The SQL is written once for both (see `sql.rs`), kept per table in the
//! modules below; the schema and its numbered migrations are in
//! `schema.rs`. Each owner of a `Store` is one thread.

pub mod clients;
pub mod dedup;
pub mod fleet;
pub mod metrics;
pub mod notifications;
mod pg;
pub mod plugins;
pub mod results;
mod schema;
mod sql;
pub mod target;

pub use crate::params;
pub use sql::{FromValue, Row, Val, Value};
pub use target::Target;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How long a SQLite writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a store operation can fail with.
#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    Pg(postgres::Error),
    /// The server cannot be reached now (the outage is logged by the store).
    Unavailable(String),
    /// A row was expected and there was none.
    NoRow,
    /// A cell of an unexpected type.
    Type(String),
    /// The TLS settings could not be used.
    Tls(String),
    /// The store was migrated by a newer vigil.
    Newer {
        found: i64,
    },
    /// Not a vigil store (status opens only existing stores).
    NotAStore(String),
}

pub type Result<T> = std::result::Result<T, DbError>;

impl DbError {
    /// Whether this is the store being unreachable (the outage is logged
    /// once by the store; callers retry quietly).
    pub fn is_outage(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Pg(e) => pg::is_connection_error(e),
            _ => false,
        }
    }

    /// Whether retrying the same transaction may succeed: a deadlock or a
    /// serialisation failure between two processes (PostgreSQL picked this
    /// one to abort), or SQLite still busy.
    pub fn is_conflict(&self) -> bool {
        match self {
            DbError::Pg(e) => e
                .code()
                .is_some_and(|c| matches!(c.code(), "40P01" | "40001" | "23505")),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DatabaseBusy
            }
            _ => false,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            DbError::Pg(e) => match e.as_db_error() {
                // The server's own words, on one line.
                Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
                None => write!(f, "{e}"),
            },
            DbError::Unavailable(why) => write!(f, "unreachable: {why}"),
            DbError::NoRow => f.write_str("no row"),
            DbError::Type(why) => f.write_str(why),
            DbError::Tls(why) => f.write_str(why),
            DbError::Newer { found } => write!(
                f,
                "schema version {found} is newer than this vigil's ({}): upgrade vigil",
                schema::VERSION
            ),
            DbError::NotAStore(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        DbError::Pg(e)
    }
}

/// A store that could not be opened or used, with the store it concerns.
#[derive(Debug)]
pub struct StoreError {
    /// `VIGIL_DB` as shown (no password).
    pub target: String,
    pub what: String,
    pub source: DbError,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store {}: {}: {}", self.target, self.what, self.source)
    }
}

impl std::error::Error for StoreError {}

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

enum Conn {
    Sqlite(Connection),
    Pg(Box<pg::PgConn>),
}

/// An open store: one connection, schema up to date.
pub struct Store {
    conn: Conn,
    target: Target,
}

impl Store {
    /// Opens (creating a SQLite file if needed) the store and migrates the
    /// schema to the current version.
    pub fn open(target: &Target) -> std::result::Result<Store, StoreError> {
        let mut store = Store::connect(target, false)?;
        schema::migrate(&mut store).map_err(|e| store.error("migrate schema", e))?;
        Ok(store)
    }

    /// Opens an existing store for reading only (`vigil status`): a SQLite
    /// file that does not exist is an error, not a new store; nothing is
    /// migrated; a store newer than this vigil is still refused.
    pub fn open_existing(target: &Target) -> std::result::Result<Store, StoreError> {
        if let Target::Sqlite(path) = target {
            if !path.exists() {
                return Err(StoreError {
                    target: target.to_string(),
                    what: "open".into(),
                    source: DbError::NotAStore(
                        "not found: is VIGIL_DB the store the sinks write to?".into(),
                    ),
                });
            }
        }
        let mut store = Store::connect(target, true)?;
        let version = schema::version(&mut store).map_err(|e| store.error("read", e))?;
        if version < 1 {
            return Err(store.error(
                "read",
                DbError::NotAStore(format!("not a vigil store (schema version {version})")),
            ));
        }
        if version > schema::VERSION {
            return Err(store.error("read", DbError::Newer { found: version }));
        }
        Ok(store)
    }

    fn connect(target: &Target, read_only: bool) -> std::result::Result<Store, StoreError> {
        let err = |what: &str| {
            let shown = target.to_string();
            let what = what.to_string();
            move |source: DbError| StoreError {
                target: shown,
                what,
                source,
            }
        };
        let conn = match target {
            Target::Sqlite(path) => {
                Conn::Sqlite(open_sqlite(path, read_only).map_err(|(what, e)| err(what)(e.into()))?)
            }
            Target::Postgres(pg) => {
                Conn::Pg(Box::new(pg::PgConn::connect(pg).map_err(err("connect"))?))
            }
        };
        Ok(Store {
            conn,
            target: target.clone(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Makes every later transaction refuse to write (`vigil web`): SQLite's
    /// `query_only`, PostgreSQL's read-only transactions (kept across
    /// reconnects).
    pub fn forbid_writes(&mut self) -> Result<()> {
        match &mut self.conn {
            Conn::Sqlite(c) => Ok(c.pragma_update(None, "query_only", true)?),
            Conn::Pg(c) => {
                c.read_only = true;
                Ok(())
            }
        }
    }

    /// A transaction that will write: on SQLite it takes the write lock at
    /// once, so a read inside it decides a write without a race.
    pub fn write(&mut self) -> Result<Tx<'_>> {
        self.begin(TransactionBehavior::Immediate)
    }

    /// A transaction that only reads.
    pub fn read(&mut self) -> Result<Tx<'_>> {
        self.begin(TransactionBehavior::Deferred)
    }

    fn begin(&mut self, behavior: TransactionBehavior) -> Result<Tx<'_>> {
        match &mut self.conn {
            Conn::Sqlite(c) => Ok(Tx(TxInner::Sqlite(c.transaction_with_behavior(behavior)?))),
            Conn::Pg(c) => Ok(Tx(TxInner::Pg(c.begin()?))),
        }
    }

    /// Runs `f` in one write transaction and commits.
    pub fn in_write<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let tx = self.write()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Logs a failure of `what` as an error, unless it is the store being
    /// unreachable, which the store logs once per outage itself.
    pub fn log_error(&self, what: &str, source: DbError) {
        if !source.is_outage() {
            log::error!("{}", self.error(what, source));
        }
    }

    /// Wraps an error with this store's name and what was being done.
    pub fn error(&self, what: &str, source: DbError) -> StoreError {
        StoreError {
            target: self.target.to_string(),
            what: what.to_string(),
            source,
        }
    }
}

fn open_sqlite(
    path: &Path,
    read_only: bool,
) -> std::result::Result<Connection, (&'static str, rusqlite::Error)> {
    if read_only {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| ("open", e))?;
        let _ = conn.busy_timeout(Duration::from_secs(5));
        return Ok(conn);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A missing directory is the common first-run case; let SQLite
        // report anything else (permissions, a file in the way).
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path).map_err(|e| ("open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| ("set busy timeout", e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| ("set WAL mode", e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| ("set synchronous", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| ("enable foreign keys", e))?;
    Ok(conn)
}

/// A transaction on either backend; dropped without [`Tx::commit`], it
/// rolls back.
pub struct Tx<'a>(TxInner<'a>);

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Pg(pg::PgTx<'a>),
}

impl Tx<'_> {
    pub fn backend(&self) -> Backend {
        match self.0 {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Pg(_) => Backend::Postgres,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Val]) -> Result<usize> {
        match &self.0 {
            TxInner::Sqlite(tx) => Ok(tx
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?),
            TxInner::Pg(tx) => tx.execute(sql, params),
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        match &self.0 {
            TxInner::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let width = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut cells = Vec::with_capacity(width);
                    for i in 0..width {
                        cells.push(Value::from_sqlite(row.get_ref(i)?));
                    }
                    out.push(Row(cells));
                }
                Ok(out)
            }
            TxInner::Pg(tx) => tx.query(sql, params),
        }
    }

    /// The first row of a query, if any.
    pub fn query_opt(&self, sql: &str, params: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query, which must exist.
    pub fn query_row(&self, sql: &str, params: &[Val]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or(DbError::NoRow)
    }

    /// The first cell of the first row.
    pub fn query_value<T: FromValue>(&self, sql: &str, params: &[Val]) -> Result<T> {
        self.query_row(sql, params)?.get(0)
    }

    /// Statements without parameters (DDL), run as given.
    pub fn batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            TxInner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            TxInner::Pg(tx) => tx.batch(sql),
        }
    }

    /// Starts savepoint `name`: what follows can be undone alone.
    pub fn savepoint(&self, name: &str) -> Result<()> {
        self.batch(&format!("SAVEPOINT {name}"))
    }

    /// Keeps what was done since savepoint `name`.
    pub fn release(&self, name: &str) -> Result<()> {
        self.batch(&format!("RELEASE SAVEPOINT {name}"))
    }

    /// Undoes what was done since savepoint `name`, and ends it.
    pub fn rollback_to(&self, name: &str) -> Result<()> {
        self.batch(&format!("ROLLBACK TO SAVEPOINT {name}"))?;
        self.release(name)
    }

    pub fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.commit()?),
            TxInner::Pg(tx) => tx.commit(),
        }
    }
}

/// Unix time now, in seconds with a fraction: the unit of every time column.
pub fn now() -> f64 {
    crate::clock::unix_secs()
}

/// Fresh stores for tests: a SQLite file in a temporary directory, or a
/// new database on the PostgreSQL server `VIGIL_TEST_DB` names (a URL
/// whose user may create databases), so tests run in parallel without
/// seeing each other's rows. `VIGIL_TEST_STORE=postgres` puts every test
/// store on PostgreSQL (the second pass); tests of PostgreSQL itself use
/// it always. Used by the unit tests here and by the integration tests and
/// benchmarks from outside.
pub mod scratch {
    use super::{Store, Target};
    use std::path::{Path, PathBuf};

    /// Runs `f` in a write transaction and commits it (tests).
    pub fn with_tx<T>(store: &mut Store, f: impl FnOnce(&super::Tx) -> T) -> T {
        let tx = store.write().expect("begin a test transaction");
        let value = f(&tx);
        tx.commit().expect("commit a test transaction");
        value
    }

    /// Every row of `sql` with cells as text (tests).
    pub fn rows(store: &mut Store, sql: &str) -> Vec<super::Row> {
        store.read().and_then(|tx| tx.query(sql, &[])).expect(sql)
    }

    /// Whether this test pass puts every store on PostgreSQL
    /// (`VIGIL_TEST_STORE=postgres`).
    pub fn on_postgres() -> bool {
        std::env::var("VIGIL_TEST_STORE").as_deref() == Ok("postgres")
    }

    /// `VIGIL_TEST_DB`, if set.
    pub fn test_server() -> Option<String> {
        std::env::var("VIGIL_TEST_DB")
            .ok()
            .filter(|v| !v.trim().is_empty())
    }

    /// The server for a PostgreSQL-only test: `VIGIL_TEST_DB`; without it
    /// the test is skipped loudly, or fails under `CI=true` (CI provides
    /// the server, so its absence is a broken run, not a pass).
    pub fn require_server(test: &str) -> Option<String> {
        match test_server() {
            Some(url) => Some(url),
            None if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{test}: VIGIL_TEST_DB is not set but CI=true: PostgreSQL is required")
            }
            None => {
                eprintln!("SKIPPED {test}: set VIGIL_TEST_DB=postgres://... (see .ci/postgres.sh)");
                None
            }
        }
    }

    /// A database made for one test, dropped with it.
    pub struct ScratchDb {
        /// `VIGIL_DB` for the processes under test.
        pub url: String,
        admin: String,
        name: String,
    }

    impl ScratchDb {
        /// A new empty database on the server `admin` names.
        pub fn create(admin: &str) -> Result<ScratchDb, String> {
            let name = format!("vigil_t_{}", uuid::Uuid::new_v4().simple());
            let mut client = connect(admin)?;
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
            Ok(ScratchDb {
                url: with_dbname(admin, &name),
                admin: admin.to_string(),
                name,
            })
        }

        pub fn target(&self) -> Target {
            Target::parse(&self.url, None, None).expect("a URL made from a valid one")
        }
    }

    impl Drop for ScratchDb {
        fn drop(&mut self) {
            if let Ok(mut client) = connect(&self.admin) {
                let _ = client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    fn connect(url: &str) -> Result<postgres::Client, String> {
        let Target::Postgres(pg) = Target::parse(url, None, None)? else {
            return Err(format!("VIGIL_TEST_DB={url:?} is not a postgres:// URL"));
        };
        pg.config
            .connect(postgres::NoTls)
            .map_err(|e| format!("VIGIL_TEST_DB: {e}"))
    }

    /// `url` naming database `name` instead of its own.
    pub fn with_dbname(url: &str, name: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (url, String::new()),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let path_at = base[scheme_end..].find('/').map(|i| i + scheme_end);
        let host_part = path_at.map_or(base, |i| &base[..i]);
        format!("{host_part}/{name}{query}")
    }

    /// A store for one test, in a directory or database removed with it.
    pub struct TestStore {
        store: Option<Store>,
        pub target: Target,
        dir: Option<PathBuf>,
        _db: Option<ScratchDb>,
    }

    impl TestStore {
        /// A fresh store: on PostgreSQL (`VIGIL_TEST_DB`) when
        /// `VIGIL_TEST_STORE=postgres` (the second test pass), else SQLite.
        pub fn new() -> TestStore {
            if on_postgres() {
                let server = test_server()
                    .expect("VIGIL_TEST_STORE=postgres needs VIGIL_TEST_DB (see .ci/postgres.sh)");
                TestStore::postgres(&server)
            } else {
                TestStore::sqlite()
            }
        }

        pub fn sqlite() -> TestStore {
            let dir = std::env::temp_dir().join(format!("vigil-store-{}", uuid::Uuid::new_v4()));
            let target = Target::Sqlite(dir.join("vigil.db"));
            let store = Store::open(&target).expect("open a test store");
            TestStore {
                store: Some(store),
                target,
                dir: Some(dir),
                _db: None,
            }
        }

        pub fn postgres(server: &str) -> TestStore {
            let db = ScratchDb::create(server).expect("a scratch database on VIGIL_TEST_DB");
            let target = db.target();
            let store = Store::open(&target).expect("open a test store");
            TestStore {
                store: Some(store),
                target,
                dir: None,
                _db: Some(db),
            }
        }

        /// Another connection to the same store.
        pub fn open_again(&self) -> Store {
            Store::open(&self.target).expect("reopen the test store")
        }

        pub fn dir(&self) -> Option<&Path> {
            self.dir.as_deref()
        }
    }

    impl Default for TestStore {
        fn default() -> TestStore {
            TestStore::new()
        }
    }

    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            self.store.as_ref().expect("open until dropped")
        }
    }

    impl std::ops::DerefMut for TestStore {
        fn deref_mut(&mut self) -> &mut Store {
            self.store.as_mut().expect("open until dropped")
        }
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            drop(self.store.take());
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn dbname_swap() {
            assert_eq!(
                super::with_dbname("postgres://u@127.0.0.1:5/postgres", "x"),
                "postgres://u@127.0.0.1:5/x"
            );
            assert_eq!(
                super::with_dbname("postgres://u@h:5?sslmode=disable", "x"),
                "postgres://u@h:5/x?sslmode=disable"
            );
        }
    }
}

/// A fresh store for a unit test (see [`scratch::TestStore`]).
#[cfg(test)]
pub fn test_store() -> scratch::TestStore {
    scratch::TestStore::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_twice_and_keeps_the_version() {
        let mut a = test_store();
        let mut b = a.open_again();
        assert_eq!(schema::version(&mut b).unwrap(), schema::VERSION);
        assert_eq!(schema::version(&mut a).unwrap(), schema::VERSION);
        if let Target::Sqlite(_) = a.target {
            let tx = a.read().unwrap();
            let mode: String = tx.query_value("PRAGMA journal_mode", &[]).unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn refuses_a_store_from_a_newer_vigil() {
        let mut store = test_store();
        schema::set_version(&mut store, schema::VERSION + 1).unwrap();
        let err = Store::open(&store.target)
            .err()
            .expect("a newer schema is refused");
        assert!(err.to_string().contains("upgrade vigil"), "{err}");
        let err = Store::open_existing(&store.target)
            .err()
            .expect("status refuses it too");
        assert!(err.to_string().contains("upgrade vigil"), "{err}");
    }

    #[test]
    fn status_does_not_create_a_store() {
        let dir = std::env::temp_dir().join(format!("vigil-none-{}", uuid::Uuid::new_v4()));
        let err = Store::open_existing(&Target::Sqlite(dir.join("vigil.db")))
            .err()
            .expect("missing");
        assert!(err.to_string().contains("not found"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn both_backends_read_and_write_the_same_types() {
        let mut store = test_store();
        let tx = store.write().unwrap();
        tx.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)",
            params!["n", "h", 1.5],
        )
        .unwrap();
        let row = tx
            .query_row(
                "SELECT holder, expires_at, COUNT(*) FROM leases WHERE name = ?1 GROUP BY holder, expires_at",
                params!["n"],
            )
            .unwrap();
        assert_eq!(row.get::<String>(0).unwrap(), "h");
        assert_eq!(row.get::<f64>(1).unwrap(), 1.5);
        assert_eq!(row.get::<i64>(2).unwrap(), 1);
        tx.savepoint("sp").unwrap();
        tx.execute("DELETE FROM leases", &[]).unwrap();
        tx.rollback_to("sp").unwrap();
        tx.commit().unwrap();
        let tx = store.read().unwrap();
        let n: i64 = tx.query_value("SELECT COUNT(*) FROM leases", &[]).unwrap();
        assert_eq!(n, 1, "the savepoint undid the delete alone");
    }

    #[test]
    fn a_store_that_forbids_writes_refuses_them() {
        let mut store = test_store();
        let mut web = Store::open_existing(&store.target).unwrap();
        web.forbid_writes().unwrap();
        let tx = web.read().unwrap();
        assert!(tx
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ('n', 'h', 1)",
                &[]
            )
            .is_err());
        drop(tx);
        let n: i64 = web
            .read()
            .unwrap()
            .query_value("SELECT COUNT(*) FROM leases", &[])
            .unwrap();
        assert_eq!(n, 0);
        // The others still write.
        store
            .in_write(|tx| {
                tx.execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ('n', 'h', 1)",
                    &[],
                )
            })
            .unwrap();
    }

    /// PostgreSQL restarted under a store: the next transaction after the
    /// server is back reconnects by itself.
    #[test]
    fn a_broken_connection_is_replaced() {
        let Some(server) = scratch::require_server("a_broken_connection_is_replaced") else {
            return;
        };
        let mut store = scratch::TestStore::postgres(&server);
        let pid: i64 = store
            .read()
            .unwrap()
            .query_value("SELECT pg_backend_pid()::BIGINT", &[])
            .unwrap();
        let mut other = store.open_again();
        other
            .in_write(|tx| {
                tx.execute("SELECT pg_terminate_backend(?1::INT)", params![pid])
                    .map(drop)
            })
            .unwrap();
        // The first use may fail (the connection is found dead); the next
        // reconnects.
        let mut got = None;
        for _ in 0..50 {
            match store
                .read()
                .and_then(|tx| tx.query_value::<i64>("SELECT 1::BIGINT", &[]))
            {
                Ok(v) => {
                    got = Some(v);
                    break;
                }
                Err(e) => {
                    assert!(e.is_outage(), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        assert_eq!(got, Some(1));
    }
}
