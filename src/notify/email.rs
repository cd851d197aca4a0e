//! Composing the email for a notification (RFC 5322 / MIME), without I/O.
//!
//! Kept apart from the SMTP conversation so the message text is tested
//! byte for byte. The body is 7-bit text when the notification is plain
//! ASCII with short lines, otherwise base64 (always valid, whatever a client
//! put in its message); a non-ASCII subject becomes RFC 2047 encoded words.
//! Line ends are CRLF throughout; dot-stuffing is the SMTP layer's job.

use super::{field, field_text};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest subject text before it is cut with an ellipsis.
const SUBJECT_MAX_CHARS: usize = 160;

/// RFC 5322's hard limit on a line, without its CRLF.
const LINE_MAX: usize = 998;

/// The whole message: headers, blank line, body, each line ending in CRLF.
pub fn compose(
    from: &str,
    to: &[String],
    domain: &str,
    notification: &serde_json::Value,
    now: SystemTime,
) -> String {
    let body = body(notification);
    let (encoding, body) = encode_body(&body);
    let mut m = String::new();
    let mut header = |name: &str, value: &str| {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(value);
        m.push_str("\r\n");
    };
    header("From", from);
    header("To", &to.join(", "));
    header("Subject", &encode_header(&subject(notification)));
    header("Date", &rfc5322_date(now));
    header(
        "Message-ID",
        &format!("<{}@{}>", uuid::Uuid::new_v4(), domain),
    );
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=utf-8");
    header("Content-Transfer-Encoding", encoding);
    // RFC 3834: tells vacation responders not to answer a machine.
    header("Auto-Submitted", "auto-generated");
    for (name, member) in [
        ("X-Vigil-UUID", "uuid"),
        ("X-Vigil-ID", "id"),
        ("X-Vigil-Severity", "severity"),
    ] {
        let value = one_line(&field_text(notification, member), 200);
        if !value.is_empty() && value.is_ascii() {
            header(name, &value);
        }
    }
    m.push_str("\r\n");
    m.push_str(&body);
    m
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

/// Picks the transfer encoding and returns the body in it, CRLF-terminated.
fn encode_body(body: &str) -> (&'static str, String) {
    let lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let plain = body.is_ascii()
        && lines
            .iter()
            .all(|l| l.len() <= LINE_MAX && !l.contains('\r') && !l.contains('\0'));
    if plain {
        let mut out = lines.join("\r\n");
        if !out.ends_with("\r\n") {
            out.push_str("\r\n");
        }
        return ("7bit", out);
    }
    let encoded = base64(body.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push_str("\r\n");
    }
    ("base64", out)
}

/// The header value as is when it is ASCII, else RFC 2047 `B` encoded words
/// of at most 75 characters, folded onto continuation lines.
fn encode_header(value: &str) -> String {
    if value.is_ascii() {
        return value.to_string();
    }
    let mut words = Vec::new();
    let mut start = 0;
    // 36 bytes of UTF-8 become 48 base64 characters: 60 with the wrapper,
    // which leaves room for the header name on the first line.
    while start < value.len() {
        let mut end = (start + 36).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?UTF-8?B?{}?=",
            base64(&value.as_bytes()[start..end])
        ));
        start = end;
    }
    words.join("\r\n ")
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

/// `Wed, 25 Nov 2026 14:37:13 +0000`.
pub fn rfc5322_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month 1-12, day 1-31).
pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
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

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn note() -> serde_json::Value {
        json!({"type":"notification","uuid":"u-1","id":"n-1","severity":"critical","source":"disk",
               "message":"/var is 97% full\nsecond line","hostname":"web1","ts":1700000000})
    }

    #[test]
    fn base64_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc5322_date(t), "Tue, 14 Nov 2023 22:13:20 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
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
    fn plain_message_text() {
        let m = compose(
            "vigil@h",
            &["a@x".into(), "b@x".into()],
            "h",
            &note(),
            UNIX_EPOCH,
        );
        let (head, body) = m.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("From: vigil@h\r\nTo: a@x, b@x\r\nSubject: [vigil CRITICAL] web1: /var is 97% full\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <"), "{head}");
        assert!(head.contains("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"), "{head}");
        assert!(
            body.starts_with(
                "/var is 97% full\r\nsecond line\r\n\r\nSeverity: critical\r\nHost: web1\r\n"
            ),
            "{body}"
        );
        assert!(m.ends_with("}\r\n"));
        // Every LF is part of a CRLF.
        assert_eq!(m.matches('\n').count(), m.matches("\r\n").count());
    }

    #[test]
    fn unicode_goes_base64_and_encoded_words() {
        let mut n = note();
        n["message"] = json!("disque plein \u{e0} 97\u{a0}% \u{2603}");
        let m = compose("vigil@h", &["a@x".into()], "h", &n, UNIX_EPOCH);
        assert!(m.is_ascii());
        assert!(m.contains("Subject: =?UTF-8?B?"), "{m}");
        assert!(m.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(m.lines().all(|l| l.len() <= 78), "{m}");
    }

    #[test]
    fn long_lines_go_base64() {
        let mut n = note();
        n["message"] = json!("y".repeat(5000));
        let m = compose("vigil@h", &["a@x".into()], "h", &n, UNIX_EPOCH);
        assert!(m.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(m.lines().all(|l| l.len() <= 998));
    }
}
