//! The webhook handler: a JSON POST shaped like a PagerDuty Events API v2
//! event, which PagerDuty, Opsgenie's and Grafana OnCall's PagerDuty-compatible
//! endpoints, and most "generic webhook" receivers accept.
//!
//! - `event_action`: `trigger`, or `resolve` when the notification carries
//!   `"recovery": true` (vigil's heartbeat and result-state recoveries);
//! - `dedup_key`: `UUID:SOURCE` (so a recovery resolves the incident its
//!   trigger opened, and a resend of the same notification does not open a
//!   second one), or `UUID:ID` when the notification has no source;
//! - `payload`: `summary` (`host: message`), `source` (the host name),
//!   `severity` (critical/error/warning/info), `timestamp` (RFC 3339 from
//!   `ts`), `component` (the source), and `custom_details` = the whole
//!   notification;
//! - `routing_key` from `VIGIL_NOTIFY_WEBHOOK_KEY` when set.
//!
//! Any 2xx status is success.

use super::config::{normalise_severity, WebhookConfig};
use super::{field, http};
use serde_json::{json, Value};
use std::time::Duration;

/// PagerDuty's limits: 1024 characters of summary, 255 of dedup key.
const SUMMARY_MAX: usize = 1024;
const DEDUP_KEY_MAX: usize = 255;

/// POSTs the event for one notification.
pub fn send(config: &WebhookConfig, notification: &Value, timeout: Duration) -> Result<(), String> {
    let body = event(notification, config.key.as_deref());
    let bytes = serde_json::to_vec(&body).map_err(|e| format!("cannot encode the event: {e}"))?;
    http::post_json(&config.url, &bytes, timeout).map(|_| ())
}

/// The event body for a notification.
pub fn event(notification: &Value, routing_key: Option<&str>) -> Value {
    let recovery = notification.get("recovery").and_then(Value::as_bool) == Some(true);
    let uuid = field(notification, "uuid");
    let source = field(notification, "source");
    let dedup = if source.is_empty() {
        format!("{uuid}:{}", super::field_text(notification, "id"))
    } else {
        format!("{uuid}:{source}")
    };
    let host = field(notification, "hostname");
    let host = if host.is_empty() { uuid } else { host };
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
        "event_action": if recovery { "resolve" } else { "trigger" },
        "dedup_key": truncate(&dedup, DEDUP_KEY_MAX),
        "payload": payload,
        "client": "vigil",
    });
    if let Some(key) = routing_key {
        event["routing_key"] = json!(key);
    }
    event
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `2023-11-14T22:13:20Z` from unix seconds (fractions dropped).
fn rfc3339(ts: f64) -> String {
    let secs = ts.floor() as i64;
    let (y, m, d) = super::email::civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::notify::config::SeveritySet;
    use crate::notify::http::HttpUrl;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    fn note() -> Value {
        json!({"type":"notification","uuid":"u-1","id":"n-7","severity":"error","source":"heartbeat",
               "message":"client silent for 90 s","hostname":"web1","ts":1700000000})
    }

    #[test]
    fn trigger_event_shape() {
        let e = event(&note(), Some("R0UTING"));
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
        let e = event(&n, None);
        assert_eq!(e["event_action"], "resolve");
        assert_eq!(e["dedup_key"], "u-1:heartbeat");
        assert!(e.get("routing_key").is_none());
    }

    #[test]
    fn odd_notifications() {
        let e = event(
            &json!({"uuid":"u","id":"i","severity":"PANIC","message":"m"}),
            None,
        );
        assert_eq!(e["dedup_key"], "u:i");
        assert_eq!(e["payload"]["severity"], "critical");
        assert_eq!(e["payload"]["source"], "u");
        assert!(e["payload"].get("timestamp").is_none());
        let long = json!({"uuid":"u","source":"s".repeat(400),"message":"m".repeat(5000)});
        let e = event(&long, None);
        assert_eq!(
            e["dedup_key"].as_str().unwrap().chars().count(),
            DEDUP_KEY_MAX
        );
        assert_eq!(
            e["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_MAX
        );
    }

    /// What the listener received: request line, headers, body.
    type Received = (String, Vec<String>, Vec<u8>);

    /// A local HTTP server for one request.
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
                headers.push(line.trim_end().to_string());
            }
            let length: usize = headers
                .iter()
                .find_map(|h| h.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let mut s = r.into_inner();
            write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}").unwrap();
            (request_line.trim_end().to_string(), headers, body)
        });
        (port, h)
    }

    fn config(port: u16) -> WebhookConfig {
        WebhookConfig {
            url: HttpUrl::parse(&format!("http://127.0.0.1:{port}/v2/enqueue")).unwrap(),
            key: Some("K3Y".into()),
            severities: SeveritySet::from_env(&Env::from_pairs([]), "X", "all").unwrap(),
        }
    }

    #[test]
    fn posts_the_event_to_a_listener() {
        let (port, server) = listener("202 Accepted");
        send(&config(port), &note(), Duration::from_secs(10)).unwrap();
        let (request_line, headers, body) = server.join().unwrap();
        assert_eq!(request_line, "POST /v2/enqueue HTTP/1.1");
        assert!(
            headers.contains(&"Content-Type: application/json".to_string()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&format!("Host: 127.0.0.1:{port}")),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"Connection: close".to_string()),
            "{headers:?}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, event(&note(), Some("K3Y")));
    }

    #[test]
    fn status_500_is_a_failure() {
        let (port, server) = listener("500 Internal Server Error");
        let err = send(&config(port), &note(), Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("500"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn no_listener_is_a_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = send(&config(port), &note(), Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
