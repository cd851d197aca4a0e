//! Notification handlers: what vigil does with a notification once a sink
//! has accepted it.
//!
//! Three handler kinds, each configured by `VIGIL_NOTIFY_*` variables with
//! its own list of severities (see `config.rs`):
//! - `command`: a shell command with the notification as JSON on stdin and as
//!   `VIGIL_*` environment variables, like Nagios notification commands and
//!   Sensu pipe handlers (`command.rs`);
//! - `email`: one message per notification to an SMTP server, with
//!   STARTTLS or TLS and AUTH (`smtp.rs` over lettre; the message in
//!   `email.rs`);
//! - `webhook`: an HTTP(S) POST for PagerDuty, Slack or any JSON receiver
//!   (`webhook.rs` over `http.rs`, ureq).
//!
//! TLS trusts Mozilla's roots and `VIGIL_NOTIFY_CA_FILE` (`tls.rs`);
//! secrets come from files and stay out of every text (`secret.rs`).
//!
//! [`Handlers::run`] runs the handlers for one notification one after the
//! other, each bounded by `VIGIL_NOTIFY_TIMEOUT_SECS`, and reports each one's
//! outcome; the notification sink acks only when all succeeded and passes
//! the names that already succeeded back in on a retry, so a page that went
//! out is not sent twice because the email relay was down.

pub mod command;
pub mod config;
pub mod email;
pub mod http;
pub mod secret;
pub mod smtp;
pub mod tls;
pub mod webhook;

use crate::config::{ConfigError, Env};
use config::NotifyConfig;

/// Handler names as reported in [`HandlerOutcome::handler`] and accepted in
/// `done`.
pub const COMMAND: &str = "command";
pub const EMAIL: &str = "email";
pub const WEBHOOK: &str = "webhook";

/// The configured notification handlers.
#[derive(Debug, Clone)]
pub struct Handlers {
    config: NotifyConfig,
    smtp: Option<smtp::SmtpClient>,
    http: http::HttpClient,
}

/// What one handler did with one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerOutcome {
    /// The handler's name: `command`, `email` or `webhook`.
    pub handler: String,
    /// `Err` carries a one-line reason for the log and the store.
    pub result: Result<(), String>,
    /// On a failure: how long the receiver asked to wait before the next
    /// try (HTTP `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl Handlers {
    /// Reads the handler configuration (VIGIL_NOTIFY_* variables) and checks it.
    pub fn from_env(env: &Env) -> Result<Handlers, ConfigError> {
        let config = NotifyConfig::from_env(env)?;
        let smtp = match &config.smtp {
            Some(c) => Some(
                smtp::SmtpClient::new(c, &config.roots)
                    .map_err(|e| ConfigError::new("VIGIL_NOTIFY_SMTP", &c.server(), e))?,
            ),
            None => None,
        };
        let http = http::HttpClient::new(&config.roots);
        Ok(Handlers { config, smtp, http })
    }

    /// The configuration, e.g. to log it once at start.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// Names of the handlers configured for this severity (e.g. "command", "email", "webhook").
    /// An unknown severity counts as `critical`.
    pub fn for_severity(&self, severity: &str) -> Vec<String> {
        let c = &self.config;
        let mut names = Vec::new();
        if c.command
            .as_ref()
            .is_some_and(|h| h.severities.contains(severity))
        {
            names.push(COMMAND.to_string());
        }
        if c.smtp
            .as_ref()
            .is_some_and(|h| h.severities.contains(severity))
        {
            names.push(EMAIL.to_string());
        }
        if c.webhook
            .as_ref()
            .is_some_and(|h| h.severities.contains(severity))
        {
            names.push(WEBHOOK.to_string());
        }
        names
    }

    /// Runs every handler configured for the notification's `severity`, skipping
    /// handler names in `done` (already succeeded on an earlier attempt), and
    /// returns each one's outcome. Blocks at most about the configured timeout per handler.
    ///
    /// A notification without a `severity` string counts as `critical`.
    pub fn run(&self, notification: &serde_json::Value, done: &[String]) -> Vec<HandlerOutcome> {
        let severity = notification
            .get("severity")
            .and_then(|s| s.as_str())
            .unwrap_or("critical");
        let c = &self.config;
        self.for_severity(severity)
            .into_iter()
            .filter(|name| !done.contains(name))
            .map(|name| {
                let (result, retry_after) = match name.as_str() {
                    COMMAND => match &c.command {
                        Some(h) => (command::run(h, notification, c.timeout), None),
                        None => (Err(not_configured(&name)), None),
                    },
                    EMAIL => match &self.smtp {
                        Some(h) => (h.send(notification, c.timeout), None),
                        None => (Err(not_configured(&name)), None),
                    },
                    WEBHOOK => match &c.webhook {
                        Some(h) => match webhook::send(&self.http, h, notification, c.timeout) {
                            Ok(()) => (Ok(()), None),
                            Err(e) => (Err(e.reason), e.retry_after),
                        },
                        None => (Err(not_configured(&name)), None),
                    },
                    _ => (Err(not_configured(&name)), None),
                };
                if let Err(reason) = &result {
                    log::warn!("notification handler {name} failed: {reason}");
                }
                HandlerOutcome {
                    handler: name,
                    result,
                    retry_after,
                }
            })
            .collect()
    }
}

