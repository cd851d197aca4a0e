//! The webhook handler: one JSON POST per notification, in the shape the
//! receiver expects (`VIGIL_NOTIFY_WEBHOOK_FORMAT`).
//!
//! - `pagerduty`: a PagerDuty Events API v2 event, which PagerDuty, and
//!   the PagerDuty-compatible endpoints of Opsgenie and Grafana OnCall,
//!   accept:
//!   - `event_action`: `trigger`, or `resolve` when the notification
//!     carries `"recovery": true` (vigil's heartbeat and result-state
//!     recoveries);
//!   - `dedup_key`: `UUID:CONDITION`, the condition being the notification's
//!     `source` (`heartbeat`, the plugin's name; the scheduler's `plugin X`
//!     counts as `X`), so a recovery resolves the incident its trigger
//!     opened and a resend does not open a second one; `UUID:ID` when there
//!     is no source;
//!   - `payload`: `summary` (`host: message`), `source` (the host name),
//!     `severity` (critical/error/warning/info, vigil's own four),
//!     `timestamp` (RFC 3339 from `ts`), `component` (the source), and
//!     `custom_details` = the whole notification;
//!   - `routing_key` from `VIGIL_NOTIFY_WEBHOOK_KEY_FILE`.
//! - `slack`: an incoming-webhook message: `text` (the one-line summary,
//!   also what notifications show) and blocks with the severity, host,
//!   source, message and time.
//! - `json`: the notification object as it is.
//!
//! What counts as delivered, and what is retried, is `http.rs`'s.

use super::config::{normalise_severity, WebhookConfig, WebhookFormat};
use super::http::{HttpClient, PostError};
use super::{field, field_text};
use serde_json::{json, Value};
use std::time::Duration;

/// PagerDuty's limits: 1024 characters of summary, 255 of dedup key.
const SUMMARY_MAX: usize = 1024;
const DEDUP_KEY_MAX: usize = 255;
/// Slack's limit on a section block's text is 3000 characters.
const SLACK_TEXT_MAX: usize = 2900;

/// POSTs the body for one notification.
pub fn send(
    client: &HttpClient,
    config: &WebhookConfig,
    notification: &Value,
    timeout: Duration,
) -> Result<(), PostError> {
    let body = body(config, notification);
    let bytes = serde_json::to_vec(&body).map_err(|e| PostError {
        reason: format!("cannot encode the body: {e}"),
        retry_after: None,
    })?;
    client
        .post_json(&config.url, &bytes, timeout)
        .map(|_| ())
        .map_err(|mut e| {
            // A receiver that echoes the key back must not put it in the log.
            if let Some(key) = &config.key {
                e.reason = e.reason.replace(key.expose(), "<redacted>");
            }
            e
        })
}

/// The body for the configured format.
pub fn body(config: &WebhookConfig, notification: &Value) -> Value {
    match config.format {
        WebhookFormat::PagerDuty => {
            pagerduty_event(notification, config.key.as_ref().map(|k| k.expose()))
        }
        WebhookFormat::Slack => slack_message(notification),
        WebhookFormat::Json => notification.clone(),
    }
}

fn is_recovery(notification: &Value) -> bool {
    notification.get("recovery").and_then(Value::as_bool) == Some(true)
}

/// The host name, or the UUID when the notification has none.
fn host(notification: &Value) -> &str {
    let host = field(notification, "hostname");
    if host.is_empty() {
        field(notification, "uuid")
    } else {
        host
    }
}

/// The key that ties a recovery to its problem: `UUID:CONDITION`.
pub fn dedup_key(notification: &Value) -> String {
    let uuid = field(notification, "uuid");
    let source = field(notification, "source");
    // The scheduler's overdue runs say `plugin X`, results say `X`: one
    // condition, so one incident.
    let condition = source.strip_prefix("plugin ").unwrap_or(source);
    let key = if condition.is_empty() {
        format!("{uuid}:{}", field_text(notification, "id"))
    } else {
        format!("{uuid}:{condition}")
    };
    truncate(&key, DEDUP_KEY_MAX)
}

