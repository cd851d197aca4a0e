//! The notification handlers' configuration, read from `VIGIL_NOTIFY_*`.
//!
//! Secrets are read from their files here, once, and held so that no
//! `Debug` or `Display` shows them (`secret.rs`).
//!
//! Plain data validated once at start, so a typo in an address or a severity
//! list stops the sink with one line naming the variable instead of
//! surfacing as a failed page in the middle of the night. Each handler is
//! optional (unset = not configured) and has its own list of the severities
//! it fires for.

use super::secret::{read_secret_file, redact_url, Secret};
use super::tls::Roots;
use crate::config::{ConfigError, Env};
use std::time::Duration;

/// The four severities of a notification, as the protocol spells them.
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

/// `VIGIL_NOTIFY_SMTP_TLS`: how the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection, then `STARTTLS`, which the server must offer
    /// (port 587, or 25 between relays).
    StartTls,
    /// TLS from the first byte ("implicit TLS", port 465).
    Tls,
    /// No TLS at all (a relay on localhost or a trusted network, port 25).
    Off,
}

impl SmtpTls {
    /// The port taken when `VIGIL_NOTIFY_SMTP` names none.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::Off => 25,
        }
    }
}

/// `VIGIL_NOTIFY_SMTP`: a mail relay or submission server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The server's name or address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// `AUTH` user and password, when the server wants them.
    pub auth: Option<(String, Secret)>,
    /// The envelope and header sender.
    pub from: String,
    /// The envelope and header recipients.
    pub to: Vec<String>,
    /// The name given in EHLO.
    pub helo: String,
    pub severities: SeveritySet,
}

impl SmtpConfig {
    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `VIGIL_NOTIFY_WEBHOOK_FORMAT`: the body the webhook POSTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// A PagerDuty Events API v2 event (`trigger`, `resolve` on recovery).
    PagerDuty,
    /// A Slack incoming-webhook message (`text` and blocks).
    Slack,
    /// The notification object as it is.
    Json,
}

/// The webhook's URL: shown as `scheme://host/…` only, since many (Slack's)
/// carry their token in the path.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    full: Secret,
    shown: String,
}

impl WebhookUrl {
    /// Checks the URL's shape: `http://` or `https://`, a host, no
    /// credentials. The error is a sentence fragment.
    pub fn parse(raw: &str) -> Result<WebhookUrl, String> {
        let uri: ureq::http::Uri = raw
            .parse()
            .map_err(|_| "expected an http:// or https:// URL".to_string())?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
            _ => return Err("expected an http:// or https:// URL".into()),
        }
        let Some(authority) = uri.authority() else {
            return Err("the URL has no host".into());
        };
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        if authority.host().is_empty() {
            return Err("the URL has no host".into());
        }
        if authority.port_u16() == Some(0) {
            return Err("the port must be from 1 to 65535".into());
        }
        Ok(WebhookUrl {
            full: Secret::new(raw.to_string()),
            shown: redact_url(raw),
        })
    }

    /// The whole URL, for the request only.
    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    pub fn is_https(&self) -> bool {
        self.shown.starts_with("https:") || self.shown.starts_with("HTTPS:")
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

/// `VIGIL_NOTIFY_WEBHOOK`: an HTTP(S) POST per notification.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
    pub format: WebhookFormat,
    /// PagerDuty's `routing_key` (the integration key).
    pub key: Option<Secret>,
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
    /// The certificates TLS connections trust.
    pub roots: Roots,
}

