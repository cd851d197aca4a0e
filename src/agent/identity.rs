//! The agent's UUID: minted once, kept in `VIGIL_STATE_DIR/identity.json`
//! beside the identity of the machine it was minted on.
//!
//! The UUID is the agent's routing id at every router, so two live agents
//! sharing one steal each other's route. A VM cloned from an image carries
//! its parent's state directory; the machine id (`/etc/machine-id`) or the
//! hostname then differ from what was recorded, and a fresh UUID is minted
//! with a log line. A file that cannot be read or parsed is an error, never
//! silently replaced: replacing it would turn this host into a new client
//! and orphan its history.

use crate::protocol::{parse_uuid, uuid_text};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const FILE_NAME: &str = "identity.json";

/// What the identity file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uuid: String,
    pub machine_id: String,
    pub hostname: String,
}

/// Why the identity could not be read or kept; each names its file.
#[derive(Debug)]
pub enum IdentityError {
    MachineId {
        path: PathBuf,
        source: std::io::Error,
    },
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is there but unreadable: never replaced silently, since a
    /// new UUID would make this host a stranger to the back end.
    Corrupt { path: PathBuf, why: ParseError },
    Write {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::MachineId { path, source } => write!(f, "{}: {source}", path.display()),
            IdentityError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            IdentityError::Corrupt { path, why } => write!(
                f,
                "{}: {why}; refusing to replace it (move it away to mint a new UUID)",
                path.display()
            ),
            IdentityError::Write { path, what, source } => {
                write!(f, "{}: cannot {what}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// What is wrong with an identity file's content.
#[derive(Debug)]
pub enum ParseError {
    NotJson(serde_json::Error),
    NotAUuid(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not a valid identity file: {e}"),
            ParseError::NotAUuid(uuid) => write!(f, "uuid {uuid:?} is not a UUID"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The machine this process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub machine_id: String,
    pub hostname: String,
}

impl Machine {
    /// Reads the machine id from `machine_id_file`; a missing file gives an
    /// empty id (containers often lack one), so the hostname alone decides.
    pub fn read(machine_id_file: &Path, hostname: &str) -> Result<Machine, IdentityError> {
        let machine_id = match std::fs::read_to_string(machine_id_file) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(IdentityError::MachineId {
                    path: machine_id_file.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Machine {
            machine_id,
            hostname: hostname.to_string(),
        })
    }
}

/// How [`load_or_create`] found the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Existing,
    FirstStart,
    MachineChanged,
}

/// Loads the identity kept in `state_dir`, minting (and durably writing) a
/// new one on first start or when the machine changed.
pub fn load_or_create(
    state_dir: &Path,
    machine: &Machine,
) -> Result<(Identity, Origin), IdentityError> {
    let path = state_dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored = parse(&bytes).map_err(|why| IdentityError::Corrupt {
                path: path.clone(),
                why,
            })?;
            if stored.machine_id == machine.machine_id && stored.hostname == machine.hostname {
                return Ok((stored, Origin::Existing));
            }
            let fresh = mint(machine);
            log::warn!(
                "machine identity changed (machine-id {:?} -> {:?}, hostname {:?} -> {:?}): \
                 this looks like a clone; replacing UUID {} with a new one, {}",
                stored.machine_id,
                machine.machine_id,
                stored.hostname,
                machine.hostname,
                stored.uuid,
                fresh.uuid
            );
            write(state_dir, &fresh)?;
            Ok((fresh, Origin::MachineChanged))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = mint(machine);
            write(state_dir, &fresh)?;
            log::info!(
                "first start: minted UUID {} in {}",
                fresh.uuid,
                path.display()
            );
            Ok((fresh, Origin::FirstStart))
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn mint(machine: &Machine) -> Identity {
    Identity {
        uuid: uuid_text(&Uuid::new_v4()),
        machine_id: machine.machine_id.clone(),
        hostname: machine.hostname.clone(),
    }
}

/// Parses and checks an identity file's content.
pub fn parse(bytes: &[u8]) -> Result<Identity, ParseError> {
    let identity: Identity = serde_json::from_slice(bytes).map_err(ParseError::NotJson)?;
    let uuid =
        parse_uuid(&identity.uuid).ok_or_else(|| ParseError::NotAUuid(identity.uuid.clone()))?;
    Ok(Identity {
        uuid: uuid_text(&uuid),
        ..identity
    })
}

/// Writes the file durably: a temporary file, fsynced, renamed over the
/// old one, then the directory fsynced, so a crash leaves either the old
/// identity or the new one, never half of one.
fn write(state_dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    std::fs::create_dir_all(state_dir).map_err(|source| IdentityError::Write {
        path: state_dir.to_path_buf(),
        what: "create",
        source,
    })?;
    let path = state_dir.join(FILE_NAME);
    let tmp: PathBuf = state_dir.join(format!("{FILE_NAME}.tmp"));
    let text = serde_json::to_vec_pretty(identity).expect("identity serializes");
    let fail = |what: &'static str, source: std::io::Error| IdentityError::Write {
        path: tmp.clone(),
        what,
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| fail("create", e))?;
    file.write_all(&text).map_err(|e| fail("write", e))?;
    file.write_all(b"\n").map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("fsync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
    sync_dir(state_dir);
    Ok(())
}

/// Makes a rename in `dir` durable. Failure is not fatal: some file systems
/// refuse to fsync a directory, and the data itself is already synced.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-identity-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn machine(id: &str) -> Machine {
        Machine {
            machine_id: id.into(),
            hostname: "h1".into(),
        }
    }

    #[test]
    fn minted_once_then_reused() {
        let dir = temp_dir("reuse");
        let (a, origin) = load_or_create(&dir, &machine("m1")).unwrap();
        assert_eq!(origin, Origin::FirstStart);
        let (b, origin) = load_or_create(&dir, &machine("m1")).unwrap();
        assert_eq!((a.uuid.clone(), origin), (b.uuid, Origin::Existing));
        let (c, origin) = load_or_create(&dir, &machine("m2")).unwrap();
        assert_eq!(origin, Origin::MachineChanged);
        assert_ne!(c.uuid, a.uuid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_and_kept() {
        let dir = temp_dir("corrupt");
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        let err = load_or_create(&dir, &machine("m1")).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("refusing to replace"), "{err}");
        assert_eq!(std::fs::read(dir.join(FILE_NAME)).unwrap(), b"{not json");
        std::fs::write(
            dir.join(FILE_NAME),
            br#"{"uuid":"x","machine_id":"","hostname":""}"#,
        )
        .unwrap();
        assert!(load_or_create(&dir, &machine("m1")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
