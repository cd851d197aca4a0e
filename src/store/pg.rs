//! The PostgreSQL backend: one connection per store owner, its prepared
//! statements, and what happens when the server goes away.
//!
//! A connection that broke (server restarted, network gone) is dropped;
//! the next transaction reconnects, no sooner than a backoff that doubles
//! from 200 ms to 2 s, so a thread in a retry loop neither spins nor waits
//! long once the server is back. The outage is logged once per process
//! when it starts and once when it ends, whichever thread sees it first:
//! every thread has its own connection and would otherwise say the same.

use super::sql::{for_postgres, Row, Val, Value};
use super::target::{tls_config, PgTarget};
use super::DbError;
use crate::clock::unix_ms;
use postgres::types::ToSql;
use postgres::{Client, Statement};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// When the current outage began (Unix ms), 0 when there is none.
static OUTAGE_SINCE_MS: AtomicU64 = AtomicU64::new(0);
/// How many outages ended in this process. A connection made before the
/// last one ended is presumed dead (the sync client notices a closed
/// socket only when used): it is replaced quietly, not reported as a new
/// outage.
static OUTAGES_ENDED: AtomicU64 = AtomicU64::new(0);

fn outage_begins(shown: &str, why: &dyn std::fmt::Display) {
    if OUTAGE_SINCE_MS
        .compare_exchange(0, unix_ms().max(1), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        log::warn!("store {shown} unreachable: {why}; retrying with backoff");
    }
}

fn outage_ends(shown: &str) {
    let since = OUTAGE_SINCE_MS.swap(0, Ordering::SeqCst);
    if since != 0 {
        OUTAGES_ENDED.fetch_add(1, Ordering::SeqCst);
        let secs = unix_ms().saturating_sub(since) as f64 / 1000.0;
        log::warn!("store {shown} reachable again after {secs:.1} s");
    }
}

/// Whether `e` means the connection is gone (rather than a statement
/// refused): closed, an I/O error, or the server shutting down.
pub fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The TLS connector, made once per connection owner.
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

pub struct PgConn {
    target: PgTarget,
    tls: Tls,
    client: Option<Client>,
    cache: RefCell<HashMap<String, Statement>>,
    broken: Cell<bool>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// `OUTAGES_ENDED` when this connection was made.
    generation: u64,
    /// Every transaction is READ ONLY (`Store::forbid_writes`).
    pub read_only: bool,
}

impl PgConn {
    /// Connects now: a failure here (a refused login, no server) is the
    /// caller's to report; it is not an outage.
    pub fn connect(target: &PgTarget) -> Result<PgConn, DbError> {
        let tls = match tls_config(&target.tls).map_err(DbError::Tls)? {
            None => Tls::None,
            Some(config) => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
        };
        let mut conn = PgConn {
            target: target.clone(),
            tls,
            client: None,
            cache: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
            retry_at: None,
            backoff: BACKOFF_MIN,
            generation: OUTAGES_ENDED.load(Ordering::SeqCst),
            read_only: false,
        };
        conn.client = Some(conn.open().map_err(|e| match e {
            DbError::Pg(e) if is_connection_error(&e) => DbError::Unavailable(e.to_string()),
            e => e,
        })?);
        Ok(conn)
    }

    fn open(&self) -> Result<Client, DbError> {
        let config = &self.target.config;
        let client = match &self.tls {
            Tls::None => config.connect(postgres::NoTls),
            Tls::Rustls(make) => config.connect(make.clone()),
        }?;
        Ok(client)
    }

    /// Begins a transaction, reconnecting first if the connection broke.
    pub fn begin(&mut self) -> Result<PgTx<'_>, DbError> {
        let closed = self.client.as_ref().is_some_and(|c| c.is_closed());
        let stale = self.generation < OUTAGES_ENDED.load(Ordering::SeqCst);
        if self.broken.get() || closed || stale {
            self.client = None;
            self.cache.borrow_mut().clear();
            self.broken.set(false);
        }
        if self.client.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(DbError::Unavailable(format!(
                    "{} unreachable (retrying)",
                    self.target.shown
                )));
            }
            let generation = OUTAGES_ENDED.load(Ordering::SeqCst);
            match self.open() {
                Ok(client) => {
                    self.client = Some(client);
                    self.generation = generation;
                    self.retry_at = None;
                    self.backoff = BACKOFF_MIN;
                    outage_ends(&self.target.shown);
                }
                Err(e) => {
                    outage_begins(&self.target.shown, &e);
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return Err(DbError::Unavailable(format!("{}: {e}", self.target.shown)));
                }
            }
        }
        let PgConn {
            client,
            cache,
            broken,
            target,
            read_only,
            ..
        } = self;
        let client = client.as_mut().expect("connected above");
        match client.build_transaction().read_only(*read_only).start() {
            Ok(tx) => Ok(PgTx {
                tx: RefCell::new(tx),
                cache,
                broken,
                shown: &target.shown,
            }),
            Err(e) => {
                if is_connection_error(&e) {
                    broken.set(true);
                    outage_begins(&target.shown, &e);
                }
                Err(DbError::Pg(e))
            }
        }
    }
}

/// A transaction on PostgreSQL. Statements are prepared once per
/// connection and kept.
pub struct PgTx<'a> {
    tx: RefCell<postgres::Transaction<'a>>,
    cache: &'a RefCell<HashMap<String, Statement>>,
    broken: &'a Cell<bool>,
    shown: &'a str,
}

impl PgTx<'_> {
    fn fail(&self, e: postgres::Error) -> DbError {
        if is_connection_error(&e) {
            self.broken.set(true);
            outage_begins(self.shown, &e);
        }
        DbError::Pg(e)
    }

    fn statement(&self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.cache.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self
            .tx
            .borrow_mut()
            .prepare(&for_postgres(sql))
            .map_err(|e| self.fail(e))?;
        self.cache
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    pub fn execute(&self, sql: &str, params: &[Val]) -> Result<usize, DbError> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let n = self
            .tx
            .borrow_mut()
            .execute(&stmt, &refs)
            .map_err(|e| self.fail(e))?;
        Ok(n as usize)
    }

    pub fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self
            .tx
            .borrow_mut()
            .query(&stmt, &refs)
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| Value::from_pg(row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    /// Statements without parameters or results (DDL, savepoints).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        self.tx
            .borrow_mut()
            .batch_execute(sql)
            .map_err(|e| self.fail(e))
    }

    pub fn commit(self) -> Result<(), DbError> {
        let (broken, shown) = (self.broken, self.shown);
        self.tx.into_inner().commit().map_err(|e| {
            if is_connection_error(&e) {
                broken.set(true);
                outage_begins(shown, &e);
            }
            DbError::Pg(e)
        })
    }
}
