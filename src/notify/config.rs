//! The notification handlers' configuration, read from `VIGIL_NOTIFY_*`.
//!
//! Plain data validated once at start, so a typo in an address or a severity
//! list stops the sink with one line naming the variable instead of
//! surfacing as a failed page in the middle of the night. Each handler is
//! optional (unset = not configured) and has its own list of the severities
//! it fires for.

use crate::config::{ConfigError, Env};
use std::time::Duration;

/// The four severities of a notification, from docs/PROTOCOL.md.
pub const SEVERITIES: [&str; 4] = crate::protocol::codes::SEVERITY_TEXTS;

/// Which severities a handler fires for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeveritySet(Vec<String>);

impl SeveritySet {
    /// Parses a comma list of severities (`all` = every severity); `default`
    /// applies when the variable is unset or empty.
    pub fn from_env(env: &Env, var: &str, default: &str) -> Result<SeveritySet, ConfigError> {
        let raw = env.get(var).unwrap_or(default);
        let mut set = Vec::new();
        for word in raw.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            if word == "all" {
                return Ok(SeveritySet(
                    SEVERITIES.iter().map(|s| s.to_string()).collect(),
                ));
            }
            if !SEVERITIES.contains(&word.as_str()) {
                return Err(ConfigError::new(
                    var,
                    raw,
                    format!("unknown severity {word:?} (expected a comma list of critical, error, warning, info, or all)"),
                ));
            }
            if !set.contains(&word) {
                set.push(word);
            }
        }
        if set.is_empty() {
            return Err(ConfigError::new(var, raw, "no severity given"));
        }
        Ok(SeveritySet(set))
    }

    /// Whether a notification of `severity` should reach the handler. An
    /// unknown severity (a client bug) is treated as `critical`, so it is
    /// paged rather than lost.
    pub fn contains(&self, severity: &str) -> bool {
        let severity = normalise_severity(severity);
        self.0.iter().any(|s| s == severity)
    }
}

/// The severity as one of [`SEVERITIES`]; anything else counts as `critical`.
pub fn normalise_severity(severity: &str) -> &'static str {
    let lower = severity.trim().to_ascii_lowercase();
    SEVERITIES
        .iter()
        .find(|s| **s == lower)
        .copied()
        .unwrap_or("critical")
}

/// `VIGIL_NOTIFY_COMMAND`: a shell command run per notification.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    pub command: String,
    pub severities: SeveritySet,
}

/// `VIGIL_NOTIFY_SMTP`: plain SMTP to a relay.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `host:port` of the relay.
    pub server: String,
    /// The envelope and header sender.
    pub from: String,
    /// The envelope and header recipients.
    pub to: Vec<String>,
    /// The name given in EHLO/HELO.
    pub helo: String,
    pub severities: SeveritySet,
}

/// `VIGIL_NOTIFY_WEBHOOK`: a JSON POST in the PagerDuty Events v2 shape.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: super::http::HttpUrl,
    /// `routing_key` of the event, when the receiver needs one.
    pub key: Option<String>,
    pub severities: SeveritySet,
}

/// Every handler's configuration.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub command: Option<CommandConfig>,
    pub smtp: Option<SmtpConfig>,
    pub webhook: Option<WebhookConfig>,
    /// The most one handler may take for one notification.
    pub timeout: Duration,
}

impl NotifyConfig {
    pub fn from_env(env: &Env) -> Result<NotifyConfig, ConfigError> {
        let timeout = Duration::from_secs(env.int("VIGIL_NOTIFY_TIMEOUT_SECS", 10u64, 1, 3600)?);
        Ok(NotifyConfig {
            command: command_from_env(env)?,
            smtp: smtp_from_env(env)?,
            webhook: webhook_from_env(env)?,
            timeout,
        })
    }
}

