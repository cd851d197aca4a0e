//! Running one outside program to its end, bounded: the one runner behind
//! plugins (`agent/plugins/run.rs`) and the command handler
//! (`notify/command.rs`).
//!
//! The program runs in a session and process group of its own (`setsid`),
//! so a timeout kills everything it started (a pipeline, a backgrounded
//! helper), not only the shell; the terminal's Ctrl-C does not reach it
//! either. Its input is written and its output read by threads, so a
//! program that never reads stdin or writes without end cannot block the
//! caller; output is kept up to a cap (the head or the tail). Every wait
//! has a deadline: the run's timeout, and a short grace for output after
//! an exit or a kill.

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a run checks whether its caller is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How long output is awaited after a kill: the pipes close when the group
/// dies, unless a process that left the group holds them.
const AFTER_KILL: Duration = Duration::from_secs(1);

/// How long a killed program may take to be reaped.
const REAP: Duration = Duration::from_secs(5);

/// Which part of an output stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Not read at all (`/dev/null`).
    Discard,
    /// The first N bytes (a plugin's status line comes first).
    Head(usize),
    /// The last N bytes (an error message comes last).
    Tail(usize),
}

/// When output still open after the program's exit stops mattering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// The output is the result: it is awaited up to the run's deadline,
    /// and output still open then makes the run time out. What remains of
    /// the group is killed once the output is complete.
    AwaitOutput,
    /// Only the exit status is the result: output is awaited this long,
    /// and processes the program left running are left alone.
    Grace(Duration),
}

/// One program to run: the command (its program, arguments and
/// environment; the runner sets stdio and the process group), what to
/// write on its stdin, what to keep of its output, and its time.
pub struct Job {
    pub command: Command,
    /// Written on stdin (then closed); `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    pub stdout: Capture,
    pub stderr: Capture,
    pub timeout: Duration,
    pub after_exit: AfterExit,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exited(ExitStatus),
    /// The timeout passed (or, with [`AfterExit::AwaitOutput`], the output
    /// stayed open past it); the process group was killed.
    TimedOut,
    /// The caller's `stopping` turned true; the group was killed.
    Stopped,
}

/// What was kept of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More was written than the cap kept.
    pub truncated: bool,
}

