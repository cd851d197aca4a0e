//! The thread that owns the one TCP connection to carbon.
//!
//! Its loop: take up to `batch` lines from the buffer (waiting for the first
//! one, or for stop), make sure it is connected (reconnecting with capped
//! exponential backoff and jitter, while the buffer keeps filling and its
//! overflow drops the oldest lines), write the batch in one go, and only then
//! let go of it. A write that fails midway keeps the batch for the next
//! connection, so a point may reach carbon twice but is not lost.
//!
//! Carbon never writes to us, so a connection closed by carbon is noticed
//! by peeking for end-of-file before each write; that catches a restarted
//! carbon before a batch is written into a half-closed socket.

use super::{Counters, GraphiteConfig};
use crossbeam_channel::{select, Receiver, RecvTimeoutError, TryRecvError};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Writer {
    config: GraphiteConfig,
    lines: Receiver<String>,
    stop: Receiver<Instant>,
    counters: Arc<Counters>,
    conn: Option<TcpStream>,
    /// Lines taken from the buffer and not yet written.
    batch: Vec<String>,
    connected_before: bool,
    backoff: Duration,
    failed_connects: u64,
}

/// Why the loop should end, and by when the flush must be done.
struct Stop(Instant);

impl Writer {
    pub(super) fn new(
        config: GraphiteConfig,
        lines: Receiver<String>,
        stop: Receiver<Instant>,
        counters: Arc<Counters>,
    ) -> Writer {
        let backoff = config.backoff_min;
        Writer {
            config,
            lines,
            stop,
            counters,
            conn: None,
            batch: Vec::new(),
            connected_before: false,
            backoff,
            failed_connects: 0,
        }
    }

    pub(super) fn run(mut self) {
        log::info!(
            "graphite: writing to {} (prefix {})",
            self.config.server,
            self.config.prefix
        );
        let Stop(deadline) = self.serve();
        self.flush(deadline);
        self.close(deadline);
    }

    /// Writes batches until told to stop.
    fn serve(&mut self) -> Stop {
        loop {
            if let Some(stop) = self.stop_requested() {
                return stop;
            }
            if self.batch.is_empty() {
                if let Err(stop) = self.wait_for_lines() {
                    return stop;
                }
            }
            if self.conn.is_none() {
                if let Err(e) = self.connect(self.config.timeout) {
                    self.connect_failed(&e);
                    if let Err(stop) = self.back_off() {
                        return stop;
                    }
                    continue;
                }
            }
            self.write_batch(self.config.timeout);
        }
    }

    /// A stop sent by the handle, or the handle gone (then flush for as
    /// long as one write may take).
    fn stop_requested(&self) -> Option<Stop> {
        match self.stop.try_recv() {
            Ok(deadline) => Some(Stop(deadline)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Stop(Instant::now() + self.config.timeout)),
        }
    }

    /// Blocks until at least one line is in hand, then takes up to a batch.
    fn wait_for_lines(&mut self) -> Result<(), Stop> {
        select! {
            recv(self.lines) -> line => match line {
                Ok(line) => self.batch.push(line),
                Err(_) => return Err(Stop(Instant::now() + self.config.timeout)),
            },
            recv(self.stop) -> deadline => {
                return Err(Stop(deadline.unwrap_or_else(|_| Instant::now() + self.config.timeout)));
            }
        }
        self.fill_batch();
        Ok(())
    }

    fn fill_batch(&mut self) {
        while self.batch.len() < self.config.batch {
            match self.lines.try_recv() {
                Ok(line) => self.batch.push(line),
                Err(_) => break,
            }
        }
        self.counters
            .in_hand
            .store(self.batch.len() as u64, Ordering::Relaxed);
    }

    /// Waits the current backoff (with jitter) unless stopped, then doubles
    /// it up to the cap.
    fn back_off(&mut self) -> Result<(), Stop> {
        let delay = jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
        match self.stop.recv_timeout(delay) {
            Ok(deadline) => Err(Stop(deadline)),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => Err(Stop(Instant::now() + self.config.timeout)),
        }
    }