fn command_from_env(env: &Env) -> Result<Option<CommandConfig>, ConfigError> {
    let Some(command) = env.get("VIGIL_NOTIFY_COMMAND") else {
        return Ok(None);
    };
    Ok(Some(CommandConfig {
        command: command.to_string(),
        severities: SeveritySet::from_env(env, "VIGIL_NOTIFY_COMMAND_SEVERITIES", "all")?,
    }))
}

fn smtp_from_env(env: &Env) -> Result<Option<SmtpConfig>, ConfigError> {
    let Some(server) = env.get("VIGIL_NOTIFY_SMTP") else {
        return Ok(None);
    };
    let server = host_port("VIGIL_NOTIFY_SMTP", server, 25)?;
    let hostname = local_hostname();
    let from = match env.get("VIGIL_NOTIFY_SMTP_FROM") {
        Some(from) => address("VIGIL_NOTIFY_SMTP_FROM", from)?,
        None => format!("vigil@{hostname}"),
    };
    let Some(to_raw) = env.get("VIGIL_NOTIFY_SMTP_TO") else {
        return Err(ConfigError::new(
            "VIGIL_NOTIFY_SMTP_TO",
            "",
            "required when VIGIL_NOTIFY_SMTP is set (a comma list of addresses)",
        ));
    };
    let mut to = Vec::new();
    for addr in to_raw.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        to.push(address("VIGIL_NOTIFY_SMTP_TO", addr)?);
    }
    if to.is_empty() {
        return Err(ConfigError::new(
            "VIGIL_NOTIFY_SMTP_TO",
            to_raw,
            "no address given",
        ));
    }
    let helo = env.string("VIGIL_NOTIFY_SMTP_HELO", &hostname);
    if !helo
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
    {
        return Err(ConfigError::new(
            "VIGIL_NOTIFY_SMTP_HELO",
            &helo,
            "expected a host name",
        ));
    }
    Ok(Some(SmtpConfig {
        server,
        from,
        to,
        helo,
        severities: SeveritySet::from_env(env, "VIGIL_NOTIFY_SMTP_SEVERITIES", "critical,error")?,
    }))
}

fn webhook_from_env(env: &Env) -> Result<Option<WebhookConfig>, ConfigError> {
    let Some(raw) = env.get("VIGIL_NOTIFY_WEBHOOK") else {
        return Ok(None);
    };
    let url = super::http::HttpUrl::parse(raw)
        .map_err(|reason| ConfigError::new("VIGIL_NOTIFY_WEBHOOK", raw, reason))?;
    Ok(Some(WebhookConfig {
        url,
        key: env.get("VIGIL_NOTIFY_WEBHOOK_KEY").map(str::to_string),
        severities: SeveritySet::from_env(env, "VIGIL_NOTIFY_WEBHOOK_SEVERITIES", "critical")?,
    }))
}

/// `host:port` (or `host`, taking `default_port`), checked for shape only:
/// the name is resolved at each use so a relay that moves is followed.
pub fn host_port(var: &str, raw: &str, default_port: u16) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::new(var, raw, why.to_string());
    let (host, port) = match raw.rsplit_once(':') {
        // A bracketed IPv6 address with a port, or a plain host with one.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port: u16 = port
                .parse()
                .map_err(|_| bad("expected host:port with a port from 1 to 65535"))?;
            (host, port)
        }
        _ => (raw, default_port),
    };
    if port == 0 {
        return Err(bad("expected host:port with a port from 1 to 65535"));
    }
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("expected host:port"));
    }
    Ok(format!("{host}:{port}"))
}

/// An email address as it goes into `MAIL FROM:<..>`/`RCPT TO:<..>`:
/// `local@domain`, nothing that could break the SMTP command line.
fn address(var: &str, raw: &str) -> Result<String, ConfigError> {
    let ok = raw
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && raw
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>,;\"\\()[]".contains(c));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ConfigError::new(
            var,
            raw,
            "expected an address like user@example.org",
        ))
    }
}

