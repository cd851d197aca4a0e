//! Running one plugin: `/bin/sh -c COMMAND` through the process runner
//! ([`crate::process`]): its own session and process group, stdout read up
//! to a cap, killed as a whole group on timeout.
//!
//! The group kill matters: a plugin that started children (a pipeline, a
//! backgrounded helper) must not leave them running after it is reported
//! UNKNOWN, so the group is killed with SIGKILL on timeout, and also after
//! a normal exit, so that nothing it started outlives the run. The output
//! is the result, so it is awaited up to the timeout: a plugin whose
//! children hold stdout open past it timed out.

use super::perfdata::{parse_output, Output};
use crate::process::{self, AfterExit, Capture, End, Job};
use std::process::Command;
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
    let mut shell = Command::new("/bin/sh");
    shell.arg("-c").arg(command);
    let job = Job {
        command: shell,
        stdin: None,
        stdout: Capture::Head(max_output),
        stderr: Capture::Discard,
        timeout,
        after_exit: AfterExit::AwaitOutput,
    };
    let outcome = match process::run(job, stopping) {
        Ok(outcome) => outcome,
        Err(e) => return failed(format!("UNKNOWN: cannot start plugin: {e}"), started),
    };
    let truncated = outcome.stdout.truncated;
    let status = match outcome.end {
        End::Exited(status) => status,
        End::TimedOut | End::Stopped => {
            let text = if outcome.end == End::Stopped {
                "UNKNOWN: plugin killed: the agent is stopping".to_string()
            } else {
                format!(
                    "UNKNOWN: plugin timed out after {:.1} s and was killed",
                    timeout.as_secs_f64()
                )
            };
            return RunOutcome {
                status: UNKNOWN,
                output: Output {
                    text,
                    ..Output::default()
                },
                duration: outcome.duration,
                // Only a timeout is one: a run the agent's stop cut short
                // says so in its text, and counts as no plugin timeout.
                timed_out: outcome.end == End::TimedOut,
                truncated,
            };
        }
    };
    let code = status.code();
    let mut output = parse_output(&outcome.stdout.text());
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
        duration: outcome.duration,
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
        assert!(!out.timed_out, "the agent stopped it: no timeout");
        assert_eq!(out.status, UNKNOWN);
        assert!(out.output.text.contains("stopping"), "{}", out.output.text);
    }
}
