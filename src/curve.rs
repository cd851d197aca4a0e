//! CurveZMQ keys: the files they live in, and applying them to sockets.
//!
//! Every part uses this one module for its keys (PROTOCOL.md, "Security"):
//! `vigil keygen PATH` writes a secret key file (one line of Z85, mode 0600)
//! and `PATH.pub`; a process reads its own secret key from the file that
//! `VIGIL_CURVE_KEY` names and the routers' public key from
//! `VIGIL_ROUTER_KEY`. A secret key file that group or others can read is
//! refused, as ssh refuses such keys: the key is then not secret.
//!
//! CURVE is never optional once keys are configured: [`require_curve`]
//! fails closed when libzmq was built without it, so a misbuilt binary can
//! never fall back to plaintext.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Env};

/// The variable naming this process's own secret key file.
pub const CURVE_KEY_VAR: &str = "VIGIL_CURVE_KEY";
/// The variable holding the routers' public key (Z85).
pub const ROUTER_KEY_VAR: &str = "VIGIL_ROUTER_KEY";

/// A 32-byte CURVE public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 32-byte CURVE secret key, with its public half. `Debug` never shows
/// the secret.
#[derive(Clone)]
pub struct KeyPair {
    pub public: PublicKey,
    secret: [u8; 32],
}

