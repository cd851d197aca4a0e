//! One JSON POST over HTTP or HTTPS (ureq, rustls) for the webhook handler.
//!
//! The connection's TLS trusts [`Roots`] (Mozilla's roots and
//! `VIGIL_NOTIFY_CA_FILE`) through a connector of our own in ureq's chain:
//! ureq's stock one takes either Mozilla's roots or a given list, not both.
//! The whole request (resolve, connect, TLS, send, response) is bounded by
//! one deadline (ureq's global timeout); redirects are not followed (a
//! webhook that moved is a configuration to fix, and following a POST
//! across hosts could leak the body).
//!
//! The outcome: 2xx is success; 429 and 5xx are "try later" with the
//! server's `Retry-After` (seconds) when it gave one; any other status fails
//! with the first line of the response body, which is where PagerDuty and
//! Slack say what was wrong. No error text contains the URL beyond
//! `scheme://host/…`.

use super::config::WebhookUrl;
use super::tls::Roots;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// The most of an error response's body read, for its first line.
const ERROR_BODY_MAX: u64 = 4096;
/// The longest `Retry-After` honoured; a longer one is taken as this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Why a POST did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostError {
    /// One line for the log and the store, without secrets.
    pub reason: String,
    /// The server's `Retry-After`, on a 429 or 5xx that gave one.
    pub retry_after: Option<Duration>,
}

impl PostError {
    fn new(reason: String) -> PostError {
        PostError {
            reason,
            retry_after: None,
        }
    }
}

/// An HTTP client trusting [`Roots`]. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    pub fn new(roots: &Roots) -> HttpClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("vigil/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let connector =
            ().chain(ConnectProxyConnector::default())
                .chain(TcpConnector::default())
                .chain(RootsTls {
                    config: Arc::clone(&roots.client_config),
                });
        let agent = ureq::Agent::with_parts(
            config,
            connector,
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        HttpClient { agent }
    }

    /// POSTs `body` as JSON to `url`, all of it within `timeout`.
    pub fn post_json(
        &self,
        url: &WebhookUrl,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u16, PostError> {
        let response = self
            .agent
            .post(url.expose())
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/plain, */*")
            .send(body);
        let mut response = match response {
            Ok(r) => r,
            Err(e) => return Err(PostError::new(format!("{url}: {}", describe(&e)))),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(status);
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut text = String::new();
        // The body is only for the message: a failure to read it changes
        // nothing.
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_MAX)
            .read_to_string(&mut text);
        let line = first_line(&text);
        let reason = response.status().canonical_reason().unwrap_or("");
        let mut message = format!("{url}: HTTP {status} {reason}");
        if !line.is_empty() {
            message.push_str(": ");
            message.push_str(&line);
        }
        let retry = status == 429 || (500..600).contains(&status);
        if retry {
            message.push_str(" (will retry)");
        }
        Err(PostError {
            reason: message,
            retry_after: retry.then_some(retry_after).flatten(),
        })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: the
/// outbox's backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// The first non-empty line of a response body, at most 300 characters.
fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// A ureq error in words (ureq's own texts name no URL).
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "cannot resolve the host".into(),
        ureq::Error::ConnectionFailed => "cannot connect".into(),
        ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            format!("TLS: {io}")
        }
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "cannot connect: connection refused".into(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".into(),
            _ => format!("I/O error: {io}"),
        },
        ureq::Error::Rustls(tls) => format!("TLS: {tls}"),
        other => other.to_string(),
    }
}

/// The TLS step of the connector chain, with our root store. It mirrors
/// ureq's own rustls connector, which cannot be given a root store.
#[derive(Debug)]
struct RootsTls {
    config: Arc<rustls::ClientConfig>,
}

impl<In: Transport> Connector<In> for RootsTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("the host is not a valid TLS server name"))?;
        let mut conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: rustls::StreamOwned { conn, sock },
        })))
    }
}

/// An HTTPS connection (as ureq's rustls transport).
struct TlsTransport {
    buffers: LazyBuffers,
    stream: rustls::StreamOwned<rustls::ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn first_lines() {
        assert_eq!(
            first_line("\n  invalid routing key \nmore"),
            "invalid routing key"
        );
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"x".repeat(1000)).len(), 300);
    }
}
