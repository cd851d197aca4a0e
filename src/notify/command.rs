//! The command handler: a shell command run once per notification.
//!
//! Works the way Nagios notification commands and Sensu pipe handlers do, so
//! existing scripts fit: the command runs under `/bin/sh -c`, gets the
//! notification as JSON on stdin and its main fields as environment
//! variables, and exit status 0 means handled. It runs through the process
//! runner ([`crate::process`]) in its own process group, so when it
//! overruns the timeout the whole group (the shell and anything it started)
//! is killed, not just the shell. The tail of its
//! stderr (or of stdout when stderr is empty) goes into the error.

use super::config::CommandConfig;
use super::{field, field_text};
use crate::process::{self, AfterExit, Capture, End, Job};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// How much of the command's output is kept for the error message.
const TAIL_BYTES: usize = 2048;

/// The environment variables the command gets, and the notification member
/// each one comes from.
pub const ENV_FIELDS: [(&str, &str); 7] = [
    ("VIGIL_SEVERITY", "severity"),
    ("VIGIL_SOURCE", "source"),
    ("VIGIL_MESSAGE", "message"),
    ("VIGIL_UUID", "uuid"),
    ("VIGIL_ID", "id"),
    ("VIGIL_HOSTNAME", "hostname"),
    ("VIGIL_TS", "ts"),
];

/// Runs the command for one notification; `Ok` when it exits 0 within
/// `timeout`.
pub fn run(
    config: &CommandConfig,
    notification: &serde_json::Value,
    timeout: Duration,
) -> Result<(), String> {
    let mut input = serde_json::to_vec(notification)
        .map_err(|e| format!("cannot encode the notification: {e}"))?;
    input.push(b'\n');
    let job = Job {
        command: build(&config.command, notification),
        stdin: Some(input),
        stdout: Capture::Tail(TAIL_BYTES),
        stderr: Capture::Tail(TAIL_BYTES),
        timeout,
        // After an exit a background process may still hold the pipes: read
        // what is there within a short grace, never up to the full timeout
        // (the output only matters for a failure's message, and the worker
        // has other notifications to run).
        after_exit: AfterExit::Grace(Duration::from_millis(500)),
    };
    let outcome = process::run(job, &|| false)
        .map_err(|e| format!("cannot start /bin/sh -c {:?}: {e}", config.command))?;
    let err_tail = outcome.stderr.text();
    let tail = if err_tail.trim().is_empty() {
        outcome.stdout.text()
    } else {
        err_tail
    };
    match outcome.end {
        End::Exited(status) if status.success() => Ok(()),
        End::Exited(status) => Err(with_tail(describe(status), &tail)),
        End::TimedOut | End::Stopped => Err(with_tail(
            format!("timed out after {timeout:?}; its process group was killed"),
            &tail,
        )),
    }
}

/// The `/bin/sh -c` command with the notification's environment (the
/// runner puts it in a process group of its own). Inherited `VIGIL_*` variables (the sink's own
/// configuration) are removed so they cannot be mistaken for the
/// notification's.
fn build(command: &str, notification: &serde_json::Value) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(key);
        }
    }
    for (var, member) in ENV_FIELDS {
        cmd.env(var, env_safe(&field_text(notification, member)));
    }
    if notification.get("recovery").and_then(|v| v.as_bool()) == Some(true) {
        cmd.env("VIGIL_RECOVERY", "1");
    }
    if !field(notification, "origin").is_empty() {
        cmd.env("VIGIL_ORIGIN", env_safe(field(notification, "origin")));
    }
    cmd
}

/// The longest environment value passed; Linux refuses to start a program
/// with one string over 128 KiB, and the full text is on stdin anyway.
const ENV_MAX: usize = 16 * 1024;