/// Why a key could not be made, read or used.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The secret key file is readable by group or others.
    Exposed { path: PathBuf, mode: u32 },
    /// The text is not a 40-character Z85 key.
    Malformed { what: String, reason: String },
    /// The file already exists (keygen never overwrites a key).
    Exists(PathBuf),
    /// libzmq was built without CURVE.
    NoCurve,
    /// libzmq refused to make or set a key.
    Zmq {
        doing: &'static str,
        source: zmq::Error,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            KeyError::Exposed { path, mode } => write!(
                f,
                "{}: secret key is readable by group or others (mode {:04o}); chmod 600 it",
                path.display(),
                mode & 0o7777
            ),
            KeyError::Malformed { what, reason } => write!(f, "{what}: {reason}"),
            KeyError::Exists(path) => {
                write!(
                    f,
                    "{}: already exists; not overwriting a key",
                    path.display()
                )
            }
            KeyError::NoCurve => write!(
                f,
                "this vigil was built without CURVE support in libzmq; refusing to run unencrypted"
            ),
            KeyError::Zmq { doing, source } => write!(f, "{doing}: {source}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl PublicKey {
    /// Parses a Z85 public key (40 characters).
    pub fn from_z85(text: &str) -> Result<PublicKey, String> {
        decode_key(text.trim()).map(PublicKey)
    }

    pub fn to_z85(&self) -> String {
        encode_key(&self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// Equal when the secrets are (configs compare their keys in tests).
impl PartialEq for KeyPair {
    fn eq(&self, other: &KeyPair) -> bool {
        self.secret == other.secret
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair {{ public: {}, secret: <hidden> }}", self.public)
    }
}

impl KeyPair {
    /// A fresh key pair from libzmq (libsodium's random generator).
    pub fn generate() -> Result<KeyPair, KeyError> {
        require_curve()?;
        let pair = zmq::CurveKeyPair::new().map_err(|source| KeyError::Zmq {
            doing: "generating a CURVE key pair",
            source,
        })?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    /// The key pair whose secret half is `secret` (the public half is
    /// computed from it, so a key file holds just the secret).
    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        let mut public = [0u8; 32];
        // SAFETY: both buffers are 32 bytes, as crypto_scalarmult_base needs.
        unsafe {
            libsodium_sys::crypto_scalarmult_base(public.as_mut_ptr(), secret.as_ptr());
        }
        KeyPair {
            public: PublicKey(public),
            secret,
        }
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Reads a secret key file: one line of Z85, not readable by group or
    /// others.
    pub fn read(path: &Path) -> Result<KeyPair, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let secret = decode_key(text.trim()).map_err(|reason| KeyError::Malformed {
            what: path.display().to_string(),
            reason,
        })?;
        Ok(KeyPair::from_secret(secret))
    }

    /// Writes the secret key to `path` (mode 0600, never overwriting) and
    /// the public key to `PATH.pub` (mode 0644).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        write_new(path, 0o600, &encode_key(&self.secret))?;
        write_new(&public_path(path), 0o644, &self.public.to_z85())
    }

    /// The key in `path` if it exists, else a new one written there: how
    /// the agent and `vigil standalone` mint their keys on first start.
    pub fn read_or_create(path: &Path) -> Result<KeyPair, KeyError> {
        if path.exists() {
            return KeyPair::read(path);
        }
        let pair = KeyPair::generate()?;
        pair.write(path)?;
        Ok(pair)
    }
}

/// `PATH.pub`, where keygen puts the public half of `PATH`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

fn write_new(path: &Path, mode: u32, line: &str) -> Result<(), KeyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => KeyError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    writeln!(file, "{line}")
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn encode_key(key: &[u8; 32]) -> String {
    // 32 bytes is a multiple of 4, the only input z85_encode refuses.
    zmq::z85_encode(key).unwrap_or_default()
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!(
            "expected a 40-character Z85 key, got {} characters",
            text.len()
        ));
    }
    // The decoder does not reject every character outside the alphabet.
    const Z85: &str =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if let Some(c) = text.chars().find(|c| !Z85.contains(*c)) {
        return Err(format!("{c:?} is not a Z85 character"));
    }
    let bytes = zmq::z85_decode(text).map_err(|_| "not valid Z85".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "not a 32-byte key".to_string())
}

/// Fails unless libzmq has CURVE: called whenever keys are configured.
pub fn require_curve() -> Result<(), KeyError> {
    match zmq::has("curve") {
        Some(true) => Ok(()),
        _ => Err(KeyError::NoCurve),
    }
}

/// The UUID a client key may speak as under `VIGIL_CLIENT_AUTH=derived`:
/// the first 16 bytes of SHA-256 over the raw key, stamped as an RFC 9562
/// version-8 UUID (PROTOCOL.md, "Security").
pub fn derived_uuid(key: &PublicKey) -> uuid::Uuid {
    let mut digest = [0u8; 32];
    // SAFETY: the output buffer is crypto_hash_sha256_BYTES (32) long and
    // the input pointer/length describe `key.0`.
    unsafe {
        libsodium_sys::crypto_hash_sha256(digest.as_mut_ptr(), key.0.as_ptr(), 32);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

/// The keys a connecting part (agent, sink, scheduler, status) uses: its
/// own pair and the routers' public key.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientKeys {
    pub own: KeyPair,
    pub router: PublicKey,
}

impl ClientKeys {
    /// Makes `socket` a CURVE client of the routers. Call before connect.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), KeyError> {
        let set = |doing, r: zmq::Result<()>| r.map_err(|source| KeyError::Zmq { doing, source });
        set(
            "setting CURVE server key",
            socket.set_curve_serverkey(&self.router.0),
        )?;
        set(
            "setting CURVE public key",
            socket.set_curve_publickey(&self.own.public.0),
        )?;
        set(
            "setting CURVE secret key",
            socket.set_curve_secretkey(&self.own.secret),
        )
    }
}

/// Makes `socket` a CURVE server with `keys`, authenticated by the ZAP
/// handler under `domain`. Call before bind.
pub fn apply_server(socket: &zmq::Socket, keys: &KeyPair, domain: &str) -> Result<(), KeyError> {
    let set = |doing, r: zmq::Result<()>| r.map_err(|source| KeyError::Zmq { doing, source });
    set("setting ZAP domain", socket.set_zap_domain(domain))?;
    set("enabling CURVE server", socket.set_curve_server(true))?;
    set(
        "setting CURVE secret key",
        socket.set_curve_secretkey(&keys.secret),
    )
}

/// The routers' public key from `VIGIL_ROUTER_KEY`, if set. A value that is
/// not a Z85 key is an error naming the variable.
pub fn router_key(env: &Env) -> Result<Option<PublicKey>, ConfigError> {
    let Some(raw) = env.get(ROUTER_KEY_VAR) else {
        return Ok(None);
    };
    PublicKey::from_z85(raw)
        .map(Some)
        .map_err(|reason| ConfigError::new(ROUTER_KEY_VAR, raw, reason))
}

/// This process's key pair from the file `VIGIL_CURVE_KEY` names, if set.
/// An unreadable, malformed or exposed file is an error naming the
/// variable (exit 2 at start).
pub fn own_key(env: &Env) -> Result<Option<KeyPair>, ConfigError> {
    let Some(path) = env.get(CURVE_KEY_VAR) else {
        return Ok(None);
    };
    let pair = KeyPair::read(Path::new(path))
        .map_err(|e| ConfigError::new(CURVE_KEY_VAR, path, e.to_string()))?;
    require_curve().map_err(|e| ConfigError::new(CURVE_KEY_VAR, path, e.to_string()))?;
    Ok(Some(pair))
}

/// The client keys of a back-end part (sink, scheduler, status): both
/// variables or neither. `VIGIL_ROUTER_KEY` alone is refused, since the
/// part would have no key of its own to authenticate with.
pub fn client_keys(env: &Env) -> Result<Option<ClientKeys>, ConfigError> {
    match (own_key(env)?, router_key(env)?) {
        (Some(own), Some(router)) => Ok(Some(ClientKeys { own, router })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            ROUTER_KEY_VAR,
            "",
            format!("must be set when {CURVE_KEY_VAR} is (the routers' public key)"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            CURVE_KEY_VAR,
            "",
            format!("must be set when {ROUTER_KEY_VAR} is (this process's secret key file)"),
        )),
    }
}

/// `vigil keygen PATH`: writes the pair, prints the public key.
pub fn keygen_command(args: &[String]) -> Result<(), crate::error::Error> {
    use crate::error::Error;
    let [path] = args else {
        return Err(Error::Usage(
            "usage: vigil keygen PATH   (writes PATH, mode 0600, and PATH.pub)".into(),
        ));
    };
    let pair = KeyPair::generate().map_err(|e| Error::setup("cannot make the key", e))?;
    pair.write(Path::new(path))
        .map_err(|e| Error::setup("cannot make the key", e))?;
    println!("{}", pair.public);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vigil-curve-{}-{name}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_vendored_libzmq_has_curve() {
        assert_eq!(zmq::has("curve"), Some(true));
    }

    #[test]
    fn the_public_key_is_computed_from_the_secret() {
        let pair = KeyPair::generate().unwrap();
        assert_eq!(KeyPair::from_secret(*pair.secret()).public, pair.public);
    }

    #[test]
    fn a_written_key_reads_back_and_keygen_never_overwrites() {
        let dir = scratch("rw");
        let path = dir.join("k");
        let pair = KeyPair::generate().unwrap();
        pair.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(KeyPair::read(&path).unwrap().public, pair.public);
        let public = fs::read_to_string(public_path(&path)).unwrap();
        assert_eq!(PublicKey::from_z85(&public).unwrap(), pair.public);
        assert!(matches!(
            KeyPair::generate().unwrap().write(&path),
            Err(KeyError::Exists(_))
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_group_or_world_readable_secret_is_refused() {
        let dir = scratch("mode");
        let path = dir.join("k");
        KeyPair::generate().unwrap().write(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyPair::read(&path).unwrap_err();
        assert!(matches!(err, KeyError::Exposed { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_keys_say_why() {
        assert!(PublicKey::from_z85("short").unwrap_err().contains("40"));
        let not_z85 = "~".repeat(40);
        assert!(PublicKey::from_z85(&not_z85).is_err());
    }

    /// A fixed test vector for the derived-UUID rule: anyone implementing
    /// PROTOCOL.md's rule must get this UUID for this key. The expected
    /// value is SHA-256 of 32 zero bytes (66687aad f862bd77 6c8fc18b
    /// 8e9f8e20 ...), first 16 bytes, with the version and variant bits set.
    #[test]
    fn derived_uuid_matches_the_rule_in_protocol_md() {
        let zero = PublicKey([0u8; 32]);
        assert_eq!(
            derived_uuid(&zero).to_string(),
            "66687aad-f862-8d77-ac8f-c18b8e9f8e20"
        );
        let uuid = derived_uuid(&KeyPair::generate().unwrap().public);
        assert_eq!(uuid.get_version_num(), 8);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn client_keys_need_both_variables() {
        let dir = scratch("env");
        let path = dir.join("k");
        KeyPair::generate().unwrap().write(&path).unwrap();
        let p = path.to_str().unwrap();
        let router = KeyPair::generate().unwrap().public.to_z85();
        let env = Env::from_pairs([(CURVE_KEY_VAR, p), (ROUTER_KEY_VAR, router.as_str())]);
        assert!(client_keys(&env).unwrap().is_some());
        let env = Env::from_pairs([(CURVE_KEY_VAR, p)]);
        assert_eq!(client_keys(&env).unwrap_err().var, ROUTER_KEY_VAR);
        let env = Env::from_pairs([(ROUTER_KEY_VAR, "nonsense")]);
        assert_eq!(client_keys(&env).unwrap_err().var, ROUTER_KEY_VAR);
        assert!(client_keys(&Env::default()).unwrap().is_none());
        fs::remove_dir_all(dir).unwrap();
    }
}
