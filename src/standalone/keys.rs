//! The CURVE keys of a standalone system: every part gets its own key pair
//! under `VIGIL_DATA_DIR/keys`, and the router's key lists say who may use
//! which socket, so the one-command system runs the same secure path a
//! fleet does (PROTOCOL.md, Security).
//!
//! The pairs are made on first start and kept (a restart keeps every
//! identity). The lists are rewritten on each start from the pairs, and the
//! agent is enrolled the way an operator enrolls one: its
//! `vigil agent --print-key` line (which also mints its key) goes into the
//! client list.

use crate::curve::{KeyPair, PublicKey};
use crate::error::Error;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The back-end parts with a key of their own (each a client of the
/// router's back-end socket; the sinks also of its PUSH sockets).
const PARTS: [&str; 4] = ["sink", "scheduler", "web", "status"];

/// The key files of one standalone system.
pub struct Keys {
    dir: PathBuf,
    router: PublicKey,
}

impl Keys {
    /// Makes (or reuses) every part's pair and writes the back-end and
    /// sink lists. The client list comes from [`Keys::enroll`].
    pub fn prepare(data_dir: &Path) -> Result<Keys, Error> {
        let dir = data_dir.join("keys");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| setup(&dir, e))?;
        // An existing directory keeps its mode unless it is too open.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| setup(&dir, e))?;
        let pair = |name: &str| -> Result<KeyPair, Error> {
            let path = dir.join(format!("{name}.key"));
            KeyPair::read_or_create(&path).map_err(|e| Error::setup(path.display().to_string(), e))
        };
        let router = pair("router")?.public;
        let mut backend = String::new();
        for part in PARTS {
            backend.push_str(&format!("{} {part}\n", pair(part)?.public));
        }
        let sink = pair("sink")?.public;
        let keys = Keys { dir, router };
        keys.write_list("backend.keys", &backend)?;
        keys.write_list("sink.keys", &format!("{sink} sink\n"))?;
        Ok(keys)
    }

    /// Writes the client list from the agent's `UUID PUBLIC_KEY` line.
    pub fn enroll(&self, print_key_line: &str) -> Result<(), Error> {
        let line = print_key_line.trim();
        let valid = line.split_once(' ').is_some_and(|(uuid, key)| {
            uuid::Uuid::parse_str(uuid).is_ok() && PublicKey::from_z85(key).is_ok()
        });
        if !valid {
            return Err(Error::Runtime(format!(
                "vigil agent --print-key printed {line:?}, not `UUID PUBLIC_KEY`"
            )));
        }
        self.write_list("client.keys", &format!("{line}\n"))
    }

    /// The router's variables: its secret key and the three lists.
    pub fn router_env(&self) -> Vec<(String, String)> {
        vec![
            self.var("VIGIL_CURVE_KEY", "router.key"),
            self.var("VIGIL_CLIENT_KEYS", "client.keys"),
            self.var("VIGIL_BACKEND_KEYS", "backend.keys"),
            self.var("VIGIL_SINK_KEYS", "sink.keys"),
        ]
    }

    /// A back-end part's variables: its own secret key and the router's
    /// public one. `part` is one of [`PARTS`].
    pub fn part_env(&self, part: &str) -> Vec<(String, String)> {
        vec![
            self.var("VIGIL_CURVE_KEY", &format!("{part}.key")),
            self.router_key(),
        ]
    }

    /// The agent's: only the router's public key (its own pair lives in
    /// its state directory).
    pub fn router_key(&self) -> (String, String) {
        ("VIGIL_ROUTER_KEY".to_string(), self.router.to_z85())
    }

    fn var(&self, name: &str, file: &str) -> (String, String) {
        (name.to_string(), self.dir.join(file).display().to_string())
    }

    /// Replaces a list whole (a temporary file renamed over it), so the
    /// router never reads half of one.
    fn write_list(&self, name: &str, text: &str) -> Result<(), Error> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| setup(&path, e))
    }
}

fn setup(path: &Path, e: std::io::Error) -> Error {
    Error::setup(format!("standalone keys ({})", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-sa-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn pairs_are_made_once_and_listed() {
        let dir = scratch("once");
        let first = Keys::prepare(&dir).unwrap();
        let again = Keys::prepare(&dir).unwrap();
        assert_eq!(first.router, again.router, "a restart keeps the router key");
        let backend = fs::read_to_string(dir.join("keys/backend.keys")).unwrap();
        assert_eq!(backend.lines().count(), PARTS.len());
        let mode = fs::metadata(dir.join("keys")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let (var, value) = &first.part_env("web")[0];
        assert_eq!(
            (var.as_str(), value.ends_with("keys/web.key")),
            ("VIGIL_CURVE_KEY", true)
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn enrolling_takes_only_a_print_key_line() {
        let dir = scratch("enroll");
        let keys = Keys::prepare(&dir).unwrap();
        assert!(keys.enroll("no key here").is_err());
        let key = KeyPair::generate().unwrap().public;
        let line = format!("{} {key}", uuid::Uuid::new_v4());
        keys.enroll(&format!("{line}\n")).unwrap();
        let list = fs::read_to_string(dir.join("keys/client.keys")).unwrap();
        assert_eq!(list, format!("{line}\n"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
