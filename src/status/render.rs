//! The terminal tables of `vigil status`: pure text from a [`Snapshot`],
//! so the layout is tested without a store or a router.

use super::snapshot::{ClientRow, NotificationRow, PluginRow, RouterRow, Snapshot};
use serde_json::Value;

/// Widest a free-text cell (output, message) may be before it is cut.
const TEXT_WIDTH: usize = 70;

pub fn render(snapshot: &Snapshot) -> String {
    let now = snapshot.generated_at;
    let mut out = String::new();
    section(
        &mut out,
        &format!("CLIENTS ({})", snapshot.clients.len()),
        clients(&snapshot.clients, now),
    );
    section(
        &mut out,
        &format!("PLUGINS ({})", snapshot.plugins.len()),
        plugins(&snapshot.plugins, now),
    );
    section(
        &mut out,
        &format!("RECENT NOTIFICATIONS ({})", snapshot.notifications.len()),
        notifications(&snapshot.notifications, now),
    );
    section(
        &mut out,
        &format!("ROUTERS ({})", snapshot.routers.len()),
        routers(&snapshot.routers),
    );
    out
}

fn section(out: &mut String, title: &str, body: String) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(title);
    out.push('\n');
    out.push_str(&body);
}

fn clients(rows: &[ClientRow], now: f64) -> String {
    let body = rows
        .iter()
        .map(|c| {
            vec![
                text(c.hostname.as_deref()),
                c.uuid.clone(),
                c.state.to_uppercase(),
                ago(now, Some(c.last_seen)),
                ago(now, c.last_heartbeat),
                text(c.last_router.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "HOSTNAME",
            "UUID",
            "STATE",
            "LAST SEEN",
            "LAST HEARTBEAT",
            "ROUTER",
        ],
        body,
    )
}

fn plugins(rows: &[PluginRow], now: f64) -> String {
    let body = rows
        .iter()
        .map(|p| {
            vec![
                host(p.hostname.as_deref(), &p.uuid),
                p.plugin.clone(),
                p.state.clone(),
                ago(now, p.changed_at),
                ago(now, p.ts),
                cut(p.output.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    table(
        &[
            "HOSTNAME",
            "PLUGIN",
            "STATE",
            "SINCE",
            "LAST RESULT",
            "OUTPUT",
        ],
        body,
    )
}

fn notifications(rows: &[NotificationRow], now: f64) -> String {
    let body = rows
        .iter()
        .map(|n| {
            vec![
                ago(now, Some(n.created_at)),
                host(n.hostname.as_deref(), n.uuid.as_deref().unwrap_or("-")),
                n.severity.clone(),
                n.origin.clone(),
                n.state.clone(),
                cut(n.message.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    table(
        &["WHEN", "HOSTNAME", "SEVERITY", "ORIGIN", "STATE", "MESSAGE"],
        body,
    )
}

fn routers(rows: &[RouterRow]) -> String {
    let counter = |status: &Value, name: &str| match &status["counters"][name] {
        Value::Number(n) => n.to_string(),
        _ => "-".to_string(),
    };
    let body = rows
        .iter()
        .map(|r| match (&r.status, r.reachable) {
            (Some(s), true) if r.error.is_none() => vec![
                r.endpoint.clone(),
                s["router"].as_str().unwrap_or("?").to_string(),
                "up".to_string(),
                s["uptime_s"]
                    .as_u64()
                    .map_or("-".into(), |u| duration(u as f64)),
                s["clients"].as_u64().map_or("-".into(), |c| c.to_string()),
                counter(s, "received"),
                counter(s, "forwarded"),
                counter(s, "rejected"),
                counter(s, "delivered"),
                counter(s, "undeliverable"),
            ],
            _ => {
                let mut row = vec![r.endpoint.clone(), "-".into(), "unreachable".into()];
                row.extend(std::iter::repeat_n("-".to_string(), 7));
                row
            }
        })
        .collect();
    let mut out = table(
        &[
            "ENDPOINT",
            "NAME",
            "STATE",
            "UPTIME",
            "CLIENTS",
            "RECEIVED",
            "FORWARDED",
            "REJECTED",
            "DELIVERED",
            "UNDELIVERABLE",
        ],
        body,
    );
    out.push_str(&forwarded_by_type(rows));
    out
}

/// Messages each live router forwarded, per type: what is flowing.
fn forwarded_by_type(rows: &[RouterRow]) -> String {
    let by_type = |r: &RouterRow| -> Option<serde_json::Map<String, Value>> {
        r.status.as_ref()?["forwarded_by_type"].as_object().cloned()
    };
    let mut types: Vec<String> = rows
        .iter()
        .filter_map(by_type)
        .flat_map(|m| m.into_iter().map(|(k, _)| k))
        .collect();
    types.sort();
    types.dedup();
    if types.is_empty() {
        return String::new();
    }
    let body = rows
        .iter()
        .filter_map(|r| Some((r, by_type(r)?)))
        .map(|(r, counts)| {
            let mut row = vec![r.endpoint.clone()];
            row.extend(
                types
                    .iter()
                    .map(|t| counts.get(t).map_or("-".into(), |n| n.to_string())),
            );
            row
        })
        .collect();
    let upper: Vec<String> = types.iter().map(|t| t.to_uppercase()).collect();
    let mut headers = vec!["FORWARDED BY TYPE"];
    headers.extend(upper.iter().map(String::as_str));
    format!("\n{}", table(&headers, body))
}

/// Left-aligned columns separated by two spaces; "(none)" when empty.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "  (none)\n".to_string();
    }
    // Cells hold what clients sent (host names, plugin names): no escape
    // sequence or newline of theirs reaches the operator's terminal.
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| {
                    cell.chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

fn host(hostname: Option<&str>, uuid: &str) -> String {
    hostname
        .filter(|h| !h.is_empty())
        .unwrap_or(uuid)
        .to_string()
}

/// The first line of `text`, control characters replaced, cut to fit.
fn cut(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > TEXT_WIDTH {
        let kept: String = line.chars().take(TEXT_WIDTH - 1).collect();
        format!("{kept}…")
    } else {
        line
    }
}

/// "12s ago", "5m ago", "3h ago", "2d ago"; "-" for never.
pub fn ago(now: f64, at: Option<f64>) -> String {
    match at {
        None => "-".to_string(),
        Some(at) if at > now => "just now".to_string(),
        Some(at) => format!("{} ago", duration(now - at)),
    }
}

/// A duration as an operator reads it: `42s`, `5m`, `3h`, `2d` (also the
/// web view's).
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_say_none() {
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "  A    LONGER\n  xyz  1\n");
        assert_eq!(table(&["A"], vec![]), "  (none)\n");
    }

    #[test]
    fn client_text_cannot_drive_the_terminal() {
        let t = table(&["HOST"], vec![vec!["evil\x1b[2J\nhost".into()]]);
        assert_eq!(t, "  HOST\n  evil [2J host\n");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(ago(100.0, Some(88.0)), "12s ago");
        assert_eq!(ago(1000.0, Some(100.0)), "15m ago");
        assert_eq!(ago(100_000.0, Some(0.0)), "27h ago");
        assert_eq!(ago(1_000_000.0, Some(0.0)), "11d ago");
        assert_eq!(ago(1.0, None), "-");
        assert_eq!(ago(1.0, Some(2.0)), "just now");
    }

    #[test]
    fn output_is_one_line_and_cut() {
        assert_eq!(cut("DISK OK\nperf"), "DISK OK");
        assert_eq!(cut("a\tb"), "a b");
        let long = "x".repeat(100);
        assert_eq!(cut(&long).chars().count(), TEXT_WIDTH);
    }

    #[test]
    fn an_unreachable_router_says_so() {
        let rows = vec![RouterRow {
            endpoint: "tcp://10.0.0.1:5556".into(),
            reachable: false,
            status: None,
            error: Some("no reply".into()),
        }];
        let text = routers(&rows);
        assert!(
            text.contains("tcp://10.0.0.1:5556  -     unreachable"),
            "{text}"
        );
    }
}
