//! A real SMTP server: Debian's aiosmtpd (python3-aiosmtpd) with its
//! debugging handler, which prints every message it accepts on stdout.
//!
//! Used by the SMTP client's unit tests and the sink integration tests.

use super::wait_for;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PYTHON: &str = "/usr/bin/python3";

/// How long aiosmtpd may take to listen, or a message to arrive.
pub const SMTP_WAIT: Duration = Duration::from_secs(20);

pub struct Aiosmtpd {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    /// Messages already handed out by [`Aiosmtpd::next_message`].
    taken: Mutex<usize>,
}

impl Aiosmtpd {
    /// Whether python3 can import aiosmtpd.
    pub fn installed() -> bool {
        Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// For tests: [`super::require`] aiosmtpd; false means skip the test.
    pub fn required() -> bool {
        super::require(
            &format!("{PYTHON} with aiosmtpd (Debian python3-aiosmtpd)"),
            Aiosmtpd::installed(),
        )
    }

    /// Starts aiosmtpd on a free port and waits (bounded) until it listens.
    pub fn start() -> Aiosmtpd {
        let port = super::free_port();
        let mut child = Command::new(PYTHON)
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3 -m aiosmtpd (Debian python3-aiosmtpd)");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                kept.lock().expect("lines lock").push(line);
            }
        });
        let server = Aiosmtpd {
            child,
            port,
            lines,
            taken: Mutex::new(0),
        };
        wait_for("aiosmtpd to listen", SMTP_WAIT, || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        server
    }

    /// `127.0.0.1:PORT`, as `VIGIL_NOTIFY_SMTP` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The messages received so far, each as its text.
    pub fn messages(&self) -> Vec<String> {
        let lines = self.lines.lock().expect("lines lock");
        let mut messages = Vec::new();
        let mut current: Option<Vec<String>> = None;
        for line in lines.iter() {
            if line.contains("MESSAGE FOLLOWS") {
                current = Some(Vec::new());
            } else if line.contains("END MESSAGE") {
                messages.extend(current.take().map(|m| m.join("\n")));
            } else if let Some(m) = current.as_mut() {
                m.push(line.clone());
            }
        }
        messages
    }

    /// Waits (bounded) for the next message not yet handed out.
    pub fn next_message(&self) -> String {
        let mut taken = self.taken.lock().expect("taken lock");
        let message = wait_for("aiosmtpd to print a message", SMTP_WAIT, || {
            self.messages().into_iter().nth(*taken)
        });
        *taken += 1;
        message
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