/// This machine's name, for the default sender and EHLO.
pub fn local_hostname() -> String {
    crate::config::system_hostname().unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_by_default() {
        let config = NotifyConfig::from_env(&Env::from_pairs([])).unwrap();
        assert!(config.command.is_none() && config.smtp.is_none() && config.webhook.is_none());
        assert_eq!(config.timeout, Duration::from_secs(10));
    }

    #[test]
    fn severity_defaults_per_handler() {
        let env = Env::from_pairs([
            ("VIGIL_NOTIFY_COMMAND", "true"),
            ("VIGIL_NOTIFY_SMTP", "mail.example.org"),
            (
                "VIGIL_NOTIFY_SMTP_TO",
                "ops@example.org, oncall@example.org",
            ),
            ("VIGIL_NOTIFY_WEBHOOK", "http://relay:8080/v2/enqueue"),
        ]);
        let c = NotifyConfig::from_env(&env).unwrap();
        let cmd = c.command.unwrap();
        assert!(SEVERITIES.iter().all(|s| cmd.severities.contains(s)));
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.server, "mail.example.org:25");
        assert_eq!(smtp.to, ["ops@example.org", "oncall@example.org"]);
        assert!(smtp.severities.contains("critical") && smtp.severities.contains("error"));
        assert!(!smtp.severities.contains("warning"));
        let hook = c.webhook.unwrap();
        assert!(hook.severities.contains("critical") && !hook.severities.contains("error"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("VIGIL_NOTIFY_COMMAND", "x"),
                    ("VIGIL_NOTIFY_COMMAND_SEVERITIES", "critcal"),
                ],
                "VIGIL_NOTIFY_COMMAND_SEVERITIES",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:99999"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                ],
                "VIGIL_NOTIFY_SMTP",
            ),
            (&[("VIGIL_NOTIFY_SMTP", "mail:25")], "VIGIL_NOTIFY_SMTP_TO"),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b>\r\nRCPT"),
                ],
                "VIGIL_NOTIFY_SMTP_TO",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                    ("VIGIL_NOTIFY_SMTP_FROM", "nobody"),
                ],
                "VIGIL_NOTIFY_SMTP_FROM",
            ),
            (
                &[(
                    "VIGIL_NOTIFY_WEBHOOK",
                    "https://events.pagerduty.com/v2/enqueue",
                )],
                "VIGIL_NOTIFY_WEBHOOK",
            ),
            (
                &[("VIGIL_NOTIFY_WEBHOOK", "ftp://x")],
                "VIGIL_NOTIFY_WEBHOOK",
            ),
            (
                &[("VIGIL_NOTIFY_TIMEOUT_SECS", "0")],
                "VIGIL_NOTIFY_TIMEOUT_SECS",
            ),
        ];
        for (pairs, var) in cases {
            let err = NotifyConfig::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err();
            assert_eq!(err.var, *var, "{pairs:?} gave {err}");
        }
    }

    #[test]
    fn https_is_refused_with_advice() {
        let env = Env::from_pairs([(
            "VIGIL_NOTIFY_WEBHOOK",
            "https://events.pagerduty.com/v2/enqueue",
        )]);
        let err = NotifyConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("http relay"), "{err}");
    }

    #[test]
    fn unknown_severity_counts_as_critical() {
        let env = Env::from_pairs([("X", "critical")]);
        let set = SeveritySet::from_env(&env, "X", "info").unwrap();
        assert!(set.contains("PANIC"));
        assert!(set.contains("Critical"));
        assert!(!SeveritySet::from_env(&env, "Y", "info")
            .unwrap()
            .contains("bogus"));
    }

    #[test]
    fn host_port_shapes() {
        assert_eq!(host_port("V", "[::1]:2525", 25).unwrap(), "[::1]:2525");
        assert_eq!(host_port("V", "localhost", 25).unwrap(), "localhost:25");
        assert!(host_port("V", "host:0", 25).is_err());
        assert!(host_port("V", ":25", 25).is_err());
    }
}
