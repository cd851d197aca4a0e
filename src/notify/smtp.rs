//! The email handler: one message per notification to an SMTP server, with
//! lettre's synchronous SMTP client (rustls), STARTTLS or implicit TLS, and
//! AUTH.
//!
//! TLS (`VIGIL_NOTIFY_SMTP_TLS`): `starttls` requires the server to offer
//! STARTTLS and fails the attempt when it does not (lettre's
//! `Tls::Required`: never a silent fallback to plaintext); `tls` speaks
//! TLS from the first byte (port 465); `off` is for a relay on localhost.
//! The certificate must verify against [`Roots`] for the configured host
//! name, or the attempt fails with the TLS error.
//!
//! The conversation is driven step by step on lettre's `SmtpConnection`
//! rather than through `SmtpTransport::send`, for one reason: recipients.
//! A temporary refusal (4xx) of any recipient fails the handler so the sink
//! retries later; a permanent refusal (5xx) of some recipients is logged and
//! the others still get the message (retrying would not help them, and one
//! stale address must not hold every page back forever); the handler fails
//! only when no recipient was accepted.
//!
//! Deadline: every socket operation is bounded by the time left, and the
//! whole conversation runs on a thread of its own that the handler waits
//! for at most the timeout: a server trickling a byte at a time cannot hold
//! the sink past its deadline (the abandoned thread ends at its own next
//! socket timeout). A server that trickles a byte within every timeout
//! keeps such a thread alive, so at most [`MAX_LINGERING`] may linger: past
//! that, an attempt fails at once instead of starting another.

use super::config::{SmtpConfig, SmtpTls};
use super::email;
use super::tls::Roots;
use lettre::address::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, SmtpConnection, Tls};
use lettre::transport::smtp::client::{TlsParameters, TlsParametersBuilder};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The SMTP side of the email handler: the configuration and its TLS
/// parameters, made once at start. Cheap to clone.
#[derive(Clone)]
pub struct SmtpClient {
    inner: Arc<Inner>,
}

/// SMTP conversations (threads) that may still run, past their handler's
/// deadline or not, before an attempt is refused without a new one.
pub const MAX_LINGERING: usize = 8;

struct Inner {
    config: SmtpConfig,
    tls: Tls,
    /// Conversation threads running now.
    running: AtomicUsize,
}

/// Counts a conversation thread while it runs.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpClient({})", self.inner.config.server())
    }
}

impl SmtpClient {
    /// The error is a sentence fragment for `VIGIL_NOTIFY_SMTP`.
    pub fn new(config: &SmtpConfig, roots: &Roots) -> Result<SmtpClient, String> {
        let tls = match config.tls {
            SmtpTls::Off => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(&config.host, roots)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(&config.host, roots)?),
        };
        Ok(SmtpClient {
            inner: Arc::new(Inner {
                config: config.clone(),
                tls,
                running: AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &SmtpConfig {
        &self.inner.config
    }

    /// Sends the notification as an email; `Ok` once the server accepted
    /// it (250 after the data). Returns within about `timeout`.
    pub fn send(&self, notification: &serde_json::Value, timeout: Duration) -> Result<(), String> {
        let c = &self.inner.config;
        let message = email::compose(&c.from, &c.to, &c.helo, notification)?;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        let running = self.start_running()?;
        std::thread::Builder::new()
            .name("smtp".into())
            .spawn(move || {
                let _ = tx.send(running.0.deliver(&message, deadline));
            })
            .map_err(|e| format!("cannot start the SMTP thread: {e}"))?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{}: timed out after {:.1} s",
                c.server(),
                timeout.as_secs_f64()
            )),
        }
    }
}

impl SmtpClient {
    /// Counts one more conversation, unless [`MAX_LINGERING`] run already
    /// (earlier ones stuck on a server that answers too slowly to end).
    fn start_running(&self) -> Result<Running, String> {
        let before = self.inner.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(Arc::clone(&self.inner));
        if before >= MAX_LINGERING {
            return Err(format!(
                "{}: {before} earlier conversations with the server have not ended yet; not starting another",
                self.inner.config.server()
            ));
        }
        Ok(running)
    }
}

fn tls_parameters(host: &str, roots: &Roots) -> Result<TlsParameters, String> {
    let mut builder = TlsParametersBuilder::new(host.to_string())
        .certificate_store(CertificateStore::WebpkiRoots);
    for cert in &roots.extra {
        let cert = Certificate::from_der(cert.to_vec())
            .map_err(|e| format!("a certificate of VIGIL_NOTIFY_CA_FILE: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS setup for {host}: {e}"))
}

/// `server: step: what lettre said`, with timeouts called timeouts.
fn failure(server: &str, step: &str, e: &lettre::transport::smtp::Error) -> String {
    // A socket read timeout is EAGAIN on Linux, which lettre's
    // `is_timeout` does not count.
    let mut source = std::error::Error::source(e);
    let mut timed_out = e.is_timeout();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            timed_out |= matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            );
        }
        source = err.source();
    }
    if timed_out {
        format!("{server}: {step}: timed out")
    } else {
        format!("{server}: {step}: {e}")
    }
}

