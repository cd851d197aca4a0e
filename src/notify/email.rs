//! The email for a notification, built with lettre's message builder
//! (which does the header encoding, the transfer encoding of the body and
//! the date), without I/O.
//!
//! Kept apart from the SMTP conversation so the message is tested on its
//! own. What is vigil's here is the content: the subject line, the readable
//! body with the notification as JSON at its end, and the headers that tell
//! robots (vacation responders) and scripts what the mail is.

use super::{field, field_text};
use lettre::message::header::{ContentType, HeaderName, HeaderValue, MIME_VERSION_1_0};
use lettre::message::Mailbox;
use lettre::Message;

/// The longest subject text before it is cut with an ellipsis.
const SUBJECT_MAX_CHARS: usize = 160;

/// The message as sent: headers, blank line, body, CRLF line ends.
pub fn compose(
    from: &str,
    to: &[String],
    domain: &str,
    notification: &serde_json::Value,
) -> Result<Vec<u8>, String> {
    let mailbox = |a: &str| -> Result<Mailbox, String> {
        a.parse().map_err(|e| format!("address {a:?}: {e}"))
    };
    let mut builder = Message::builder()
        .from(mailbox(from)?)
        .subject(subject(notification))
        .message_id(Some(format!("<{}@{}>", uuid::Uuid::new_v4(), domain)))
        .header(MIME_VERSION_1_0)
        .header(ContentType::TEXT_PLAIN)
        // RFC 3834: tells vacation responders not to answer a machine.
        .raw_header(header("Auto-Submitted", "auto-generated")?);
    for addr in to {
        builder = builder.to(mailbox(addr)?);
    }
    for (name, member) in [
        ("X-Vigil-UUID", "uuid"),
        ("X-Vigil-ID", "id"),
        ("X-Vigil-Severity", "severity"),
    ] {
        let value = one_line(&field_text(notification, member), 200);
        if !value.is_empty() && value.is_ascii() {
            builder = builder.raw_header(header(name, &value)?);
        }
    }
    let message = builder
        .body(body(notification))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    Ok(message.formatted())
}

fn header(name: &str, value: &str) -> Result<HeaderValue, String> {
    let name =
        HeaderName::new_from_ascii(name.to_string()).map_err(|e| format!("header {name}: {e}"))?;
    Ok(HeaderValue::new(name, value.to_string()))
}

/// `[vigil CRITICAL] host: message` (the message's first line, shortened);
/// a recovery says `RECOVERY` instead of the severity.
pub fn subject(notification: &serde_json::Value) -> String {
    let label = if notification.get("recovery").and_then(|v| v.as_bool()) == Some(true) {
        "RECOVERY".to_string()
    } else {
        super::config::normalise_severity(field(notification, "severity")).to_ascii_uppercase()
    };
    let host = field(notification, "hostname");
    let host = if host.is_empty() {
        field(notification, "uuid")
    } else {
        host
    };
    let message = field(notification, "message").lines().next().unwrap_or("");
    one_line(
        &format!("[vigil {label}] {host}: {message}"),
        SUBJECT_MAX_CHARS,
    )
}

/// The readable body: the message, the fields, then the notification as
/// JSON for scripts that parse mail.
fn body(notification: &serde_json::Value) -> String {
    let mut b = String::new();
    b.push_str(field(notification, "message"));
    b.push_str("\n\n");
    for (label, member) in [
        ("Severity", "severity"),
        ("Host", "hostname"),
        ("Source", "source"),
        ("Client", "uuid"),
        ("Notification", "id"),
        ("Time (unix)", "ts"),
    ] {
        let value = field_text(notification, member);
        if !value.is_empty() {
            b.push_str(&format!("{label}: {value}\n"));
        }
    }
    b.push_str("\n-- \nvigil notification (JSON):\n");
    b.push_str(&serde_json::to_string_pretty(notification).unwrap_or_default());
    b.push('\n');
    b
}

/// One line of at most `max` characters: control characters (CR, LF, tab)
/// become spaces, and a cut is marked with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() <= max {
        return clean.to_string();
    }
    let mut cut: String = clean.chars().take(max - 1).collect();
    cut.push('\u{2026}');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn note() -> serde_json::Value {
        json!({"type":"notification","uuid":"u-1","id":"n-1","severity":"critical","source":"disk",
               "message":"/var is 97% full\nsecond line","hostname":"web1","ts":1700000000})
    }

    fn text(n: &serde_json::Value) -> String {
        let m = compose(
            "vigil@h.example",
            &["a@x.example".into(), "b@x.example".into()],
            "h.example",
            n,
        )
        .unwrap();
        String::from_utf8(m).unwrap()
    }

    #[test]
    fn subject_shape() {
        assert_eq!(subject(&note()), "[vigil CRITICAL] web1: /var is 97% full");
        let mut n = note();
        n["recovery"] = json!(true);
        n["severity"] = json!("info");
        assert_eq!(subject(&n), "[vigil RECOVERY] web1: /var is 97% full");
        n["message"] = json!("x".repeat(500));
        assert_eq!(subject(&n).chars().count(), SUBJECT_MAX_CHARS);
        n["message"] = json!("a\rBcc: evil@example.org");
        assert_eq!(
            subject(&n),
            "[vigil RECOVERY] web1: a Bcc: evil@example.org"
        );
    }

    #[test]
    fn plain_message_headers() {
        let m = text(&note());
        let (head, body) = m.split_once("\r\n\r\n").unwrap();
        for line in [
            "From: vigil@h.example",
            "To: a@x.example, b@x.example",
            "Subject: [vigil CRITICAL] web1: /var is 97% full",
            "Content-Type: text/plain; charset=utf-8",
            "MIME-Version: 1.0",
            "Auto-Submitted: auto-generated",
            "X-Vigil-UUID: u-1",
            "X-Vigil-Severity: critical",
        ] {
            assert!(head.lines().any(|l| l == line), "{line} missing in\n{head}");
        }
        assert!(head.lines().any(|l| l.starts_with("Date: ")), "{head}");
        assert!(
            head.lines()
                .any(|l| l.starts_with("Message-ID: <") && l.ends_with("@h.example>")),
            "{head}"
        );
        assert!(
            body.starts_with("/var is 97% full\r\nsecond line\r\n"),
            "{body}"
        );
        // Every LF is part of a CRLF.
        assert_eq!(m.matches('\n').count(), m.matches("\r\n").count());
    }

    #[test]
    fn unicode_and_long_lines_are_encoded() {
        let mut n = note();
        n["message"] = json!(format!(
            "disque plein \u{e0} 97\u{a0}% \u{2603} {}",
            "y".repeat(2000)
        ));
        let m = text(&n);
        assert!(m.is_ascii(), "{m}");
        assert!(
            m.contains("Subject: [vigil CRITICAL] web1: disque plein =?utf-8?b?"),
            "{m}"
        );
        assert!(m.lines().all(|l| l.len() <= 998), "{m}");
    }

    #[test]
    fn a_bad_address_is_an_error() {
        assert!(compose("not an address", &["a@x".into()], "h", &note()).is_err());
    }
}
