//! Graphite plaintext lines: `PREFIX.PART1.PART2... VALUE TS\n`.
//!
//! Names arrive from clients (host names, plugin names, perfdata labels,
//! metric names), so every path segment is sanitised: anything but
//! `[A-Za-z0-9_-]` becomes `_`, which keeps a hostile name from adding
//! fields to the line (space, newline) or creating directories on the carbon
//! host (`/`, `..`).
//!
//! Dots are Graphite's path separator, and the rule for them is:
//! - the prefix and the **last** part (the metric name, e.g. a stats
//!   metric `cpu.user` or a perfdata label) may be dotted: each dot
//!   separates path segments, and empty segments (`a..b`, a leading or
//!   trailing dot) are dropped;
//! - every other part (the host name, the plugin name) is exactly one
//!   segment: its dots become `_`, so `web1.example.org` stays one level
//!   (`vigil.web1_example_org.load.1`) and wildcards like
//!   `vigil.*.load.1` keep working whatever the host names are.

/// One plaintext line, or `None` when the value is not finite (NaN and
/// infinities have no meaning to carbon) or there is no metric name.
pub fn plaintext(prefix: &str, parts: &[&str], value: f64, ts: i64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let (metric, names) = parts.split_last()?;
    let metric = dotted(metric);
    if metric.is_empty() {
        return None;
    }
    let mut path = dotted(prefix);
    for name in names {
        push_segment(&mut path, &segment(name));
    }
    push_segment(&mut path, &metric);
    Some(format!("{path} {} {ts}\n", number(value)))
}

/// One path segment: every character outside `[A-Za-z0-9_-]` (dots
/// included) becomes `_`; an empty name becomes `_` so the path keeps its
/// depth.
pub fn segment(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.chars().map(clean_char).collect()
}

/// A dotted name: each segment sanitised, empty segments dropped.
pub fn dotted(name: &str) -> String {
    name.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().map(clean_char).collect::<String>())
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether `name` is already a clean dotted name (for checking the
/// configured prefix rather than silently rewriting it).
pub fn is_clean_dotted(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|s| !s.is_empty() && s.chars().all(|c| clean_char(c) == c))
}

fn clean_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
        c
    } else {
        '_'
    }
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(segment);
}

/// The value in plain decimal (Rust's `Display` for `f64` never uses an
/// exponent, and integers print without `.0`), which carbon parses.
fn number(value: f64) -> String {
    if value == 0.0 {
        // Also turns -0 into 0.
        return "0".to_string();
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line() {
        assert_eq!(
            plaintext("vigil", &["web1", "load.1"], 0.25, 1_700_000_000).as_deref(),
            Some("vigil.web1.load.1 0.25 1700000000\n")
        );
        assert_eq!(
            plaintext("vigil", &["h", "m"], 3.0, 5).as_deref(),
            Some("vigil.h.m 3 5\n")
        );
        assert_eq!(
            plaintext("vigil", &["h", "m"], -0.0, 5).as_deref(),
            Some("vigil.h.m 0 5\n")
        );
    }

    #[test]
    fn host_dots_stay_one_level_metric_dots_separate() {
        assert_eq!(
            plaintext(
                "vigil.prod",
                &["web1.example.org", "check_disk", "/var.used"],
                12.5,
                7
            )
            .as_deref(),
            Some("vigil.prod.web1_example_org.check_disk._var.used 12.5 7\n")
        );
    }

    #[test]
    fn hostile_names_cannot_add_fields_or_lines() {
        let l = plaintext("vigil", &["a b\nvigil.x 1 2", "m\n9 9"], 1.0, 2).unwrap();
        assert_eq!(l, "vigil.a_b_vigil_x_1_2.m_9_9 1 2\n");
        assert_eq!(l.matches('\n').count(), 1);
        assert_eq!(l.split(' ').count(), 3);
        assert_eq!(
            plaintext("vigil", &["../..", "../../etc"], 1.0, 2).as_deref(),
            Some("vigil._____._._etc 1 2\n")
        );
        assert_eq!(
            plaintext("vigil", &["h\u{e9}", "\u{2603}"], 1.0, 2).as_deref(),
            Some("vigil.h_._ 1 2\n")
        );
    }

    #[test]
    fn empty_segments() {
        assert_eq!(
            plaintext("vigil", &["", "..a..b.."], 1.0, 2).as_deref(),
            Some("vigil._.a.b 1 2\n")
        );
        assert_eq!(plaintext("vigil", &["h", "..."], 1.0, 2), None);
        assert_eq!(plaintext("vigil", &[], 1.0, 2), None);
        assert_eq!(
            plaintext("", &["h", "m"], 1.0, 2).as_deref(),
            Some("h.m 1 2\n")
        );
    }

    #[test]
    fn non_finite_values_are_refused() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(plaintext("vigil", &["h", "m"], v, 1), None);
        }
    }

    #[test]
    fn big_and_small_numbers_have_no_exponent() {
        let l = plaintext("p", &["m"], 1e21, 1).unwrap();
        assert_eq!(l, format!("p.m 1{} 1\n", "0".repeat(21)));
        let l = plaintext("p", &["m"], 1.5e-7, 1).unwrap();
        assert_eq!(l, "p.m 0.00000015 1\n");
    }

    #[test]
    fn prefix_check() {
        assert!(is_clean_dotted("vigil.prod-1"));
        assert!(!is_clean_dotted("vigil..prod"));
        assert!(!is_clean_dotted("vigil prod"));
        assert!(!is_clean_dotted(".vigil"));
    }
}
