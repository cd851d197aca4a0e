//! The router's authorisation files (PROTOCOL.md, "Security"): parsing them,
//! and noticing when they change.
//!
//! One entry a line; blank lines and lines whose first non-blank character
//! is `#` are ignored, but a `#` elsewhere is part of the entry, since Z85
//! keys may contain it. `VIGIL_CLIENT_KEYS` lines are `UUID PUBLIC_KEY`; the
//! other files' lines are `PUBLIC_KEY [NAME...]`. Parsing is pure (text in,
//! entries or a line-numbered reason out) so it is tested without files;
//! [`Watched`] adds the file and its change detection (mtime and size, as
//! polled by the ZAP thread, plus an explicit re-read on SIGHUP).

use crate::curve::PublicKey;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use uuid::Uuid;

/// The entries of a client key file: which UUID each key may speak as.
pub type ClientKeys = HashMap<PublicKey, Uuid>;

/// The entries of a key list (deny, back end, sinks): each key and its
/// optional name (kept for the logs).
pub type KeyList = HashMap<PublicKey, Option<String>>;

/// The meaningful lines of a file, numbered from 1.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn key_at(line: usize, text: &str) -> Result<PublicKey, String> {
    PublicKey::from_z85(text).map_err(|e| format!("line {line}: bad public key: {e}"))
}

/// Parses `UUID PUBLIC_KEY` lines. A key listed twice, or a UUID listed
/// twice, is an error: one key speaks as one UUID, and one UUID has one key
/// (so a connection with another key can never take over its route).
pub fn parse_client_keys(text: &str) -> Result<ClientKeys, String> {
    let mut keys = ClientKeys::new();
    let mut uuids = HashMap::new();
    for (line, entry) in entries(text) {
        let mut words = entry.split_whitespace();
        let (Some(uuid), Some(key), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("line {line}: expected `UUID PUBLIC_KEY`"));
        };
        let uuid = crate::protocol::parse_uuid(uuid)
            .ok_or_else(|| format!("line {line}: {uuid:?} is not a UUID"))?;
        let key = key_at(line, key)?;
        if let Some(first) = uuids.insert(uuid, line) {
            return Err(format!(
                "line {line}: UUID {uuid} is already on line {first}"
            ));
        }
        if keys.insert(key, uuid).is_some() {
            return Err(format!("line {line}: key {key} is listed twice"));
        }
    }
    Ok(keys)
}

/// Parses `PUBLIC_KEY [NAME]` lines (the name is the rest of the line).
pub fn parse_key_list(text: &str) -> Result<KeyList, String> {
    let mut keys = KeyList::new();
    for (line, entry) in entries(text) {
        let (key, name) = match entry.split_once(char::is_whitespace) {
            Some((key, name)) => (key, Some(name.trim().to_string())),
            None => (entry, None),
        };
        keys.insert(key_at(line, key)?, name);
    }
    Ok(keys)
}

/// A key file, its variable, and what it looked like when last read.
#[derive(Debug, Clone)]
pub struct Watched<T> {
    pub var: &'static str,
    pub path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Watched<T> {
    pub fn new(var: &'static str, path: &Path, parse: fn(&str) -> Result<T, String>) -> Self {
        Watched {
            var,
            path: path.to_path_buf(),
            stamp: None,
            parse,
        }
    }

    fn stamp(&self) -> Result<(SystemTime, u64), String> {
        let meta = fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok((mtime, meta.len()))
    }

    /// Reads and parses the file, whatever its stamp.
    pub fn read(&mut self) -> Result<T, String> {
        let stamp = self.stamp()?;
        let text =
            fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let parsed = (self.parse)(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.stamp = Some(stamp);
        Ok(parsed)
    }

    /// Re-reads the file if its mtime or size changed since the last good
    /// read: `Ok(None)` when unchanged. A failed read leaves the stamp, so
    /// the error is reported again on the next change, not on every poll.
    pub fn poll(&mut self) -> Result<Option<T>, String> {
        let stamp = self.stamp()?;
        if self.stamp == Some(stamp) {
            return Ok(None);
        }
        let result = self.read().map(Some);
        if result.is_err() {
            self.stamp = Some(stamp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::KeyPair;

    fn key() -> PublicKey {
        KeyPair::generate().unwrap().public
    }

    #[test]
    fn client_lines_comments_and_blanks() {
        let (a, b) = (key(), key());
        let (ua, ub) = (Uuid::new_v4(), Uuid::new_v4());
        let text = format!(
            "# fleet\n\n  {ua} {a}\n   # indented comment\n{} {b}  \n",
            ub.to_string().to_uppercase()
        );
        let keys = parse_client_keys(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[&a], ua);
        assert_eq!(keys[&b], ub);
    }

    #[test]
    fn a_hash_inside_an_entry_is_part_of_it() {
        // Z85 has '#': a key containing it must not be cut there.
        let pair = loop {
            let k = key();
            if k.to_z85()[1..].contains('#') {
                break k;
            }
        };
        let text = format!("{} {pair}\n", Uuid::new_v4());
        assert_eq!(parse_client_keys(&text).unwrap().len(), 1);
        let list = parse_key_list(&format!("{pair} the # sink\n")).unwrap();
        assert_eq!(list[&pair].as_deref(), Some("the # sink"));
    }

    #[test]
    fn client_errors_name_the_line() {
        let a = key();
        let u = Uuid::new_v4();
        let cases = [
            (format!("{u}\n"), "line 1"),
            (format!("# c\nnot-a-uuid {a}\n"), "line 2"),
            (format!("{u} short\n"), "line 1"),
            (format!("{u} {a}\n{} {a}\n", Uuid::new_v4()), "line 2"),
            (format!("{u} {a}\n{u} {}\n", key()), "line 2"),
            (format!("{u} {a} extra\n"), "line 1"),
        ];
        for (text, line) in cases {
            let err = parse_client_keys(&text).unwrap_err();
            assert!(err.contains(line), "{text:?}: {err}");
        }
    }

    #[test]
    fn key_lists_take_an_optional_name() {
        let (a, b) = (key(), key());
        let list = parse_key_list(&format!("{a}\n{b}  scheduler on db1\n")).unwrap();
        assert_eq!(list[&a], None);
        assert_eq!(list[&b].as_deref(), Some("scheduler on db1"));
        assert!(parse_key_list("nonsense\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn watched_files_report_changes_once() {
        let dir = std::env::temp_dir().join(format!("vigil-keyfiles-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        let (a, b) = (key(), key());
        fs::write(&path, format!("{a}\n")).unwrap();
        let mut w = Watched::new("VIGIL_SINK_KEYS", &path, parse_key_list);
        assert_eq!(w.read().unwrap().len(), 1);
        assert!(w.poll().unwrap().is_none());
        fs::write(&path, format!("{a}\n{b}\n")).unwrap();
        assert_eq!(w.poll().unwrap().unwrap().len(), 2);
        fs::write(&path, "garbage line that is long\n").unwrap();
        assert!(w.poll().is_err());
        assert!(
            w.poll().unwrap().is_none(),
            "a bad version is reported once"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