/// The PagerDuty Events API v2 event for a notification.
pub fn pagerduty_event(notification: &Value, routing_key: Option<&str>) -> Value {
    let source = field(notification, "source");
    let host = host(notification);
    let summary = format!("{host}: {}", field(notification, "message"));
    let mut payload = json!({
        "summary": truncate(&summary, SUMMARY_MAX),
        "source": host,
        "severity": normalise_severity(field(notification, "severity")),
        "custom_details": notification,
    });
    if let Some(ts) = notification.get("ts").and_then(Value::as_f64) {
        payload["timestamp"] = json!(rfc3339(ts));
    }
    if !source.is_empty() {
        payload["component"] = json!(source);
    }
    let mut event = json!({
        "event_action": if is_recovery(notification) { "resolve" } else { "trigger" },
        "dedup_key": dedup_key(notification),
        "payload": payload,
        "client": "vigil",
    });
    if let Some(key) = routing_key {
        event["routing_key"] = json!(key);
    }
    event
}

/// The Slack incoming-webhook message for a notification.
pub fn slack_message(notification: &Value) -> Value {
    let severity = normalise_severity(field(notification, "severity"));
    let label = if is_recovery(notification) {
        "RECOVERY".to_string()
    } else {
        severity.to_ascii_uppercase()
    };
    let host = host(notification);
    let message = field(notification, "message");
    let first = message.lines().next().unwrap_or("");
    let text = truncate(&format!("[vigil {label}] {host}: {first}"), SLACK_TEXT_MAX);
    let source = field(notification, "source");
    let time = notification
        .get("ts")
        .and_then(Value::as_f64)
        .map(rfc3339)
        .unwrap_or_default();
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{label}")}),
        json!({"type": "mrkdwn", "text": format!("*Host*\n{}", escape(host))}),
    ];
    if !source.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Source*\n{}", escape(source))}));
    }
    if !time.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Time*\n{time}")}));
    }
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&text), SLACK_TEXT_MAX)}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn",
                "text": truncate(&format!("*Message*\n{}", escape(message)), SLACK_TEXT_MAX)}},
        ],
    })
}