impl Captured {
    fn keep(&mut self, capture: Capture, chunk: &[u8]) {
        match capture {
            Capture::Discard => {}
            Capture::Head(max) => {
                let room = max.saturating_sub(self.bytes.len());
                self.bytes
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
                self.truncated |= chunk.len() > room;
            }
            Capture::Tail(max) => {
                self.bytes.extend_from_slice(chunk);
                if self.bytes.len() > max {
                    self.bytes.drain(..self.bytes.len() - max);
                    self.truncated = true;
                }
            }
        }
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub stdout: Captured,
    pub stderr: Captured,
    /// From the start to the end of the run, output included.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

enum Event {
    Exited(std::io::Result<ExitStatus>),
    Data(Stream, Vec<u8>),
    Closed(Stream),
}

/// Runs `job` to its end. `stopping` is checked every 100 ms; when it
/// turns true the run is cut short like a timeout (so a stopping daemon
/// does not wait for a long timeout). Only a failure to start the program
/// is an error.
pub fn run(job: Job, stopping: &dyn Fn() -> bool) -> std::io::Result<Outcome> {
    let started = Instant::now();
    let Job {
        mut command,
        stdin,
        stdout,
        stderr,
        timeout,
        after_exit,
    } = job;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdio(stdout))
        .stderr(stdio(stderr));
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; it
    // makes the child leader of a new session and process group whose id
    // is its pid, so killpg reaches everything it starts.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let group = Group(child.id());
    // Every thread reports here; the channel's bound only paces a reader
    // that outruns this loop.
    let (tx, events) = bounded(64);
    if let (Some(input), Some(pipe)) = (stdin, child.stdin.take()) {
        feed(pipe, input);
    }
    let mut open = Open::default();
    if let Some(pipe) = child.stdout.take() {
        open.stdout = read_pipe(Stream::Stdout, pipe, tx.clone());
    }
    if let Some(pipe) = child.stderr.take() {
        open.stderr = read_pipe(Stream::Stderr, pipe, tx.clone());
    }
    if !wait_on(child, tx, group) {
        // The child was killed (no thread to reap it otherwise).
        return Ok(Outcome {
            end: End::TimedOut,
            stdout: Captured::default(),
            stderr: Captured::default(),
            duration: started.elapsed(),
        });
    }
    let mut run = Run {
        events,
        open,
        capture: (stdout, stderr),
        out: (Captured::default(), Captured::default()),
        status: None,
    };
    let deadline = started + timeout;
    let end = run.until_exit(deadline, stopping);
    let end = match (end, after_exit) {
        (Some(status), AfterExit::AwaitOutput) => {
            let complete = run.drain(deadline, stopping);
            // Whatever the program left running goes with it.
            group.kill();
            if complete {
                End::Exited(status)
            } else {
                run.drain(Instant::now() + AFTER_KILL, &|| false);
                if Instant::now() < deadline && stopping() {
                    End::Stopped
                } else {
                    End::TimedOut
                }
            }
        }
        (Some(status), AfterExit::Grace(grace)) => {
            run.drain(Instant::now() + grace, &|| false);
            End::Exited(status)
        }
        (None, _) => {
            let stopped = Instant::now() < deadline && stopping();
            group.kill();
            run.reap(Instant::now() + REAP);
            run.drain(Instant::now() + AFTER_KILL, &|| false);
            if stopped {
                End::Stopped
            } else {
                End::TimedOut
            }
        }
    };
    Ok(Outcome {
        end,
        stdout: run.out.0,
        stderr: run.out.1,
        duration: started.elapsed(),
    })
}

fn stdio(capture: Capture) -> Stdio {
    match capture {
        Capture::Discard => Stdio::null(),
        Capture::Head(_) | Capture::Tail(_) => Stdio::piped(),
    }
}

/// The program's process group (its pgid is its pid).
#[derive(Debug, Clone, Copy)]
struct Group(u32);

impl Group {
    /// SIGKILL to every process of the group; a group already gone is not
    /// an error.
    fn kill(self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: killpg only sends a signal; the group is the one the child
        // leads (setsid), so nothing else is hit.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// Which output streams have not reached their end yet.
#[derive(Debug, Default)]
struct Open {
    stdout: bool,
    stderr: bool,
}

struct Run {
    events: Receiver<Event>,
    open: Open,
    capture: (Capture, Capture),
    out: (Captured, Captured),
    status: Option<std::io::Result<ExitStatus>>,
}

impl Run {
    /// Takes one event, within `left`; false when none came.
    fn take(&mut self, left: Duration) -> bool {
        match self.events.recv_timeout(left) {
            Ok(Event::Exited(status)) => self.status = Some(status),
            Ok(Event::Data(Stream::Stdout, chunk)) => self.out.0.keep(self.capture.0, &chunk),
            Ok(Event::Data(Stream::Stderr, chunk)) => self.out.1.keep(self.capture.1, &chunk),
            Ok(Event::Closed(Stream::Stdout)) => self.open.stdout = false,
            Ok(Event::Closed(Stream::Stderr)) => self.open.stderr = false,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return false,
        }
        true
    }

    /// Waits for the exit status until `deadline` (or `stopping`); `None`
    /// when the program is still running. A failed wait(2) reads as a
    /// status of "killed" (it cannot happen for our own child).
    fn until_exit(&mut self, deadline: Instant, stopping: &dyn Fn() -> bool) -> Option<ExitStatus> {
        loop {
            match &self.status {
                Some(Ok(status)) => return Some(*status),
                Some(Err(e)) => {
                    log::warn!("waiting for a child process: {e}");
                    return None;
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stopping() {
                return None;
            }
            self.take(left.min(STOP_CHECK));
        }
    }

    /// Waits (bounded) for the reaper thread after a kill.
    fn reap(&mut self, deadline: Instant) {
        while self.status.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.take(left) {
                return;
            }
        }
    }

    /// Reads output until both streams are closed; false when `deadline`
    /// passed or `stopping` turned true first.
    fn drain(&mut self, deadline: Instant, stopping: &dyn Fn() -> bool) -> bool {
        while self.open.stdout || self.open.stderr {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stopping() {
                return false;
            }
            self.take(left.min(STOP_CHECK));
        }
        true
    }
}

/// Writes `input` on stdin from a thread, then closes it; a program that
/// exits without reading gives EPIPE, which is not an error.
fn feed(mut pipe: std::process::ChildStdin, input: Vec<u8>) {
    let spawned = std::thread::Builder::new()
        .name("child-stdin".into())
        .spawn(move || {
            let _ = pipe.write_all(&input);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a thread to write a child's stdin: {e}");
    }
}

/// Reads a pipe to its end from a thread, passing on every chunk. A reader
/// whose run has returned ends at its next chunk (the send fails); one
/// held by a process that escaped the group ends when that process does.
/// Returns whether the thread started (else the stream counts as closed).
fn read_pipe(stream: Stream, mut pipe: impl Read + Send + 'static, tx: Sender<Event>) -> bool {
    let spawned = std::thread::Builder::new()
        .name("child-output".into())
        .spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Event::Data(stream, chunk[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Event::Closed(stream));
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            log::warn!("cannot start a thread to read a child's output: {e}");
            false
        }
    }
}

/// Reaps the child from a thread, so the deadline is a real bound and not
/// a polling interval. False when the thread could not start (the group is
/// then killed and the child reaped here).
fn wait_on(mut child: Child, tx: Sender<Event>, group: Group) -> bool {
    let (handoff_tx, handoff) = bounded::<Child>(1);
    let spawned = std::thread::Builder::new()
        .name("child-wait".into())
        .spawn(move || {
            if let Ok(mut child) = handoff.recv() {
                let _ = tx.send(Event::Exited(child.wait()));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a thread to wait for a child: {e}");
        group.kill();
        let _ = child.wait();
        return false;
    }
    if let Err(returned) = handoff_tx.send(child) {
        child = returned.into_inner();
        group.kill();
        let _ = child.wait();
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        command
    }

    fn job(script: &str, timeout: Duration, after_exit: AfterExit) -> Job {
        Job {
            command: sh(script),
            stdin: None,
            stdout: Capture::Head(1 << 16),
            stderr: Capture::Tail(1 << 16),
            timeout,
            after_exit,
        }
    }

    const T: Duration = Duration::from_secs(30);
    const GRACE: AfterExit = AfterExit::Grace(Duration::from_millis(500));

    fn never() -> bool {
        false
    }

    #[test]
    fn exit_status_and_both_outputs() {
        let out = run(job("echo out; echo err >&2; exit 3", T, GRACE), &never).unwrap();
        assert_eq!(out.end_code(), Some(3));
        assert_eq!(out.stdout.text(), "out\n");
        assert_eq!(out.stderr.text(), "err\n");
    }

    #[test]
    fn stdin_is_written_and_closed() {
        let mut j = job("cat", T, AfterExit::AwaitOutput);
        j.stdin = Some(b"hello\n".to_vec());
        let out = run(j, &never).unwrap();
        assert_eq!(out.end_code(), Some(0));
        assert_eq!(out.stdout.text(), "hello\n");
    }

    #[test]
    fn caps_keep_the_head_or_the_tail() {
        let script = "printf 'abcdefghij'; printf 'abcdefghij' >&2";
        let mut j = job(script, T, AfterExit::AwaitOutput);
        j.stdout = Capture::Head(4);
        j.stderr = Capture::Tail(4);
        let out = run(j, &never).unwrap();
        assert_eq!(
            (out.stdout.text().as_str(), out.stdout.truncated),
            ("abcd", true)
        );
        assert_eq!(
            (out.stderr.text().as_str(), out.stderr.truncated),
            ("ghij", true)
        );
    }

    #[test]
    fn a_chatty_program_is_read_past_its_cap() {
        let mut j = job("head -c 1000000 /dev/zero", T, AfterExit::AwaitOutput);
        j.stdout = Capture::Head(10);
        let out = run(j, &never).unwrap();
        assert_eq!(out.end_code(), Some(0));
        assert_eq!(out.stdout.bytes.len(), 10);
    }

    #[test]
    fn a_timeout_kills_the_group() {
        let out = run(
            job(
                "sleep 300 & echo started; wait",
                Duration::from_millis(300),
                GRACE,
            ),
            &never,
        )
        .unwrap();
        assert_eq!(out.end, End::TimedOut);
        // The output arrived: the whole group died, so the pipes closed.
        assert_eq!(out.stdout.text(), "started\n");
        assert!(out.duration < Duration::from_secs(20), "{:?}", out.duration);
    }

    #[test]
    fn stopping_cuts_the_run_short() {
        let out = run(
            job("exec sleep 300", Duration::from_secs(3600), GRACE),
            &|| true,
        )
        .unwrap();
        assert_eq!(out.end, End::Stopped);
    }

    #[test]
    fn awaiting_output_held_open_past_the_deadline_times_out() {
        // The program exits at once, but a child that escaped the group
        // keeps stdout open for 20 s.
        let out = run(
            job(
                "setsid sleep 20 & echo OK; exit 0",
                Duration::from_millis(300),
                AfterExit::AwaitOutput,
            ),
            &never,
        )
        .unwrap();
        assert_eq!(out.end, End::TimedOut);
        assert!(out.duration < Duration::from_secs(15), "{:?}", out.duration);
    }

    #[test]
    fn with_a_grace_a_background_child_is_left_and_not_awaited() {
        let out = run(job("sleep 20 & exit 0", T, GRACE), &never).unwrap();
        assert_eq!(out.end_code(), Some(0));
        assert!(out.duration < Duration::from_secs(15), "{:?}", out.duration);
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let j = Job {
            command: Command::new("/nonexistent/program"),
            ..job("", T, GRACE)
        };
        assert!(run(j, &never).is_err());
    }

    impl Outcome {
        fn end_code(&self) -> Option<i32> {
            match self.end {
                End::Exited(status) => status.code(),
                End::TimedOut | End::Stopped => None,
            }
        }
    }
}