    fn connect(&mut self, timeout: Duration) -> Result<(), LinkError> {
        let stream = connect(&self.config.server, timeout)?;
        if self.connected_before {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if self.failed_connects > 0 || self.connected_before {
            log::info!(
                "graphite: connected to {} after {} failed attempt(s)",
                self.config.server,
                self.failed_connects
            );
        }
        self.connected_before = true;
        self.failed_connects = 0;
        self.backoff = self.config.backoff_min;
        self.conn = Some(stream);
        Ok(())
    }

    /// Logs the first failure of a run loudly and the rest quietly, so an
    /// absent carbon does not fill the log.
    fn connect_failed(&mut self, reason: &LinkError) {
        if self.failed_connects == 0 {
            log::warn!(
                "graphite: cannot connect to {}: {reason}; buffering up to {} lines and retrying",
                self.config.server,
                self.config.buffer
            );
        } else {
            log::debug!(
                "graphite: cannot connect to {}: {reason}",
                self.config.server
            );
        }
        self.failed_connects += 1;
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the batch in hand; on failure drops the connection and keeps
    /// the batch for the next one.
    fn write_batch(&mut self, timeout: Duration) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let result = if peer_closed(conn) {
            Err(LinkError::Closed)
        } else {
            let data: String = self.batch.concat();
            write_with_timeout(conn, data.as_bytes(), timeout)
        };
        match result {
            Ok(()) => {
                self.counters
                    .sent
                    .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
                self.batch.clear();
                self.counters.in_hand.store(0, Ordering::Relaxed);
            }
            Err(reason) => {
                log::warn!(
                    "graphite: lost the connection to {}: {reason}; {} line(s) kept to resend",
                    self.config.server,
                    self.batch.len()
                );
                self.conn = None;
            }
        }
    }

    /// Writes what is buffered until it is empty or `deadline` passes.
    fn flush(&mut self, deadline: Instant) {
        loop {
            if self.batch.is_empty() {
                self.fill_batch();
                if self.batch.is_empty() {
                    return;
                }
            }
            let Some(left) = remaining(deadline) else {
                return;
            };
            let bound = left.min(self.config.timeout);
            if self.conn.is_none() {
                if let Err(e) = self.connect(bound) {
                    self.connect_failed(&e);
                    let pause = jittered(self.backoff).min(remaining(deadline).unwrap_or_default());
                    self.backoff = (self.backoff * 2).min(self.config.backoff_max);
                    std::thread::sleep(pause);
                    continue;
                }
            }
            self.write_batch(bound);
        }
    }

    /// Closes the connection after carbon has read everything: half-close,
    /// then wait (bounded) for carbon's end-of-file.
    fn close(&mut self, deadline: Instant) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let _ = conn.shutdown(Shutdown::Write);
        let wait = remaining(deadline)
            .unwrap_or_default()
            .min(Duration::from_secs(1));
        if wait.is_zero() {
            return;
        }
        let _ = conn.set_read_timeout(Some(wait));
        let mut sink = [0u8; 512];
        while let Ok(n) = conn.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}

/// Why carbon could not be reached or written to.
#[derive(Debug)]
pub enum LinkError {
    NotHostPort(String),
    BadPort(String),
    Resolve {
        host: String,
        source: std::io::Error,
    },
    NoAddress,
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Closed,
    WriteTimeout(Duration),
    Write(std::io::Error),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::NotHostPort(server) => write!(f, "{server}: not host:port"),
            LinkError::BadPort(server) => write!(f, "{server}: bad port"),
            LinkError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            LinkError::NoAddress => write!(f, "no address"),
            LinkError::Connect { addr, source } => write!(f, "{addr}: {source}"),
            LinkError::Closed => write!(f, "carbon closed the connection"),
            LinkError::WriteTimeout(timeout) => write!(f, "write timed out after {timeout:?}"),
            LinkError::Write(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Connects to the first address of `server` that accepts within `timeout`.
fn connect(server: &str, timeout: Duration) -> Result<TcpStream, LinkError> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| LinkError::NotHostPort(server.to_string()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| LinkError::BadPort(server.to_string()))?;
    let deadline = Instant::now() + timeout;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (bare, port)
        .to_socket_addrs()
        .map_err(|source| LinkError::Resolve {
            host: host.to_string(),
            source,
        })?;
    let mut last = LinkError::NoAddress;
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            break;
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => last = LinkError::Connect { addr, source },
        }
    }
    Err(last)
}

/// Whether carbon has closed its end (end-of-file or an error waiting).
fn peer_closed(conn: &mut TcpStream) -> bool {
    if conn.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 64];
    let closed = loop {
        match conn.read(&mut byte) {
            Ok(0) => break true,
            // Carbon does not talk; anything it says is discarded.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    closed || conn.set_nonblocking(false).is_err()
}

fn write_with_timeout(
    conn: &mut TcpStream,
    data: &[u8],
    timeout: Duration,
) -> Result<(), LinkError> {
    conn.set_write_timeout(Some(timeout))
        .map_err(LinkError::Write)?;
    conn.write_all(data).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => LinkError::WriteTimeout(timeout),
        _ => LinkError::Write(e),
    })
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// A delay between half and all of `base`, so many sinks that lost the same
/// carbon do not reconnect in step.
fn jittered(base: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let half = base / 2;
    let spread = half.as_micros().max(1) as u64;
    half + Duration::from_micros(random % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let base = Duration::from_millis(400);
        for _ in 0..1000 {
            let d = jittered(base);
            assert!(d >= base / 2 && d <= base, "{d:?}");
        }
        assert!(jittered(Duration::from_micros(1)) <= Duration::from_micros(1));
    }
}