/// Time left before `deadline`, or an error when it has passed.
fn left(server: &str, deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{server}: timed out"))
}

impl Inner {
    fn deliver(&self, message: &[u8], deadline: Instant) -> Result<(), String> {
        let c = &self.config;
        let server = c.server();
        let fail = |step: &str, e: lettre::transport::smtp::Error| failure(&server, step, &e);
        let addrs: Vec<_> = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| format!("{server}: cannot resolve: {e}"))?
            .collect();
        let hello = ClientId::Domain(c.helo.clone());
        let wrapper = match &self.tls {
            Tls::Wrapper(p) => Some(p),
            _ => None,
        };
        let mut conn = SmtpConnection::connect(
            addrs.as_slice(),
            Some(left(&server, deadline)?),
            &hello,
            wrapper,
            None,
        )
        .map_err(|e| {
            let step = if wrapper.is_some() {
                "connecting with TLS"
            } else {
                "connecting"
            };
            fail(step, e)
        })?;
        let result = self.session(&mut conn, &server, &hello, message, deadline);
        if result.is_ok() {
            // The message is accepted; a failed QUIT changes nothing.
            let _ = conn.quit();
        } else {
            conn.abort();
        }
        result
    }

    fn session(
        &self,
        conn: &mut SmtpConnection,
        server: &str,
        hello: &ClientId,
        message: &[u8],
        deadline: Instant,
    ) -> Result<(), String> {
        let c = &self.config;
        let fail = |step: &str, e: lettre::transport::smtp::Error| failure(server, step, &e);
        let step_timeout = |conn: &mut SmtpConnection| -> Result<(), String> {
            conn.set_timeout(Some(left(server, deadline)?))
                .map_err(|e| format!("{server}: {e}"))
        };
        if let Tls::Required(params) = &self.tls {
            if !conn.can_starttls() {
                return Err(format!(
                    "{server}: the server does not offer STARTTLS, and VIGIL_NOTIFY_SMTP_TLS=starttls requires it (nothing was sent)"
                ));
            }
            step_timeout(conn)?;
            conn.starttls(params, hello)
                .map_err(|e| fail("STARTTLS", e))?;
        }
        if let Some((user, password)) = &c.auth {
            step_timeout(conn)?;
            let credentials = Credentials::new(user.clone(), password.expose().to_string());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .map_err(|e| fail(&format!("AUTH as {user}"), e))?;
        }
        let from: Address = c
            .from
            .parse()
            .map_err(|e| format!("sender {:?}: {e}", c.from))?;
        step_timeout(conn)?;
        conn.command(Mail::new(Some(from), vec![]))
            .map_err(|e| fail(&format!("MAIL FROM:<{}>", c.from), e))?;
        let mut accepted = 0;
        let mut refused = Vec::new();
        for rcpt in &c.to {
            let address: Address = rcpt
                .parse()
                .map_err(|e| format!("recipient {rcpt:?}: {e}"))?;
            step_timeout(conn)?;
            match conn.command(Rcpt::new(address, vec![])) {
                Ok(_) => accepted += 1,
                Err(e) if e.is_permanent() => {
                    log::warn!("email: {server} refused recipient {rcpt}: {e}");
                    refused.push(format!("{rcpt} ({e})"));
                }
                Err(e) => return Err(fail(&format!("RCPT TO:<{rcpt}>"), e)),
            }
        }
        if accepted == 0 {
            return Err(format!(
                "{server}: every recipient refused: {}",
                refused.join("; ")
            ));
        }
        step_timeout(conn)?;
        conn.command(Data).map_err(|e| fail("DATA", e))?;
        step_timeout(conn)?;
        conn.message(message).map_err(|e| fail("end of data", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
