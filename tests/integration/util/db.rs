//! The store the processes under test share: a SQLite file in the test's
//! directory, or a fresh database on PostgreSQL (`VIGIL_TEST_DB`, from
//! `.ci/postgres.sh`) when `VIGIL_TEST_STORE=postgres` or the test is about
//! PostgreSQL; and, for the outage test, a PostgreSQL server of the test's
//! own that it can stop and start.
//!
//! Queries go through vigil's own store interface, so the same SQL reads
//! either backend.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vigil::store::scratch::{self, ScratchDb};
use vigil::store::{FromValue, Row, Store, Target, Val};

pub struct TestDb {
    /// `VIGIL_DB` for the processes under test.
    pub value: String,
    target: Target,
    /// The test's own connection, made when first needed and again after
    /// a failure.
    store: RefCell<Option<Store>>,
    /// The test's writing connection (vigil's own opening; the reading one
    /// is read-only on SQLite).
    writer: RefCell<Option<Store>>,
    _scratch: Option<ScratchDb>,
}

impl TestDb {
    /// SQLite in `dir`, or PostgreSQL in the second test pass.
    pub fn in_dir(dir: &Path) -> TestDb {
        if scratch::on_postgres() {
            let server = scratch::test_server()
                .expect("VIGIL_TEST_STORE=postgres needs VIGIL_TEST_DB (see .ci/postgres.sh)");
            return TestDb::on_server(&server);
        }
        let value = dir.join("vigil.db").display().to_string();
        TestDb {
            target: Target::parse(&value, None, None).expect("a path"),
            value,
            store: RefCell::new(None),
            writer: RefCell::new(None),
            _scratch: None,
        }
    }

    /// A fresh database on `VIGIL_TEST_DB`; None (skipped) when it is not
    /// set, a failure under CI=true.
    pub fn postgres(test: &str) -> Option<TestDb> {
        scratch::require_server(test).map(|server| TestDb::on_server(&server))
    }

    pub fn on_server(server: &str) -> TestDb {
        let db = ScratchDb::create(server).expect("a scratch database");
        TestDb {
            value: db.url.clone(),
            target: db.target(),
            store: RefCell::new(None),
            writer: RefCell::new(None),
            _scratch: Some(db),
        }
    }

    /// A URL or path without creating anything (a server of the test's own).
    pub fn at(value: &str) -> TestDb {
        TestDb {
            value: value.to_string(),
            target: Target::parse(value, None, None).expect("a valid VIGIL_DB"),
            store: RefCell::new(None),
            writer: RefCell::new(None),
            _scratch: None,
        }
    }

    /// Creates the schema as vigil does (`Store::open`: WAL mode on SQLite,
    /// the migrations on either), for tests that fill the store before
    /// starting a process.
    pub fn create_schema(&self) {
        Store::open(&self.target).unwrap_or_else(|e| panic!("create the schema: {e}"));
    }

    /// Runs one statement in its own transaction; how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Val]) -> usize {
        let mut slot = self.writer.borrow_mut();
        if slot.is_none() {
            *slot =
                Some(Store::open(&self.target).unwrap_or_else(|e| panic!("open the store: {e}")));
        }
        let store = slot.as_mut().expect("opened above");
        let changed = store.write().and_then(|tx| {
            let n = tx.execute(sql, params)?;
            tx.commit()?;
            Ok(n)
        });
        match changed {
            Ok(n) => n,
            Err(e) => {
                *slot = None;
                panic!("{sql:?}: {e}")
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.target.is_postgres()
    }

    /// Rows of a query; None while the store cannot be read (not created
    /// yet, or its server down).
    pub fn try_rows(&self, sql: &str, params: &[Val]) -> Option<Vec<Row>> {
        self.query(sql, params).ok()
    }

    fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, String> {
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            *slot = Some(Store::open_existing(&self.target).map_err(|e| e.to_string())?);
        }
        let store = slot.as_mut().expect("opened above");
        let rows = store
            .read()
            .and_then(|tx| tx.query(sql, params))
            .map_err(|e| e.to_string());
        if rows.is_err() {
            *slot = None;
        }
        rows
    }

    pub fn rows(&self, sql: &str, params: &[Val]) -> Vec<Row> {
        self.query(sql, params)
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"))
    }

    /// The first cell of the first row, if there is one.
    pub fn value<T: FromValue>(&self, sql: &str, params: &[Val]) -> Option<T> {
        let rows = self.try_rows(sql, params)?;
        rows.first().and_then(|r| r.get(0).ok())
    }

    /// `SELECT COUNT(*) ...`.
    pub fn count(&self, sql: &str, params: &[Val]) -> i64 {
        self.rows(sql, params)[0].get(0).expect("a count")
    }
}

/// A PostgreSQL server of one test's own (initdb in a temporary directory,
/// trust authentication on 127.0.0.1, an ephemeral port), which the test
/// may stop and start; stopped and removed when dropped.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_nobody: bool,
}

impl PgServer {
    /// None (skipped) without PostgreSQL's binaries; under CI=true their
    /// absence fails the test.
    pub fn start(test: &str) -> Option<PgServer> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                let mut found: Vec<PathBuf> = dirs
                    .flatten()
                    .map(|d| d.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop()
            });
        let Some(bin) = bin else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: no PostgreSQL server binaries under /usr/lib/postgresql but CI=true"
                );
            }
            eprintln!("SKIPPED {test}: apt-get install postgresql to run it");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("vigil-pgtest-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        let as_nobody = unsafe { libc::geteuid() } == 0;
        if as_nobody {
            let ok = Command::new("chown")
                .args(["nobody", &dir.display().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown nobody {}", dir.display());
        }
        let server = PgServer {
            port: vigil::testkit::free_port(),
            dir,
            bin,
            as_nobody,
        };
        let out = server
            .command("initdb")
            .args([
                "-D",
                &server.data(),
                "-U",
                "vigil",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_again();
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_nobody {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "nobody", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.join("server.log").display().to_string();
        let out = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-l", &log, "-w", "-t", "60"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Starts (again) on the same port and data.
    pub fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.pg_ctl(&["-o", &opts, "start"]);
    }

    /// Stops the server (fast: sessions are cut, as in a restart).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// `VIGIL_DB` for database `postgres` as user `vigil`.
    pub fn url(&self) -> String {
        format!("postgres://vigil@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long the outage test keeps the server down.
pub const OUTAGE: Duration = Duration::from_secs(10);