impl NotifyConfig {
    pub fn from_env(env: &Env) -> Result<NotifyConfig, ConfigError> {
        let timeout = Duration::from_secs(env.int("VIGIL_NOTIFY_TIMEOUT_SECS", 10u64, 1, 3600)?);
        Ok(NotifyConfig {
            command: command_from_env(env)?,
            smtp: smtp_from_env(env)?,
            webhook: webhook_from_env(env)?,
            timeout,
            roots: Roots::from_env(env)?,
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
    let tls_raw = env.string("VIGIL_NOTIFY_SMTP_TLS", "starttls");
    let tls = match tls_raw.to_ascii_lowercase().as_str() {
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        "off" => SmtpTls::Off,
        _ => {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_SMTP_TLS",
                &tls_raw,
                "expected starttls (port 587), tls (port 465) or off (port 25)",
            ))
        }
    };
    let hp = host_port("VIGIL_NOTIFY_SMTP", server, tls.default_port())?;
    let (host, port) = hp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| ConfigError::new("VIGIL_NOTIFY_SMTP", server, "expected host:port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let auth = match (
        env.get("VIGIL_NOTIFY_SMTP_USER"),
        env.get("VIGIL_NOTIFY_SMTP_PASSWORD_FILE"),
    ) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
                "",
                "required when VIGIL_NOTIFY_SMTP_USER is set (a file holding the password)",
            ))
        }
        (None, Some(path)) => {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_SMTP_USER",
                "",
                format!("required when VIGIL_NOTIFY_SMTP_PASSWORD_FILE is set ({path})"),
            ))
        }
        (Some(user), Some(path)) => {
            if tls == SmtpTls::Off {
                return Err(ConfigError::new(
                    "VIGIL_NOTIFY_SMTP_TLS",
                    &tls_raw,
                    "AUTH without TLS would send the password in the clear: use starttls or tls",
                ));
            }
            if user.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "VIGIL_NOTIFY_SMTP_USER",
                    user,
                    "contains control characters",
                ));
            }
            Some((
                user.to_string(),
                read_secret_file("VIGIL_NOTIFY_SMTP_PASSWORD_FILE", path)?,
            ))
        }
    };
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
    if helo.is_empty()
        || !helo
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
        host,
        port,
        tls,
        auth,
        from,
        to,
        helo,
        severities: SeveritySet::from_env(env, "VIGIL_NOTIFY_SMTP_SEVERITIES", "critical,error")?,
    }))
}

fn webhook_from_env(env: &Env) -> Result<Option<WebhookConfig>, ConfigError> {
    if let Some(_key) = env.get("VIGIL_NOTIFY_WEBHOOK_KEY") {
        return Err(ConfigError::new(
            "VIGIL_NOTIFY_WEBHOOK_KEY",
            "(not shown)",
            "secrets are read from files: put the key in a file readable by its owner only and set VIGIL_NOTIFY_WEBHOOK_KEY_FILE",
        ));
    }
    let Some(url) = webhook_url_from_env(env)? else {
        return Ok(None);
    };
    let format_raw = env.string("VIGIL_NOTIFY_WEBHOOK_FORMAT", "pagerduty");
    let format = match format_raw.to_ascii_lowercase().as_str() {
        "pagerduty" => WebhookFormat::PagerDuty,
        "slack" => WebhookFormat::Slack,
        "json" => WebhookFormat::Json,
        _ => {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_WEBHOOK_FORMAT",
                &format_raw,
                "expected pagerduty, slack or json",
            ))
        }
    };
    let key = env
        .get("VIGIL_NOTIFY_WEBHOOK_KEY_FILE")
        .map(|path| read_secret_file("VIGIL_NOTIFY_WEBHOOK_KEY_FILE", path))
        .transpose()?;
    if key.is_some() && format != WebhookFormat::PagerDuty {
        return Err(ConfigError::new(
            "VIGIL_NOTIFY_WEBHOOK_KEY_FILE",
            env.get("VIGIL_NOTIFY_WEBHOOK_KEY_FILE").unwrap_or(""),
            "a routing key is only sent with VIGIL_NOTIFY_WEBHOOK_FORMAT=pagerduty",
        ));
    }
    Ok(Some(WebhookConfig {
        url,
        format,
        key,
        severities: SeveritySet::from_env(env, "VIGIL_NOTIFY_WEBHOOK_SEVERITIES", "critical")?,
    }))
}

