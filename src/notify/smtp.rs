//! The email handler: one message per notification through a plain SMTP
//! relay (RFC 5321).
//!
//! The conversation is the minimal one every relay speaks: greeting 220,
//! `EHLO` (falling back to `HELO` when refused), `MAIL FROM`, one `RCPT TO`
//! per recipient, `DATA` with dot-stuffing, `QUIT`. Every reply code is
//! checked and every read and write is bounded by the handler's deadline.
//! No TLS or AUTH: point it at a local MTA (postfix, exim, nullmailer's
//! relay) that handles onward delivery.
//!
//! Recipients: a temporary refusal (4xx) of any recipient fails the handler
//! so the sink retries later; a permanent refusal (5xx) of some recipients
//! is logged and the others still get the message (retrying would not help
//! them); the handler fails only when no recipient was accepted.

use super::config::SmtpConfig;
use super::email;
use super::net::{connect, io_reason, remaining, write_all};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

/// Longest reply line read, and most lines in one reply: a hostile server
/// cannot make the handler buffer without end.
const REPLY_LINE_MAX: usize = 4096;
const REPLY_LINES_MAX: usize = 100;

/// Sends the notification as an email; `Ok` once the relay accepted it
/// (250 after the data).
pub fn send(
    config: &SmtpConfig,
    notification: &serde_json::Value,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let message = email::compose(
        &config.from,
        &config.to,
        &config.helo,
        notification,
        SystemTime::now(),
    );
    let mut session = Session::open(&config.server, deadline)?;
    let result = session.deliver(config, &message);
    if result.is_ok() {
        // The message is accepted; a failed QUIT changes nothing.
        let _ = session.command("QUIT", &[221]);
    }
    result
}

/// One SMTP connection.
struct Session {
    server: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    deadline: Instant,
}

/// A server reply: its code and its text lines joined.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    code: u16,
    text: String,
}

impl Session {
    fn open(server: &str, deadline: Instant) -> Result<Session, String> {
        let (host, port) = server
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{server}: not host:port"))?;
        let writer = connect(host, port, deadline)?;
        let reader = BufReader::new(writer.try_clone().map_err(|e| format!("{server}: {e}"))?);
        let mut session = Session {
            server: server.to_string(),
            reader,
            writer,
            deadline,
        };
        session.expect("greeting", &[220])?;
        Ok(session)
    }

    fn deliver(&mut self, config: &SmtpConfig, message: &str) -> Result<(), String> {
        self.hello(&config.helo)?;
        self.command(&format!("MAIL FROM:<{}>", config.from), &[250])?;
        self.recipients(&config.to)?;
        self.command("DATA", &[354])?;
        self.send(&dot_stuff(message))?;
        self.expect("end of data", &[250])?;
        Ok(())
    }

    /// EHLO, or HELO for a server that does not know EHLO.
    fn hello(&mut self, name: &str) -> Result<(), String> {
        self.send(&format!("EHLO {name}\r\n"))?;
        let reply = self.reply()?;
        if reply.code == 250 {
            return Ok(());
        }
        if (500..=504).contains(&reply.code) {
            return self.command(&format!("HELO {name}"), &[250]).map(|_| ());
        }
        Err(self.refused(&format!("EHLO {name}"), &reply))
    }

    fn recipients(&mut self, to: &[String]) -> Result<(), String> {
        let mut accepted = 0;
        let mut refused = Vec::new();
        for rcpt in to {
            self.send(&format!("RCPT TO:<{rcpt}>\r\n"))?;
            let reply = self.reply()?;
            match reply.code {
                250 | 251 => accepted += 1,
                500..=599 => {
                    log::warn!(
                        "email: {} refused recipient {rcpt}: {} {}",
                        self.server,
                        reply.code,
                        reply.text
                    );
                    refused.push(format!("{rcpt} ({} {})", reply.code, reply.text));
                }
                _ => return Err(self.refused(&format!("RCPT TO:<{rcpt}>"), &reply)),
            }
        }
        if accepted == 0 {
            return Err(format!(
                "{}: every recipient refused: {}",
                self.server,
                refused.join("; ")
            ));
        }
        Ok(())
    }

    /// Sends one command line and checks the reply code.
    fn command(&mut self, line: &str, ok: &[u16]) -> Result<Reply, String> {
        self.send(&format!("{line}\r\n"))?;
        let reply = self.reply()?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.refused(line, &reply))
        }
    }

    fn expect(&mut self, what: &str, ok: &[u16]) -> Result<Reply, String> {
        let reply = self.reply()?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.refused(what, &reply))
        }
    }

    fn refused(&self, what: &str, reply: &Reply) -> String {
        format!(
            "{}: {what} refused: {} {}",
            self.server, reply.code, reply.text
        )
    }

    fn send(&mut self, data: &str) -> Result<(), String> {
        write_all(&mut self.writer, data.as_bytes(), self.deadline)
            .map_err(|e| format!("{}: sending: {e}", self.server))
    }

    /// Reads one (possibly multi-line) reply.
    fn reply(&mut self) -> Result<Reply, String> {
        let mut text = Vec::new();
        for _ in 0..REPLY_LINES_MAX {
            let line = self.read_line()?;
            let (code, more, rest) = parse_reply_line(&line).ok_or_else(|| {
                format!(
                    "{}: not an SMTP reply: {:?}",
                    self.server,
                    truncate(&line, 100)
                )
            })?;
            text.push(rest.to_string());
            if !more {
                return Ok(Reply {
                    code,
                    text: text.join(" / "),
                });
            }
        }
        Err(format!(
            "{}: reply longer than {REPLY_LINES_MAX} lines",
            self.server
        ))
    }

    /// One reply line, within the deadline however slowly it trickles in:
    /// the read timeout is reset to the time left before every read (a
    /// single `read_until` would let each of its reads wait that long).
    fn read_line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        loop {
            let left =
                remaining(self.deadline).ok_or_else(|| format!("{}: timed out", self.server))?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let available = self
                .reader
                .fill_buf()
                .map_err(|e| format!("{}: reading the reply: {}", self.server, io_reason(&e)))?;
            if available.is_empty() {
                return Err(format!("{}: the server closed the connection", self.server));
            }
            let room = REPLY_LINE_MAX.saturating_sub(buf.len());
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => (i + 1, true),
                _ => (available.len().min(room), available.len() >= room),
            };
            buf.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if done {
                let line = String::from_utf8_lossy(&buf);
                return Ok(line.trim_end_matches(['\r', '\n']).to_string());
            }
        }
    }
}

/// `250-text` → (250, true, "text"); `250 text` or `250` → (250, false, ..).
fn parse_reply_line(line: &str) -> Option<(u16, bool, &str)> {
    let code = line.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    match line.as_bytes().get(3) {
        None => Some((code, false, "")),
        Some(b' ') => Some((code, false, &line[4..])),
        Some(b'-') => Some((code, true, &line[4..])),
        Some(_) => None,
    }
}

/// The DATA payload: each line starting with `.` gets another one (RFC 5321
/// 4.5.2), line ends are CRLF, and it ends with `CRLF.CRLF`.
fn dot_stuff(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    for line in message.split_inclusive('\n') {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests;
