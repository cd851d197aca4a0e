//! Bounded TCP I/O shared by the SMTP and HTTP clients.
//!
//! Both clients work against one deadline per handler run, so every
//! connect, write and read here takes the time left before that deadline as
//! its timeout: a relay that accepts and then stalls costs at most the
//! handler's timeout, never a stuck sink.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Connects to the first address of `host:port` that accepts before the
/// deadline.
pub fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: cannot resolve: {e}"))?;
    let mut last = format!("{host}:{port}: no address");
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            return Err(format!("{host}:{port}: timed out connecting"));
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: cannot connect: {e}"),
        }
    }
    Err(last)
}

/// Time left before `deadline`, or `None` when it has passed.
pub fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Writes all of `data` within the deadline: the write timeout is reset to
/// the time left before every write, so a peer reading slowly cannot
/// stretch the whole beyond it.
pub fn write_all(stream: &mut TcpStream, data: &[u8], deadline: Instant) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        let left = remaining(deadline).ok_or("timed out")?;
        stream
            .set_write_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.write(rest) {
            Ok(0) => return Err("the connection closed while writing".into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_reason(&e)),
        }
    }
    stream.flush().map_err(|e| io_reason(&e))
}

/// An I/O error in words, with timeouts called timeouts.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}
