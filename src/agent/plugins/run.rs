//! Running one plugin: `/bin/sh -c COMMAND` in its own session and process
//! group, stdout read up to a cap, killed as a whole group on timeout.
//!
//! The group kill matters: a plugin that started children (a pipeline, a
//! backgrounded helper) must not leave them running after it is reported
//! UNKNOWN, so the group is killed with SIGKILL on timeout, and also after
//! a normal exit, so that nothing it started outlives the run.

use super::perfdata::{parse_output, Output};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Nagios state for "could not tell": every failure to run maps here.
pub const UNKNOWN: i32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub status: i32,
    pub output: Output,
    pub duration: Duration,
    pub timed_out: bool,
    pub truncated: bool,
}

/// A Nagios status from an exit code: 0-3 as they are, anything else
/// (including death by signal) UNKNOWN.
pub fn status_of(code: Option<i32>) -> i32 {
    match code {
        Some(c @ 0..=3) => c,
        _ => UNKNOWN,
    }
}

/// How often a run checks whether the agent is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Runs `command` with `timeout`, keeping at most `max_output` bytes. When
/// `stopping` turns true the run is cut short like a timeout, so SIGTERM
/// does not wait for plugins with long timeouts.
pub fn run(
    command: &str,
    timeout: Duration,
    max_output: usize,
    stopping: &dyn Fn() -> bool,
) -> RunOutcome {
    let started = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours;
    // it makes the child leader of a new session and process group, whose
    // id is its pid, so killpg reaches everything it starts.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("UNKNOWN: cannot start plugin: {e}"), started),
    };
    let pgid = child.id() as i32;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let reader = std::thread::Builder::new()
        .name("plugin-output".into())
        .spawn(move || {
            let _ = tx.send(read_capped(stdout, max_output));
        });
    let deadline = started + timeout;
    // Output ends when every process of the group has closed stdout
    // (normally: exited); then wait for the leader's status.
    let read = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(STOP_CHECK)) {
            Ok(r) => break Some(r),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break None,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if left <= STOP_CHECK || stopping() {
                    break None;
                }
            }
        }
    };
    let stopped = read.is_none() && Instant::now() < deadline;
    let mut status = None;
    if read.is_some() {
        status = wait_until(&mut child, deadline);
    }
    let timed_out = status.is_none();
    kill_group(pgid);
    if timed_out {
        let _ = child.wait();
    }
    let (read, finished) = match read {
        Some(r) => (r, true),
        None => match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => (r, true),
            Err(_) => (Default::default(), false),
        },
    };
    let (bytes, truncated) = read;
    match reader {
        Ok(handle) if finished => {
            let _ = handle.join();
        }
        // Still reading: a process that left the group (its own setsid)
        // holds stdout open. Joining would block this worker until it
        // exits, maybe never; the reader ends on its own when it does.
        _ => {}
    }
    let duration = started.elapsed();
    if timed_out {
        return RunOutcome {
            status: UNKNOWN,
            output: Output {
                text: if stopped {
                    "UNKNOWN: plugin killed: the agent is stopping".to_string()
                } else {
                    format!(
                        "UNKNOWN: plugin timed out after {:.1} s and was killed",
                        timeout.as_secs_f64()
                    )
                },
                ..Output::default()
            },
            duration,
            timed_out: true,
            truncated,
        };
    }
    let code = status.and_then(|s| s.code());
    let mut output = parse_output(&String::from_utf8_lossy(&bytes));
    if code.is_some_and(|c| !(0..=3).contains(&c)) || code.is_none() {
        let how = match code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        output.text = format!("UNKNOWN: plugin ended with {how}: {}", output.text);
    }
    RunOutcome {
        status: status_of(code),
        output,
        duration,
        timed_out: false,
        truncated,
    }
}

fn failed(text: String, started: Instant) -> RunOutcome {
    RunOutcome {
        status: UNKNOWN,
        output: Output {
            text,
            ..Output::default()
        },
        duration: started.elapsed(),
        timed_out: false,
        truncated: false,
    }
}

/// Reads to EOF, keeping the first `max` bytes; reading on past the cap
/// keeps a chatty plugin from blocking on a full pipe.
fn read_capped(mut from: impl Read, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
}

/// Waits for the child's exit until `deadline`. The leader has closed its
/// output, so this is normally immediate; the short naps only cover a
/// leader that closed stdout and kept running.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: a plain system call; a group that is already gone gives ESRCH.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);
    const OK: i32 = 0;
    const WARNING: i32 = 1;
    const CRITICAL: i32 = 2;

    #[test]
    fn exit_codes_map_to_states() {
        for (code, status) in [
            (0, OK),
            (1, WARNING),
            (2, CRITICAL),
            (3, UNKNOWN),
            (4, UNKNOWN),
            (255, UNKNOWN),
        ] {
            let out = run(&format!("echo 'text|a=1'; exit {code}"), T, 1024, &|| false);
            assert_eq!(out.status, status, "exit {code}");
            assert!(out.output.text.ends_with("text"), "{:?}", out.output.text);
            assert_eq!(out.output.perfdata.len(), 1);
        }
    }

    #[test]
    fn output_is_capped() {
        let out = run(
            "head -c 100000 /dev/zero | tr '\\0' x; exit 0",
            T,
            1000,
            &|| false,
        );
        assert!(out.truncated);
        assert_eq!(out.output.text.len(), 1000);
        assert_eq!(out.status, OK);
    }

    #[test]
    fn timeout_is_unknown() {
        let out = run("exec sleep 30", Duration::from_millis(200), 1024, &|| false);
        assert!(out.timed_out);
        assert_eq!(out.status, UNKNOWN);
        assert!(out.duration < Duration::from_secs(10));
    }

    #[test]
    fn an_escaped_child_holding_stdout_does_not_hold_the_worker() {
        // The child leaves the process group (setsid) and keeps stdout open
        // for 20 s; the run must end at its timeout, not when the child does.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(
                "setsid sleep 20 & echo OK; exit 0",
                Duration::from_millis(200),
                1024,
                &|| false,
            ));
        });
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the run returned while the escaped child still runs");
        assert!(out.timed_out, "stdout never closed within the timeout");
    }

    #[test]
    fn stopping_cuts_a_run_short() {
        let out = run("exec sleep 30", Duration::from_secs(3600), 1024, &|| true);
        assert!(out.timed_out);
        assert!(out.output.text.contains("stopping"), "{}", out.output.text);
    }
}