/// An environment value cannot hold NUL or be huge; a hostile message must
/// not stop the command from starting.
fn env_safe(value: &str) -> String {
    let mut end = value.len().min(ENV_MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].replace('\0', " ")
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

fn with_tail(reason: String, tail: &str) -> String {
    let tail: String = tail
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}: {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::notify::config::SeveritySet;
    use serde_json::json;
    use std::time::Instant;

    fn config(command: &str) -> CommandConfig {
        CommandConfig {
            command: command.to_string(),
            severities: SeveritySet::from_env(&Env::from_pairs([]), "X", "all").unwrap(),
        }
    }

    fn notification() -> serde_json::Value {
        json!({"type":"notification","uuid":"0b3c7c1e-9d1f-4f53-8b2e-6a4f8e7f2a10","id":"n-1",
               "severity":"critical","source":"disk","message":"/var is 97% full; it's \"bad\"\n$(touch /tmp/x)",
               "hostname":"web1","ts":1700000000})
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-notify-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_background_child_does_not_hold_the_handler_to_its_timeout() {
        // The command succeeds at once but leaves a child holding stdout.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(
                &config("sleep 20 & exit 0"),
                &notification(),
                Duration::from_secs(60),
            ));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the handler returned once the command exited, not at its 60 s timeout");
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn exit_zero_is_success() {
        assert_eq!(
            run(&config("exit 0"), &notification(), Duration::from_secs(10)),
            Ok(())
        );
    }

    #[test]
    fn nonzero_exit_is_failure_with_stderr_tail() {
        let err = run(
            &config("echo some output; echo 'relay refused us' >&2; exit 3"),
            &notification(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(err.ends_with("relay refused us"), "{err}");
    }

    #[test]
    fn stdout_is_used_when_stderr_is_empty() {
        let err = run(
            &config("echo only-stdout; exit 1"),
            &notification(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.ends_with("only-stdout"), "{err}");
    }

    #[test]
    fn gets_json_on_stdin_and_fields_as_environment() {
        let dir = temp_dir("env");
        let cmd = format!(
            "cat > {d}/stdin.json && env | grep '^VIGIL_' | sort > {d}/env.txt && printf %s \"$VIGIL_MESSAGE\" > {d}/message.txt",
            d = dir.display()
        );
        std::env::set_var("VIGIL_DB", "/should/not/leak");
        assert_eq!(
            run(&config(&cmd), &notification(), Duration::from_secs(10)),
            Ok(())
        );
        let stdin: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("stdin.json")).unwrap())
                .unwrap();
        assert_eq!(stdin, notification());
        let env = std::fs::read_to_string(dir.join("env.txt")).unwrap();
        for line in [
            "VIGIL_SEVERITY=critical",
            "VIGIL_SOURCE=disk",
            "VIGIL_UUID=0b3c7c1e-9d1f-4f53-8b2e-6a4f8e7f2a10",
            "VIGIL_ID=n-1",
            "VIGIL_HOSTNAME=web1",
            "VIGIL_TS=1700000000",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
        }
        assert!(!env.contains("VIGIL_DB"), "{env}");
        // The message arrives byte for byte, with no shell expansion.
        assert_eq!(
            std::fs::read_to_string(dir.join("message.txt")).unwrap(),
            "/var is 97% full; it's \"bad\"\n$(touch /tmp/x)"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = temp_dir("timeout");
        let pidfile = dir.join("grandchild.pid");
        // The shell starts a background grandchild that would outlive it.
        let cmd = format!(
            "sleep 300 & echo $! > {}; echo waiting >&2; wait",
            pidfile.display()
        );
        // Long enough for a loaded machine to start the shell and write the
        // pid file; the command itself would run for 300 s.
        let err = run(&config(&cmd), &notification(), Duration::from_secs(3)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("waiting"), "{err}");
        let pid: libc::pid_t = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was killed with the group; once its zombie is
        // reaped by init, kill(pid, 0) fails. Poll with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gone = unsafe { libc::kill(pid, 0) } != 0
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true);
            if gone {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild {pid} still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_command_that_ignores_big_stdin_still_finishes() {
        let mut n = notification();
        n["message"] = json!("x".repeat(1 << 20));
        let cmd = format!("test ${{#VIGIL_MESSAGE}} -eq {ENV_MAX}");
        assert_eq!(run(&config(&cmd), &n, Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn nul_in_a_field_does_not_stop_the_command() {
        let mut n = notification();
        n["message"] = json!("a\u{0}b");
        assert_eq!(
            run(
                &config("test \"$VIGIL_MESSAGE\" = 'a b'"),
                &n,
                Duration::from_secs(10)
            ),
            Ok(())
        );
    }

    #[test]
    fn killed_by_signal_is_failure() {
        let err = run(
            &config("kill -TERM $$"),
            &notification(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.contains("signal 15"), "{err}");
    }
}
