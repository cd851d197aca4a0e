//! Nagios plugin output: the first line's text, the long output, and the
//! performance data, per the Nagios plugin development guidelines.
//!
//! ```text
//! TEXT OUTPUT | OPTIONAL PERFDATA
//! LONG TEXT LINE 1
//! LONG TEXT LINE 2 | PERFDATA LINE 2
//! PERFDATA LINE 3
//! ```
//!
//! Perfdata is space-separated `'label'=value[UOM];[warn];[crit];[min];[max]`;
//! a label with spaces or `=` is single-quoted, `''` being a quote inside
//! it. `U` as value means the value could not be determined. Warn and crit
//! are ranges (`10`, `10:`, `~:10`, `@10:20`) and are kept as text.

/// One datum, as a `result` carries it.
pub use crate::protocol::Perfdata as Perf;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// The first line's text (before `|`).
    pub text: String,
    /// The following lines' text, perfdata removed.
    pub long_output: String,
    pub perfdata: Vec<Perf>,
}

/// Splits plugin stdout into text, long output and perfdata.
pub fn parse_output(stdout: &str) -> Output {
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or("");
    let (text, perf_first) = split_pipe(first);
    let mut perf_text = perf_first.unwrap_or("").to_string();
    let mut long = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf_text.push(' ');
            perf_text.push_str(line);
            continue;
        }
        match split_pipe(line) {
            (text, Some(perf)) => {
                long.push(text.trim_end());
                perf_text.push(' ');
                perf_text.push_str(perf);
                in_perf = true;
            }
            (text, None) => long.push(text),
        }
    }
    while long.last().is_some_and(|l| l.trim().is_empty()) {
        long.pop();
    }
    Output {
        text: text.trim().to_string(),
        long_output: long.join("\n"),
        perfdata: parse_perfdata(&perf_text),
    }
}

fn split_pipe(line: &str) -> (&str, Option<&str>) {
    match line.split_once('|') {
        Some((text, perf)) => (text, Some(perf)),
        None => (line, None),
    }
}

/// Parses a perfdata string; malformed items are skipped.
pub fn parse_perfdata(text: &str) -> Vec<Perf> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (item, tail) = next_item(rest);
        if let Some(perf) = item {
            out.push(perf);
        }
        rest = tail.trim_start();
    }
    out
}

/// Reads one item from the start of `s`; returns it (if well-formed) and
/// the text after it.
fn next_item(s: &str) -> (Option<Perf>, &str) {
    let (label, after_label) = if let Some(quoted) = s.strip_prefix('\'') {
        match read_quoted(quoted) {
            Some((label, after)) => (label, after),
            None => return (None, ""),
        }
    } else {
        let end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    };
    let Some(after_eq) = after_label.strip_prefix('=') else {
        // No `=`: skip to the next whitespace.
        let end = after_label
            .find(char::is_whitespace)
            .unwrap_or(after_label.len());
        return (None, &after_label[end..]);
    };
    let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
    let (data, tail) = (&after_eq[..end], &after_eq[end..]);
    if label.is_empty() {
        return (None, tail);
    }
    (parse_data(label, data), tail)
}

/// A quoted label: up to the closing `'`, with `''` meaning one quote.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if let Some(&(_, '\'')) = chars.peek() {
                chars.next();
                label.push('\'');
                continue;
            }
            return Some((label, &s[i + 1..]));
        }
        label.push(c);
    }
    None
}

fn parse_data(label: String, data: &str) -> Option<Perf> {
    let mut fields = data.split(';');
    let first = fields.next().unwrap_or("");
    let (value, unit) = if first == "U" {
        (None, None)
    } else {
        let end = first
            .find(|c: char| !(c.is_ascii_digit() || "+-.,eE".contains(c)))
            .unwrap_or(first.len());
        // `e`/`E` only count as an exponent if digits follow; otherwise
        // they start a unit (none of the guideline units does).
        let number = first[..end].replace(',', ".");
        let value: f64 = number.parse().ok()?;
        let unit = &first[end..];
        (Some(value), (!unit.is_empty()).then(|| unit.to_string()))
    };
    let mut text = || {
        fields
            .next()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let warn = text();
    let crit = text();
    let min = text().and_then(|v| v.replace(',', ".").parse().ok());
    let max = text().and_then(|v| v.replace(',', ".").parse().ok());
    Some(Perf {
        label,
        value,
        unit,
        warn,
        crit,
        min,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perf(label: &str, value: Option<f64>, unit: Option<&str>) -> Perf {
        Perf {
            label: label.into(),
            value,
            unit: unit.map(str::to_string),
            warn: None,
            crit: None,
            min: None,
            max: None,
        }
    }

    #[test]
    fn single_line_with_full_perfdata() {
        let out =
            parse_output("DISK OK - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968\n");
        assert_eq!(out.text, "DISK OK - free space: / 3326 MB (56%)");
        assert_eq!(out.long_output, "");
        assert_eq!(
            out.perfdata,
            vec![Perf {
                warn: Some("5948".into()),
                crit: Some("5958".into()),
                min: Some(0.0),
                max: Some(5968.0),
                ..perf("/", Some(2643.0), Some("MB"))
            }]
        );
    }

    #[test]
    fn multi_line_perfdata_after_pipe_on_later_lines() {
        let text = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                    / 15272 MB (77%);\n\
                    /boot 68 MB (69%);\n\
                    /home 69357 MB (27%);\n\
                    /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                    /home=69357MB;253404;253409;0;253414\n\
                    /var/log=818MB;970;975;0;980\n";
        let out = parse_output(text);
        assert_eq!(out.text, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            out.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        let labels: Vec<_> = out.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert_eq!(out.perfdata[3].value, Some(818.0));
    }

    #[test]
    fn quoted_labels_units_ranges_and_unknown() {
        let p = parse_perfdata(
            "'in use'=5% 'it''s'=1s;@10:20;~:30 time=0.003s;;;0 c=12c U=U x 'open y=3 ",
        );
        assert_eq!(p[0], perf("in use", Some(5.0), Some("%")));
        assert_eq!(
            p[1],
            Perf {
                warn: Some("@10:20".into()),
                crit: Some("~:30".into()),
                ..perf("it's", Some(1.0), Some("s"))
            }
        );
        assert_eq!(
            p[2],
            Perf {
                min: Some(0.0),
                ..perf("time", Some(0.003), Some("s"))
            }
        );
        assert_eq!(p[3], perf("c", Some(12.0), Some("c")));
        assert_eq!(p[4], perf("U", None, None));
        // `x` has no `=`, the unterminated quote eats the rest: both skipped.
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn negative_and_comma_decimals_and_garbage() {
        let p = parse_perfdata("t=-3.5C;;;-10;50 r=1,5 bad=abc");
        assert_eq!(
            p[0],
            Perf {
                min: Some(-10.0),
                max: Some(50.0),
                ..perf("t", Some(-3.5), Some("C"))
            }
        );
        assert_eq!(p[1], perf("r", Some(1.5), None));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn no_output_at_all() {
        assert_eq!(parse_output(""), Output::default());
    }
}
