//! The embedded SQLite store shared by the sinks, the scheduler and
//! `vigil status`.
//!
//! Several processes on one host may open the same file: WAL mode lets
//! readers run beside one writer, and a busy timeout turns a brief lock
//! into a wait instead of an error. The schema is created and migrated here,
//! by `PRAGMA user_version`, so every program that opens the store agrees on
//! it. Each owner of a `Store` is one thread (a `rusqlite::Connection` is
//! `Send`, not `Sync`).

pub mod clients;
pub mod dedup;
pub mod notifications;
pub mod plugins;
pub mod results;
pub mod schema;

use rusqlite::Connection;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open store: one connection, schema up to date.
pub struct Store {
    pub conn: Connection,
    path: PathBuf,
}

/// A store that could not be opened or used, with the file it concerns.
#[derive(Debug)]
pub struct StoreError {
    pub path: PathBuf,
    pub what: String,
    pub source: rusqlite::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store {}: {}: {}",
            self.path.display(),
            self.what,
            self.source
        )
    }
}

impl std::error::Error for StoreError {}

impl Store {
    /// Opens (creating if needed) the database at `path`, sets WAL mode and
    /// the busy timeout, and migrates the schema to the current version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |what: &str| {
            let path = path.to_path_buf();
            let what = what.to_string();
            move |source| StoreError { path, what, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory is the common first-run case; let SQLite
            // report anything else (permissions, a file in the way).
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("set WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        schema::migrate(&mut store.conn).map_err(err("migrate schema"))?;
        Ok(store)
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a rusqlite error with this store's path and what was being done.
    pub fn error(&self, what: &str, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            what: what.to_string(),
            source,
        }
    }
}

/// Unix time now, in seconds with a fraction: the unit of every time column.
pub use crate::clock::unix_secs as now;

/// A store in a fresh temporary directory, removed when dropped: for unit
/// tests. It derefs to the [`Store`].
#[cfg(test)]
pub struct TestStore {
    store: Option<Store>,
    dir: PathBuf,
}

#[cfg(test)]
pub fn test_store() -> TestStore {
    let dir = std::env::temp_dir().join(format!("vigil-store-{}", uuid::Uuid::new_v4()));
    let store = Store::open(&dir.join("vigil.db")).expect("open a test store");
    TestStore {
        store: Some(store),
        dir,
    }
}

#[cfg(test)]
impl std::ops::Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store.as_ref().expect("open until dropped")
    }
}

#[cfg(test)]
impl std::ops::DerefMut for TestStore {
    fn deref_mut(&mut self) -> &mut Store {
        self.store.as_mut().expect("open until dropped")
    }
}

#[cfg(test)]
impl Drop for TestStore {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_twice_and_keeps_the_version() {
        let dir = std::env::temp_dir().join(format!("vigil-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("vigil.db");
        let a = Store::open(&path).unwrap();
        let b = Store::open(&path).unwrap();
        let version: i64 = b
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::VERSION);
        let mode: String = a
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop((a, b));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_store_from_a_newer_vigil() {
        let dir = std::env::temp_dir().join(format!("vigil-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("vigil.db");
        let store = Store::open(&path).unwrap();
        store
            .conn
            .pragma_update(None, "user_version", schema::VERSION + 1)
            .unwrap();
        drop(store);
        let err = Store::open(&path).err().expect("a newer schema is refused");
        assert!(err.to_string().contains("upgrade vigil"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
