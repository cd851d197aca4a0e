//! The benchmark's child processes (the router under test, the zmq_proxy
//! baseline, the scale-test clients). Each is started with a piped stderr,
//! whose `ready:` line tells its ephemeral endpoints and whose warnings are
//! tallied for the report, and each is always reaped, on error paths too,
//! so a failed run leaves no daemon holding ports or CPU.

use super::{join, spawn, BenchError, Doing};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines kept from the end of a child's stderr, and warnings kept verbatim.
const TAIL_LINES: usize = 12;
const NOTABLE_LINES: usize = 8;

/// How to ask a child to stop before killing it.
#[derive(Clone, Copy, Debug)]
pub enum Shutdown {
    /// SIGTERM, which makes the router drain and exit.
    Terminate,
    /// EOF on stdin, which the hidden helpers wait for.
    CloseStdin,
}

/// What a child's stderr said, summed up.
#[derive(Debug, Default)]
pub struct LogTally {
    pub lines: u64,
    pub warnings: u64,
    pub errors: u64,
    /// The first warning and error lines, verbatim.
    pub notable: Vec<String>,
    pub tail: VecDeque<String>,
}

/// How a child ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub took: Duration,
    /// It did not stop when asked and was killed.
    pub forced: bool,
    pub log: LogTally,
}

pub struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Receiver<String>,
    log: Option<JoinHandle<LogTally>>,
    reaped: bool,
}

impl ChildProc {
    /// Starts `command` with stdin and stderr piped and stdout discarded.
    pub fn spawn(name: &str, mut command: Command) -> Result<ChildProc, BenchError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().doing(&format!("starting the {name}"))?;
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let stderr = child.stderr.take();
        let mut proc = ChildProc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            ready,
            log: None,
            reaped: false,
        };
        if let Some(stderr) = stderr {
            let thread = format!("bench-log-{name}");
            proc.log = Some(spawn(&thread, move || tally_log(stderr, ready_tx))?);
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child's `ready:` line and returns its key=value pairs.
    /// On failure the child is killed and its last words are in the error.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, String>, BenchError> {
        match self.ready.recv_timeout(timeout) {
            Ok(line) => match vigil::ready::parse(&line) {
                Some(pairs) => Ok(pairs),
                None => Err(self.failure(format!("unreadable ready line {line:?}"))),
            },
            Err(RecvTimeoutError::Timeout) => Err(self.failure(format!(
                "no `ready:` line on stderr within {} s (does VIGIL_LOG let info through?)",
                timeout.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.failure("exited before its `ready:` line".to_string()))
            }
        }
    }

    /// Asks the child to stop, kills it if it has not within `grace`, and
    /// reaps it.
    pub fn stop(mut self, how: Shutdown, grace: Duration) -> Stopped {
        let began = Instant::now();
        match how {
            Shutdown::Terminate => terminate(self.child.id()),
            Shutdown::CloseStdin => drop(self.stdin.take()),
        }
        let status = wait_until(&mut self.child, began + grace);
        let forced = status.is_none();
        let status = status.or_else(|| self.kill_and_reap());
        self.reaped = true;
        Stopped {
            status,
            took: began.elapsed(),
            forced,
            log: self.take_log(),
        }
    }

    fn failure(&mut self, detail: String) -> BenchError {
        let status = self.kill_and_reap();
        self.reaped = true;
        let log = self.take_log();
        let status = status.map_or("not reaped".to_string(), |s| s.to_string());
        let detail = format!("{detail} ({status})");
        BenchError::child(&self.name, detail, log.tail.into_iter().collect())
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill(); // fails only if it has already exited
        self.child.wait().ok()
    }

    /// The stderr tally; the pipe is at EOF once the child is reaped.
    fn take_log(&mut self) -> LogTally {
        let handle = self.log.take();
        handle.and_then(|h| join(h).ok()).unwrap_or_default()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_and_reap();
            self.take_log();
        }
    }
}