fn not_configured(name: &str) -> String {
    format!("handler {name} is not configured")
}

/// Caps the HTTP and TLS libraries' logs at `warn`, whatever `VIGIL_LOG`
/// asks for: their debug and trace lines print request URLs and headers,
/// which carry webhook tokens and keys.
pub fn quiet_library_logs(logger: &mut env_logger::Builder) {
    for module in ["ureq", "ureq_proto", "rustls", "lettre"] {
        logger.filter_module(module, log::LevelFilter::Warn);
    }
}

/// A string member of the notification, or `""`.
pub(crate) fn field<'a>(notification: &'a serde_json::Value, key: &str) -> &'a str {
    notification.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// A member of the notification as text: strings as they are, numbers and
/// other values as JSON, absent as `""`.
pub(crate) fn field_text(notification: &serde_json::Value, key: &str) -> String {
    match notification.get(key) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn handlers(pairs: &[(&str, &str)]) -> Handlers {
        Handlers::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn handlers_per_severity() {
        let h = handlers(&[
            ("VIGIL_NOTIFY_COMMAND", "true"),
            ("VIGIL_NOTIFY_SMTP", "127.0.0.1:25"),
            ("VIGIL_NOTIFY_SMTP_TLS", "off"),
            ("VIGIL_NOTIFY_SMTP_TO", "ops@example.org"),
            ("VIGIL_NOTIFY_WEBHOOK", "http://127.0.0.1:9/"),
        ]);
        assert_eq!(h.for_severity("critical"), ["command", "email", "webhook"]);
        assert_eq!(h.for_severity("error"), ["command", "email"]);
        assert_eq!(h.for_severity("warning"), ["command"]);
        assert_eq!(h.for_severity("info"), ["command"]);
        assert_eq!(h.for_severity("nonsense"), ["command", "email", "webhook"]);
        assert!(handlers(&[]).for_severity("critical").is_empty());
    }

    #[test]
    fn run_reports_each_outcome_and_skips_done() {
        let port = closed_port();
        let h = handlers(&[
            (
                "VIGIL_NOTIFY_COMMAND",
                "test \"$VIGIL_SEVERITY\" = critical",
            ),
            (
                "VIGIL_NOTIFY_WEBHOOK",
                &format!("http://127.0.0.1:{port}/hook"),
            ),
            ("VIGIL_NOTIFY_TIMEOUT_SECS", "5"),
        ]);
        let n = json!({"type":"notification","uuid":"u","id":"i","severity":"critical",
                       "source":"s","message":"m","hostname":"h","ts":1});
        let outcomes = h.run(&n, &[]);
        assert_eq!(outcomes.len(), 2);
        assert_eq!(
            outcomes[0],
            HandlerOutcome {
                handler: "command".into(),
                result: Ok(()),
                retry_after: None,
            }
        );
        assert_eq!(outcomes[1].handler, "webhook");
        assert!(outcomes[1].result.is_err());
        // On the retry only the handler that failed runs again.
        let retry = h.run(&n, &["command".to_string()]);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].handler, "webhook");
        // A warning reaches only the command handler, which fails on it.
        let mut w = n.clone();
        w["severity"] = json!("warning");
        let outcomes = h.run(&w, &[]);
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0]
            .result
            .as_ref()
            .unwrap_err()
            .contains("exited with status 1"));
    }

    #[test]
    fn nothing_configured_is_nothing_to_do() {
        let n = json!({"severity":"critical"});
        assert!(handlers(&[]).run(&n, &[]).is_empty());
    }
}