/// The URL from `VIGIL_NOTIFY_WEBHOOK`, or from the file
/// `VIGIL_NOTIFY_WEBHOOK_FILE` names (a Slack or Teams URL is itself the
/// secret, so it may not belong in the environment); not both.
fn webhook_url_from_env(env: &Env) -> Result<Option<WebhookUrl>, ConfigError> {
    let (var, raw) = match (
        env.get("VIGIL_NOTIFY_WEBHOOK"),
        env.get("VIGIL_NOTIFY_WEBHOOK_FILE"),
    ) {
        (None, None) => return Ok(None),
        (Some(_), Some(path)) => {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_WEBHOOK_FILE",
                path,
                "VIGIL_NOTIFY_WEBHOOK is set too: set one of them",
            ))
        }
        (Some(raw), None) => {
            return WebhookUrl::parse(raw).map(Some).map_err(|reason| {
                ConfigError::new("VIGIL_NOTIFY_WEBHOOK", &redact_url(raw), reason)
            })
        }
        (None, Some(path)) => ("VIGIL_NOTIFY_WEBHOOK_FILE", path),
    };
    let secret = read_secret_file(var, raw)?;
    WebhookUrl::parse(secret.expose())
        .map(Some)
        .map_err(|reason| {
            let shown = redact_url(secret.expose());
            ConfigError::new(var, raw, format!("the file holds {shown}: {reason}"))
        })
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
            ("VIGIL_NOTIFY_SMTP_TLS", "off"),
            ("VIGIL_NOTIFY_WEBHOOK", "http://relay:8080/v2/enqueue"),
        ]);
        let c = NotifyConfig::from_env(&env).unwrap();
        let cmd = c.command.unwrap();
        assert!(SEVERITIES.iter().all(|s| cmd.severities.contains(s)));
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.server(), "mail.example.org:25");
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
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                    ("VIGIL_NOTIFY_SMTP_TLS", "ssl"),
                ],
                "VIGIL_NOTIFY_SMTP_TLS",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                    ("VIGIL_NOTIFY_SMTP_USER", "u"),
                ],
                "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                    ("VIGIL_NOTIFY_SMTP_USER", "u"),
                    ("VIGIL_NOTIFY_SMTP_PASSWORD_FILE", "/nonexistent/pw"),
                ],
                "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_SMTP", "mail:25"),
                    ("VIGIL_NOTIFY_SMTP_TO", "a@b"),
                    ("VIGIL_NOTIFY_SMTP_TLS", "off"),
                    ("VIGIL_NOTIFY_SMTP_USER", "u"),
                    ("VIGIL_NOTIFY_SMTP_PASSWORD_FILE", "/nonexistent/pw"),
                ],
                "VIGIL_NOTIFY_SMTP_TLS",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_WEBHOOK", "https://x/"),
                    ("VIGIL_NOTIFY_WEBHOOK_FORMAT", "teams"),
                ],
                "VIGIL_NOTIFY_WEBHOOK_FORMAT",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_WEBHOOK", "https://x/"),
                    ("VIGIL_NOTIFY_WEBHOOK_KEY", "K"),
                ],
                "VIGIL_NOTIFY_WEBHOOK_KEY",
            ),
            (
                &[
                    ("VIGIL_NOTIFY_WEBHOOK", "https://x/"),
                    ("VIGIL_NOTIFY_WEBHOOK_KEY_FILE", "/nonexistent/key"),
                ],
                "VIGIL_NOTIFY_WEBHOOK_KEY_FILE",
            ),
            (
                &[("VIGIL_NOTIFY_WEBHOOK", "https://u:p@x/")],
                "VIGIL_NOTIFY_WEBHOOK",
            ),
            (
                &[("VIGIL_NOTIFY_CA_FILE", "/nonexistent/ca.pem")],
                "VIGIL_NOTIFY_CA_FILE",
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
    fn https_webhooks_and_formats() {
        let env = Env::from_pairs([
            (
                "VIGIL_NOTIFY_WEBHOOK",
                "https://hooks.slack.com/services/T0/B0/S3CRET",
            ),
            ("VIGIL_NOTIFY_WEBHOOK_FORMAT", "Slack"),
        ]);
        let hook = NotifyConfig::from_env(&env).unwrap().webhook.unwrap();
        assert_eq!(hook.format, WebhookFormat::Slack);
        assert!(hook.url.is_https());
        assert_eq!(hook.url.to_string(), "https://hooks.slack.com/…");
        assert!(!format!("{hook:?}").contains("S3CRET"));
        assert_eq!(
            hook.url.expose(),
            "https://hooks.slack.com/services/T0/B0/S3CRET"
        );
        let default = Env::from_pairs([("VIGIL_NOTIFY_WEBHOOK", "http://relay:8080/x")]);
        let hook = NotifyConfig::from_env(&default).unwrap().webhook.unwrap();
        assert_eq!(hook.format, WebhookFormat::PagerDuty);
        assert!(hook.key.is_none());
    }

    #[test]
    fn the_webhook_url_can_come_from_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vigil-hook-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        let path = file.to_str().unwrap();
        let from_file = || {
            NotifyConfig::from_env(&Env::from_pairs([
                ("VIGIL_NOTIFY_WEBHOOK_FILE", path),
                ("VIGIL_NOTIFY_WEBHOOK_FORMAT", "slack"),
            ]))
        };
        std::fs::write(&file, "https://hooks.slack.com/services/T0/B0/S3CRET\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(from_file().unwrap_err().var, "VIGIL_NOTIFY_WEBHOOK_FILE");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hook = from_file().unwrap().webhook.unwrap();
        assert_eq!(
            hook.url.expose(),
            "https://hooks.slack.com/services/T0/B0/S3CRET"
        );
        assert_eq!(hook.url.to_string(), "https://hooks.slack.com/…");

        // A bad URL in the file is named by the file's variable, the secret
        // part left out.
        std::fs::write(&file, "ftp://hooks.slack.com/services/T0/B0/S3CRET\n").unwrap();
        let err = from_file().unwrap_err();
        assert_eq!(err.var, "VIGIL_NOTIFY_WEBHOOK_FILE");
        assert!(!err.to_string().contains("S3CRET"), "{err}");

        let both = Env::from_pairs([
            ("VIGIL_NOTIFY_WEBHOOK", "https://x/"),
            ("VIGIL_NOTIFY_WEBHOOK_FILE", path),
        ]);
        let err = NotifyConfig::from_env(&both).unwrap_err();
        assert_eq!(err.var, "VIGIL_NOTIFY_WEBHOOK_FILE");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn smtp_tls_modes_and_default_ports() {
        for (mode, tls, port) in [
            (None, SmtpTls::StartTls, 587),
            (Some("starttls"), SmtpTls::StartTls, 587),
            (Some("TLS"), SmtpTls::Tls, 465),
            (Some("off"), SmtpTls::Off, 25),
        ] {
            let mut pairs = vec![
                ("VIGIL_NOTIFY_SMTP", "mail.example.org"),
                ("VIGIL_NOTIFY_SMTP_TO", "ops@example.org"),
            ];
            if let Some(m) = mode {
                pairs.push(("VIGIL_NOTIFY_SMTP_TLS", m));
            }
            let smtp = NotifyConfig::from_env(&Env::from_pairs(pairs))
                .unwrap()
                .smtp
                .unwrap();
            assert_eq!((smtp.tls, smtp.port), (tls, port), "{mode:?}");
            assert!(smtp.auth.is_none());
        }
        let v6 = Env::from_pairs([
            ("VIGIL_NOTIFY_SMTP", "[::1]:2525"),
            ("VIGIL_NOTIFY_SMTP_TO", "ops@example.org"),
        ]);
        let smtp = NotifyConfig::from_env(&v6).unwrap().smtp.unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("::1", 2525));
        assert_eq!(smtp.server(), "[::1]:2525");
    }

    #[test]
    fn smtp_auth_reads_the_password_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vigil-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.to_str().unwrap();
        let env = Env::from_pairs([
            ("VIGIL_NOTIFY_SMTP", "smtp.example.org"),
            ("VIGIL_NOTIFY_SMTP_TO", "ops@example.org"),
            ("VIGIL_NOTIFY_SMTP_USER", "vigil"),
            ("VIGIL_NOTIFY_SMTP_PASSWORD_FILE", path),
        ]);
        let config = NotifyConfig::from_env(&env).unwrap();
        let (user, password) = config.smtp.as_ref().unwrap().auth.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("vigil", "hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
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
