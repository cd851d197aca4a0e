//! The `ready:` line every daemon prints once its sockets are bound, and
//! the one parser of it.
//!
//! Scripts, `vigil standalone`, the benchmarks and the integration tests
//! wait for this line to learn the ephemeral endpoints a daemon bound, so
//! its shape is a contract: `ready:` followed by space-separated
//! `key=value` words (a value may itself hold `=`, as `sinks=T=EP,T=EP`
//! does). Everything before the marker (a log prefix, standalone's
//! `[router]`) is ignored.

use std::collections::BTreeMap;

/// The log target of every daemon's `ready:` line. `vigil standalone`
/// keeps this target at `info` whatever `VIGIL_LOG` says.
pub const TARGET: &str = "vigil::ready";

/// What starts the fields of the line.
pub const MARKER: &str = "ready: ";

/// Whether `line` is a `ready:` line (of some daemon).
pub fn is_ready(line: &str) -> bool {
    line.contains(MARKER)
}

/// The `key=value` fields after the marker. `None` when `line` has no
/// marker or a word after it is not `key=value` (not a ready line then,
/// e.g. standalone's own sentence); a value is split at its first `=`.
pub fn parse(line: &str) -> Option<BTreeMap<String, String>> {
    let (_, rest) = line.split_once(MARKER)?;
    rest.split_whitespace()
        .map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The value of one field of a ready line.
pub fn field(line: &str, key: &str) -> Option<String> {
    parse(line)?.remove(key)
}

/// `type=endpoint,...` (the router's `sinks=` field) as pairs.
pub fn pairs(list: &str) -> Option<Vec<(String, String)>> {
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER: &str = "[2026-11-25T12:00:00Z INFO  vigil::ready] ready: \
        client=tcp://127.0.0.1:40001 backend=tcp://127.0.0.1:40002 \
        sinks=heartbeat=tcp://127.0.0.1:40003,stats=tcp://127.0.0.1:40004";

    #[test]
    fn fields_are_split_at_the_first_equals_sign() {
        let fields = parse(ROUTER).unwrap();
        assert_eq!(fields["client"], "tcp://127.0.0.1:40001");
        assert_eq!(fields["backend"], "tcp://127.0.0.1:40002");
        assert_eq!(
            fields["sinks"],
            "heartbeat=tcp://127.0.0.1:40003,stats=tcp://127.0.0.1:40004"
        );
        assert_eq!(
            field(ROUTER, "client").as_deref(),
            Some("tcp://127.0.0.1:40001")
        );
        assert_eq!(field(ROUTER, "nope"), None);
    }

    #[test]
    fn a_prefix_before_the_marker_is_ignored() {
        let line = "[router] ready: uuid=6f1c local=ipc:///tmp/a.sock";
        assert!(is_ready(line));
        assert_eq!(field(line, "uuid").as_deref(), Some("6f1c"));
    }

    #[test]
    fn lines_that_are_not_ready_lines() {
        assert_eq!(parse("no marker here"), None);
        assert_eq!(parse("ready: novalue"), None);
        assert!(!is_ready("[vigil::ready] starting"));
        assert_eq!(parse("standalone ready: every part is running. Try"), None);
        assert_eq!(parse("ready: ").map(|f| f.len()), Some(0));
    }

    #[test]
    fn sink_lists_are_pairs() {
        let sinks = field(ROUTER, "sinks").unwrap();
        assert_eq!(
            pairs(&sinks).unwrap(),
            vec![
                ("heartbeat".to_string(), "tcp://127.0.0.1:40003".to_string()),
                ("stats".to_string(), "tcp://127.0.0.1:40004".to_string()),
            ]
        );
        assert_eq!(pairs("heartbeat"), None);
        assert_eq!(pairs(""), Some(vec![]));
    }
}
