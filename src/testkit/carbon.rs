//! A real carbon-cache (Debian's graphite-carbon) in a directory of its own,
//! read back with whisper-fetch (python3-whisper).
//!
//! Used by the Graphite writer's unit tests, the sink integration tests and
//! `vigil-bench sinks`. Every metric has a 1 s retention for an hour, so a
//! point written at second `ts` is read back at exactly `ts`.

use super::{poll, wait_for, TempDir};
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CARBON_CACHE: &str = "/usr/bin/carbon-cache";
pub const WHISPER_FETCH: &str = "/usr/bin/whisper-fetch";

/// How long carbon may take to listen, or a point to appear.
pub const CARBON_WAIT: Duration = Duration::from_secs(60);

/// A carbon-cache: configured at once, running between [`Carbon::run`] and
/// [`Carbon::kill`] (or drop), as often as a test needs.
pub struct Carbon {
    dir: PathBuf,
    /// Set when the directory is a scratch one, removed on drop.
    _scratch: Option<TempDir>,
    port: u16,
    child: Option<Child>,
}

impl Carbon {
    /// Whether carbon-cache and whisper-fetch are installed.
    pub fn installed() -> bool {
        Path::new(CARBON_CACHE).exists() && Path::new(WHISPER_FETCH).exists()
    }

    /// For tests: [`super::require`] carbon; false means skip the test.
    pub fn required() -> bool {
        super::require(
            &format!("{CARBON_CACHE} or {WHISPER_FETCH} (Debian graphite-carbon, python3-whisper)"),
            Carbon::installed(),
        )
    }

    /// Configured in `dir` (created), on fresh ports; not running yet.
    pub fn configure(dir: &Path) -> io::Result<Carbon> {
        Carbon::configure_in(dir.to_path_buf(), None)
    }

    /// Configured in a scratch directory; not running yet. Panics if the
    /// files cannot be written.
    pub fn in_scratch() -> Carbon {
        let scratch = TempDir::new("carbon");
        Carbon::configure_in(scratch.0.clone(), Some(scratch)).expect("configure carbon-cache")
    }

    /// [`Carbon::in_scratch`], running. Panics if carbon does not start.
    ///
    /// The ports are free when chosen but not reserved, so another test may
    /// take one before carbon binds it; a failed start is tried again on
    /// fresh ports, twice.
    pub fn start() -> Carbon {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut carbon = Carbon::in_scratch();
            match carbon.run() {
                Ok(()) => return carbon,
                Err(e) => failures.push(e.to_string()),
            }
        }
        panic!("carbon-cache did not start: {}", failures.join("\n---\n"));
    }

    fn configure_in(dir: PathBuf, scratch: Option<TempDir>) -> io::Result<Carbon> {
        std::fs::create_dir_all(&dir)?;
        let port = super::try_free_port()?;
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {d}/storage\nLOCAL_DATA_DIR = {d}/whisper\n\
             WHITELISTS_DIR = {d}/lists\nLOG_DIR = {d}/log\nPID_DIR = {d}/run\nCONF_DIR = {d}\n\
             USER =\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 100000\n\
             MAX_CREATES_PER_MINUTE = 100000\nENABLE_TAGS = False\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {port}\n\
             ENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {pickle}\nCACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = {query}\nLOG_UPDATES = False\nLOG_LISTENER_CONN_SUCCESS = False\n",
            d = dir.display(),
            pickle = super::try_free_port()?,
            query = super::try_free_port()?,
        );
        std::fs::write(dir.join("carbon.conf"), conf)?;
        std::fs::write(
            dir.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:1h\n",
        )?;
        Ok(Carbon {
            dir,
            _scratch: scratch,
            port,
            child: None,
        })
    }

    /// Runs carbon-cache and waits (bounded) until its line receiver
    /// accepts. Its console output goes to `console.log` in its directory.
    pub fn run(&mut self) -> io::Result<()> {
        // A pid file left by a killed run would stop the new one.
        let _ = std::fs::remove_dir_all(self.dir.join("run"));
        let log = std::fs::File::create(self.dir.join("console.log"))?;
        let child = Command::new(CARBON_CACHE)
            .arg(format!(
                "--config={}",
                self.dir.join("carbon.conf").display()
            ))
            .args(["--nodaemon", "start"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let child = self.child.insert(child);
        let port = self.port;
        let listening = poll(CARBON_WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("carbon-cache exited with {status}")));
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        });
        let failure = match listening {
            Some(Ok(())) => return Ok(()),
            Some(Err(why)) => why,
            None => format!("carbon-cache did not listen on {port} within {CARBON_WAIT:?}"),
        };
        self.kill();
        let log = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        Err(io::Error::other(format!("{failure}; its console:\n{log}")))
    }

    /// Stops carbon (SIGKILL) and reaps it; it can be run again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` of the line receiver, as `VIGIL_GRAPHITE` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The whisper file of a dotted metric path.
    pub fn wsp(&self, metric: &str) -> PathBuf {
        let mut path = self.dir.join("whisper");
        path.extend(metric.split('.'));
        path.set_extension("wsp");
        path
    }

    /// The non-empty points of `metric` from `from` to `until` (Unix
    /// seconds), read with whisper-fetch; empty while carbon has not
    /// written the file.
    pub fn points(&self, metric: &str, from: i64, until: i64) -> Vec<(i64, f64)> {
        let path = self.wsp(metric);
        if !path.exists() {
            return Vec::new();
        }
        let Ok(out) = Command::new(WHISPER_FETCH)
            .arg(format!("--from={from}"))
            .arg(format!("--until={until}"))
            .arg(&path)
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let (t, v) = line.split_once('\t')?;
                Some((t.trim().parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits (bounded) until `metric` has the point (`ts`, `value`).
    pub fn expect_point(&self, metric: &str, ts: i64, value: f64) {
        wait_for(
            &format!("carbon to store {metric} = {value} at {ts}"),
            CARBON_WAIT,
            || {
                self.points(metric, ts - 30, ts + 30)
                    .into_iter()
                    .find(|(t, v)| *t == ts && (*v - value).abs() < 1e-9)
            },
        );
    }

    /// How many metric files carbon has created.
    pub fn metric_count(&self) -> usize {
        fn walk(dir: &Path) -> usize {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == "wsp"))
                    }
                })
                .sum()
        }
        walk(&self.dir.join("whisper"))
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        self.kill();
    }
}
