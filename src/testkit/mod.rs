//! What the tests and benchmarks need around vigil: scratch directories, free
//! ports, bounded polling, and real servers (carbon-cache, aiosmtpd) to talk
//! to.
//!
//! It lives in the library so that the unit tests in `src/`, the integration
//! tests in `tests/` and `vigil-bench` share one copy. Nothing in the
//! daemons uses it (the linker leaves it out of the `vigil` binary). It is
//! test harness code: it panics with a message saying what failed instead
//! of returning errors, except where the benchmarks need a `Result`.
//!
//! A test that needs a real server which is not installed calls
//! [`require`]: on a developer's machine the test is skipped loudly; under
//! `CI=true` it fails, so CI cannot pass without the server.

pub mod aiosmtpd;
pub mod carbon;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether a test that needs `what` may run. `present` false: under
/// `CI=true` this panics (a missing server is a broken CI set-up, not a
/// skip); elsewhere it prints a loud SKIPPED line and returns false.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if ci() {
        panic!(
            "{what} is missing and CI=true: the test cannot be skipped in CI (.ci/run installs it)"
        );
    }
    eprintln!("!!! SKIPPED: {what} is missing (CI=true would fail here)");
    false
}

/// Whether this run is CI's (`CI=true`, as .ci/run is started).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A TCP port on 127.0.0.1 that was free when asked (the OS does not hand
/// it out again at once).
pub fn try_free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// [`try_free_port`] for tests.
pub fn free_port() -> u16 {
    try_free_port().expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `check` until it returns Some, or panics with `what` after
/// `timeout`. For conditions no event announces (a row in a database, a
/// line in a file, a port that listens).
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `check` every 20 ms until it returns Some; None after `timeout`.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory removed when dropped (kept when the test fails, to look at).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("vigil-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {} for inspection", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_server_is_required_without_fuss() {
        assert!(require("a server", true));
    }

    #[test]
    fn poll_gives_up_at_its_deadline() {
        assert_eq!(poll(Duration::from_millis(50), || None::<()>), None);
        let mut n = 0;
        assert_eq!(
            poll(Duration::from_secs(10), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port();
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
