//! Text as the pages show it: what clients sent, made harmless (askama
//! escapes HTML; this removes terminal escapes and control characters,
//! which a browser would show as garbage and a copy-paste would carry to a
//! terminal), and times as an operator reads them.

/// `text` without ANSI escape sequences and control characters (newlines
/// and tabs become spaces unless `keep_newlines`), cut to `max` chars.
pub fn clean(text: &str, keep_newlines: bool, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 4));
    let mut chars = text.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI `ESC [ params final`, OSC `ESC ] ... BEL|ESC \`, or a
            // two-character escape.
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
            continue;
        }
        let c = match c {
            '\n' if keep_newlines => '\n',
            '\n' | '\t' | '\r' => ' ',
            c if c.is_control() => continue,
            // Bidirectional overrides reorder what is shown.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => continue,
            c => c,
        };
        if count == max {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// The first line of `text`, cleaned, at most `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    clean(text.lines().next().unwrap_or(""), false, max)
}

/// "12s ago", "5m ago", "3h ago", "2d ago"; "never" for none.
pub fn ago(now: f64, at: Option<f64>) -> String {
    match at {
        None => "never".into(),
        Some(at) if at > now => "just now".into(),
        Some(at) => format!("{} ago", duration(now - at)),
    }
}

pub use crate::status::render::duration;

/// `2026-12-01 21:40:57 UTC`.
pub fn utc(at: f64) -> String {
    let secs = at.max(0.0) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `21:40` (UTC), for plot axes.
pub fn hh_mm(at: f64) -> String {
    let t = (at.max(0.0) as i64).rem_euclid(86_400);
    format!("{:02}:{:02}", t / 3600, t / 60 % 60)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's method.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(clean("\u{1b}[31mRED\u{1b}[0m ok", false, 100), "RED ok");
        assert_eq!(
            clean("a\u{1b}]0;title\u{7}b\u{1b}]8;;x\u{1b}\\c", false, 100),
            "abc"
        );
        assert_eq!(clean("a\nb\tc\u{0}d\u{202e}e", false, 100), "a b cde");
        assert_eq!(clean("a\nb", true, 100), "a\nb");
        assert_eq!(clean("abcdef", false, 3), "abc…");
        assert_eq!(first_line("one\ntwo", 10), "one");
    }

    #[test]
    fn times() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_625_257.0), "2025-12-01 21:40:57 UTC");
        assert_eq!(hh_mm(1_764_625_257.0), "21:40");
        assert_eq!(ago(100.0, Some(40.0)), "60s ago");
        assert_eq!(ago(100.0, None), "never");
    }
}