/// Slack's three escapes for text in messages.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `2023-11-14T22:13:20Z` from unix seconds (fractions dropped).
fn rfc3339(ts: f64) -> String {
    let secs = ts.floor() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::notify::config::{SeveritySet, WebhookUrl};
    use crate::notify::secret::Secret;
    use crate::notify::tls::Roots;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    fn note() -> Value {
        json!({"type":"notification","uuid":"u-1","id":"n-7","severity":"error","source":"heartbeat",
               "message":"client silent for 90 s","hostname":"web1","ts":1700000000})
    }

    #[test]
    fn trigger_event_shape() {
        let e = pagerduty_event(&note(), Some("R0UTING"));
        assert_eq!(
            e,
            json!({
                "routing_key": "R0UTING",
                "event_action": "trigger",
                "dedup_key": "u-1:heartbeat",
                "client": "vigil",
                "payload": {
                    "summary": "web1: client silent for 90 s",
                    "source": "web1",
                    "severity": "error",
                    "timestamp": "2023-11-14T22:13:20Z",
                    "component": "heartbeat",
                    "custom_details": note(),
                }
            })
        );
    }

    #[test]
    fn recovery_resolves_the_same_key() {
        let mut n = note();
        n["recovery"] = json!(true);
        n["id"] = json!("n-8");
        n["severity"] = json!("info");
        let e = pagerduty_event(&n, None);
        assert_eq!(e["event_action"], "resolve");
        assert_eq!(e["dedup_key"], "u-1:heartbeat");
        assert!(e.get("routing_key").is_none());
        // An overdue run and the plugin's results are one condition.
        let overdue =
            json!({"uuid":"u-1","source":"plugin disk","severity":"warning","message":"m"});
        let result =
            json!({"uuid":"u-1","source":"disk","severity":"info","recovery":true,"message":"m"});
        assert_eq!(dedup_key(&overdue), dedup_key(&result));
    }

    #[test]
    fn odd_notifications() {
        let e = pagerduty_event(
            &json!({"uuid":"u","id":"i","severity":"PANIC","message":"m"}),
            None,
        );
        assert_eq!(e["dedup_key"], "u:i");
        assert_eq!(e["payload"]["severity"], "critical");
        assert_eq!(e["payload"]["source"], "u");
        assert!(e["payload"].get("timestamp").is_none());
        let long = json!({"uuid":"u","source":"s".repeat(400),"message":"m".repeat(5000)});
        let e = pagerduty_event(&long, None);
        assert_eq!(
            e["dedup_key"].as_str().unwrap().chars().count(),
            DEDUP_KEY_MAX
        );
        assert_eq!(
            e["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_MAX
        );
    }

    #[test]
    fn slack_message_shape() {
        let mut n = note();
        n["message"] = json!("disk <full> & more\nsecond line");
        let m = slack_message(&n);
        assert_eq!(m["text"], "[vigil ERROR] web1: disk <full> & more");
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*Severity*\nERROR",
                "*Host*\nweb1",
                "*Source*\nheartbeat",
                "*Time*\n2023-11-14T22:13:20Z"
            ]
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "*Message*\ndisk &lt;full&gt; &amp; more\nsecond line"
        );
        n["recovery"] = json!(true);
        assert!(slack_message(&n)["text"]
            .as_str()
            .unwrap()
            .starts_with("[vigil RECOVERY]"));
    }

    /// What the listener received: request line, headers, body.
    type Received = (String, Vec<String>, Vec<u8>);

    /// A local plain-HTTP server for one request, answering `status`.
    fn listener(status: &'static str) -> (u16, std::thread::JoinHandle<Received>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(s);
            let mut request_line = String::new();
            r.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                headers.push(line.trim_end().to_ascii_lowercase());
            }
            let length: usize = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let mut s = r.into_inner();
            let answer = "invalid routing key K3Y\nsecond line";
            write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nRetry-After: 7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
            (request_line.trim_end().to_string(), headers, body)
        });
        (port, h)
    }

    fn config(port: u16, format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            url: WebhookUrl::parse(&format!("http://127.0.0.1:{port}/v2/enqueue?token=SECRET"))
                .unwrap(),
            format,
            key: (format == WebhookFormat::PagerDuty).then(|| Secret::new("K3Y".into())),
            severities: SeveritySet::from_env(&Env::from_pairs([]), "X", "all").unwrap(),
        }
    }

    fn client() -> HttpClient {
        HttpClient::new(&Roots::new(vec![]).unwrap())
    }

    #[test]
    fn posts_the_body_to_a_listener() {
        for format in [
            WebhookFormat::PagerDuty,
            WebhookFormat::Slack,
            WebhookFormat::Json,
        ] {
            let (port, server) = listener("202 Accepted");
            let cfg = config(port, format);
            send(&client(), &cfg, &note(), Duration::from_secs(10)).unwrap();
            let (request_line, headers, body) = server.join().unwrap();
            assert_eq!(request_line, "POST /v2/enqueue?token=SECRET HTTP/1.1");
            assert!(
                headers.contains(&"content-type: application/json".to_string()),
                "{headers:?}"
            );
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body, super::body(&cfg, &note()));
        }
    }

    #[test]
    fn status_503_is_retried_after_the_servers_delay() {
        let (port, server) = listener("503 Service Unavailable");
        let err = send(
            &client(),
            &config(port, WebhookFormat::PagerDuty),
            &note(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(err.reason.contains("HTTP 503"), "{err:?}");
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
        // Neither the URL's token nor the key the server echoed is shown.
        assert!(
            !err.reason.contains("SECRET") && !err.reason.contains("K3Y"),
            "{err:?}"
        );
        assert!(err.reason.contains("http://127.0.0.1:"), "{err:?}");
        server.join().unwrap();
    }

    #[test]
    fn status_400_fails_with_the_bodys_first_line() {
        let (port, server) = listener("400 Bad Request");
        let err = send(
            &client(),
            &config(port, WebhookFormat::Json),
            &note(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            err.reason
                .ends_with("HTTP 400 Bad Request: invalid routing key K3Y"),
            "{err:?}"
        );
        assert_eq!(err.retry_after, None, "a 400 is not a 'try later'");
        server.join().unwrap();
    }

    #[test]
    fn no_listener_is_a_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = send(
            &client(),
            &config(port, WebhookFormat::Json),
            &note(),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.reason.contains("cannot connect"), "{err:?}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = send(
            &client(),
            &config(port, WebhookFormat::Json),
            &note(),
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(err.reason.contains("timed out"), "{err:?}");
        drop(listener);
    }
}