/// A command that runs this same `vigil` binary with `args`.
/// A command running `vigil ARGS…` (the binary beside this one), or, for
/// `["bench", HELPER, …]`, this benchmark binary's own hidden helper.
pub fn vigil_command(args: &[&str]) -> Result<Command, BenchError> {
    let exe = std::env::current_exe().doing("finding the vigil-bench executable")?;
    let (exe, args) = match args.split_first() {
        Some((&"bench", rest)) => (exe, rest),
        _ => (exe.with_file_name("vigil"), args),
    };
    let mut command = Command::new(exe);
    command.args(args);
    Ok(command)
}

/// A `Vm*` figure of /proc/PID/status (e.g. VmRSS, VmHWM), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_mib(&status, field)
}

/// The CPU time (user plus system, all threads) process `pid` has used so
/// far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// utime + stime of a /proc/PID/stat line, in clock ticks. The command name
/// in parentheses may hold spaces, so fields are counted after its `)`:
/// state is the first there, utime the 12th and stime the 13th.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine has spent busy so far, all cores together:
/// every process, the kernel's interrupt work, and time the hypervisor
/// took (steal), from the `cpu` line of /proc/stat.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = busy_ticks(stat.lines().next()?)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// user + nice + system + irq + softirq + steal of a `cpu` line (idle and
/// iowait left out; guest time is already part of user).
fn busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// sysconf(_SC_CLK_TCK), the unit of /proc/PID/stat times; 100 on Linux.
fn clock_ticks_per_second() -> f64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf(3) takes an integer and touches no memory of ours.
    let ticks = unsafe { sysconf(SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn status_field_mib(status: &str, field: &str) -> Option<f64> {
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Reads the child's stderr to EOF: hands over the `ready:` line as soon as
/// it appears, and keeps reading so the child never blocks on a full pipe.
fn tally_log(stderr: ChildStderr, ready: Sender<String>) -> LogTally {
    let mut tally = LogTally::default();
    let mut ready = Some(ready);
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.contains("ready: ") {
            if let Some(ready) = ready.take() {
                let _ = ready.send(line.clone());
            }
        }
        tally.record(line);
    }
    tally
}

impl LogTally {
    fn record(&mut self, line: String) {
        self.lines += 1;
        let is_error = line.contains(" ERROR ") || line.contains("panicked");
        let is_warning = line.contains(" WARN ");
        self.errors += u64::from(is_error);
        self.warnings += u64::from(is_warning);
        if (is_error || is_warning) && self.notable.len() < NOTABLE_LINES {
            self.notable.push(line.clone());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// std has no timed wait on a child, so poll `try_wait` at a short interval.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return None,
        }
    }
}

/// Sends SIGTERM: `Child::kill` can only send SIGKILL, and the router's
/// draining shutdown on SIGTERM is part of what we observe.
fn terminate(pid: u32) {
    extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) takes two integers and touches no memory of ours;
        // `pid` is our own child, not yet reaped, so it was not reused.
        unsafe {
            kill(pid, SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_mib() {
        let status = "Name:\tvigil\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_field_mib(status, "VmHWM"), Some(20.0));
        assert_eq!(status_field_mib(status, "VmRSS"), Some(10.0));
        assert_eq!(status_field_mib(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (vigil (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 7 0 12345 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("4242 (vigil) S 1 2"), None);
        assert!(cpu_time(std::process::id()).is_some());
        assert!(clock_ticks_per_second() >= 1.0);
    }

    #[test]
    fn machine_busy_time_leaves_idle_out() {
        let line = "cpu  100 20 30 5000 40 0 6 7 0 0";
        assert_eq!(busy_ticks(line), Some(163));
        assert_eq!(busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(busy_ticks("cpu 1 2 3"), None);
        assert!(machine_busy().is_some());
    }

    #[test]
    fn tally_counts_warnings_and_keeps_a_tail() {
        let mut tally = LogTally::default();
        for n in 0..20 {
            tally.record(format!("[t INFO  vigil] line {n}"));
        }
        tally.record("[t WARN  vigil::router] queue full".to_string());
        assert_eq!((tally.lines, tally.warnings, tally.errors), (21, 1, 0));
        assert_eq!(tally.tail.len(), TAIL_LINES);
        assert_eq!(tally.notable, vec!["[t WARN  vigil::router] queue full"]);
    }
}
