//! Who may talk to a CURVE router, and as whom (PROTOCOL.md, "Security").
//!
//! [`AuthConfig`] is what the variables say (the router's own key, the
//! client mode, the key files), read and checked at start. [`Access`] is
//! one version of the key files' contents: the ZAP thread decides each
//! handshake with it and sends every new version to the client and back-end
//! threads, which check each message's connection against it, so a key
//! removed from a file gets nothing through from that moment, even on a
//! connection that was let in before. [`Peer`] is what the ZAP handler
//! attached to a connection (its UUID as the User-Id, its key as the
//! `X-Key` property), read back from any message of that connection.
//!
//! All of it is logic without sockets, so it is unit-tested here.

use super::keyfiles::{self, ClientKeys, KeyList, Watched};
use crate::config::{ConfigError, Env};
use crate::curve::{self, KeyPair, PublicKey};
use std::collections::HashSet;
use std::path::Path;
use uuid::Uuid;

/// The ZAP domains of the router's three kinds of socket.
pub const CLIENT_DOMAIN: &str = "clients";
pub const BACKEND_DOMAIN: &str = "backend";
pub const SINK_DOMAIN: &str = "sinks";

/// The ZAP metadata property carrying the peer's public key (Z85).
pub const KEY_PROPERTY: &str = "X-Key";

/// How client keys map to UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Only listed keys, each as its listed UUID.
    Keys,
    /// Any key, as the UUID derived from it.
    Derived,
}

/// The router's CURVE configuration, from `VIGIL_CURVE_KEY` and friends.
#[derive(Clone)]
pub struct AuthConfig {
    pub server: KeyPair,
    pub mode: ClientMode,
    pub client_keys: Option<Watched<ClientKeys>>,
    pub client_deny: Option<Watched<KeyList>>,
    pub backend_keys: Watched<KeyList>,
    pub sink_keys: Watched<KeyList>,
    /// The files' contents at start.
    pub initial: Access,
}

impl std::fmt::Debug for AuthConfig {
    /// What the start-up line shows: the files and their sizes, not every key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = |w: Option<&std::path::PathBuf>| w.map(|p| p.display().to_string());
        f.debug_struct("AuthConfig")
            .field("server_public_key", &self.server.public.to_z85())
            .field("mode", &self.mode)
            .field(
                "client_keys",
                &path(self.client_keys.as_ref().map(|w| &w.path)),
            )
            .field(
                "client_deny",
                &path(self.client_deny.as_ref().map(|w| &w.path)),
            )
            .field("backend_keys", &self.backend_keys.path)
            .field("sink_keys", &self.sink_keys.path)
            .field("clients_listed", &self.initial.clients.len())
            .field("denied", &self.initial.deny.len())
            .field("backend_listed", &self.initial.backend.len())
            .field("sinks_listed", &self.initial.sinks.len())
            .finish()
    }
}

impl AuthConfig {
    /// `None` when `VIGIL_CURVE_KEY` is unset (plaintext). Every key file
    /// is read now: one that cannot be read or parsed is an error naming
    /// its variable.
    pub fn from_env(env: &Env) -> Result<Option<AuthConfig>, ConfigError> {
        let Some(server) = curve::own_key(env)? else {
            return Ok(None);
        };
        const MODE: &str = "VIGIL_CLIENT_AUTH";
        let mode = match env.get(MODE).unwrap_or("keys") {
            "keys" => ClientMode::Keys,
            "derived" => ClientMode::Derived,
            other => return Err(ConfigError::new(MODE, other, "expected keys or derived")),
        };
        let client_keys = match mode {
            ClientMode::Keys => Some(required(
                env,
                "VIGIL_CLIENT_KEYS",
                keyfiles::parse_client_keys,
                "with VIGIL_CLIENT_AUTH=keys (the default), the file of `UUID PUBLIC_KEY` lines",
            )?),
            ClientMode::Derived => None,
        };
        let client_deny = env
            .get("VIGIL_CLIENT_DENY")
            .map(|p| Watched::new("VIGIL_CLIENT_DENY", Path::new(p), keyfiles::parse_key_list));
        let list = "the file of public keys allowed";
        let backend_keys = required(
            env,
            "VIGIL_BACKEND_KEYS",
            keyfiles::parse_key_list,
            &format!("{list} on the back-end socket (sinks, schedulers, status)"),
        )?;
        let sink_keys = required(
            env,
            "VIGIL_SINK_KEYS",
            keyfiles::parse_key_list,
            &format!("{list} to connect sinks to the PUSH sockets"),
        )?;
        let mut config = AuthConfig {
            server,
            mode,
            client_keys,
            client_deny,
            backend_keys,
            sink_keys,
            initial: Access::default(),
        };
        config.initial = config
            .read_all()
            .map_err(|(var, path, reason)| ConfigError::new(var, &path, reason))?;
        Ok(Some(config))
    }

    /// Reads every file now; the first failure as (variable, path, reason).
    pub fn read_all(&mut self) -> Result<Access, (&'static str, String, String)> {
        fn get<T>(w: &mut Watched<T>) -> Result<T, (&'static str, String, String)> {
            w.read()
                .map_err(|e| (w.var, w.path.display().to_string(), e))
        }
        Ok(Access {
            mode: self.mode,
            clients: match &mut self.client_keys {
                Some(w) => get(w)?,
                None => ClientKeys::new(),
            },
            deny: match &mut self.client_deny {
                Some(w) => get(w)?.into_keys().collect(),
                None => HashSet::new(),
            },
            backend: get(&mut self.backend_keys)?,
            sinks: get(&mut self.sink_keys)?,
        })
    }
}

fn required<T>(
    env: &Env,
    var: &'static str,
    parse: fn(&str) -> Result<T, String>,
    what: &str,
) -> Result<Watched<T>, ConfigError> {
    match env.get(var) {
        Some(path) => Ok(Watched::new(var, Path::new(path), parse)),
        None => Err(ConfigError::new(
            var,
            "",
            format!("must be set when VIGIL_CURVE_KEY is: {what}"),
        )),
    }
}

/// One version of the authorisation files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub mode: ClientMode,
    pub clients: ClientKeys,
    pub deny: HashSet<PublicKey>,
    pub backend: KeyList,
    pub sinks: KeyList,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            mode: ClientMode::Keys,
            clients: ClientKeys::new(),
            deny: HashSet::new(),
            backend: KeyList::new(),
            sinks: KeyList::new(),
        }
    }
}

/// A ZAP decision: the User-Id to assign, or why the key is refused.
pub type Decision = Result<String, &'static str>;

impl Access {
    /// The UUID a client key may speak as, or `None` if it is refused.
    pub fn client_uuid(&self, key: &PublicKey) -> Option<Uuid> {
        if self.deny.contains(key) {
            return None;
        }
        match self.mode {
            ClientMode::Keys => self.clients.get(key).copied(),
            ClientMode::Derived => Some(curve::derived_uuid(key)),
        }
    }

    /// Whether a connection authenticated as `peer` may still speak.
    pub fn client_allows(&self, peer: &Peer) -> bool {
        self.client_uuid(&peer.key) == Some(peer.uuid)
    }

    pub fn backend_allows(&self, key: &PublicKey) -> bool {
        self.backend.contains_key(key)
    }

    /// The ZAP answer for `key` in `domain`.
    pub fn decide(&self, domain: &str, key: &PublicKey) -> Decision {
        match domain {
            CLIENT_DOMAIN => match self.client_uuid(key) {
                Some(uuid) => Ok(crate::protocol::uuid_text(&uuid)),
                None if self.deny.contains(key) => Err("key denied"),
                None => Err("key not listed"),
            },
            BACKEND_DOMAIN => self.named(&self.backend, key),
            SINK_DOMAIN => self.named(&self.sinks, key),
            _ => Err("unknown ZAP domain"),
        }
    }

    fn named(&self, list: &KeyList, key: &PublicKey) -> Decision {
        match list.get(key) {
            Some(name) => Ok(name.clone().unwrap_or_else(|| key.to_z85())),
            None => Err("key not listed"),
        }
    }

    /// Whether a sink key allowed by `self` is no longer in `newer`: only
    /// then must the PUSH sockets be made anew (see `sink.rs`).
    pub fn sinks_removed_in(&self, newer: &Access) -> bool {
        self.sinks.keys().any(|k| !newer.sinks.contains_key(k))
    }
}

/// What the ZAP handler attached to a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uuid: Uuid,
    pub key: PublicKey,
}

impl Peer {
    /// Reads the User-Id and `X-Key` of the connection `frame` came from;
    /// `None` for a frame that carries neither (a ROUTER_NOTIFY
    /// notification, or a connection not authenticated by this router).
    pub fn of(frame: &mut zmq::Message) -> Option<Peer> {
        let uuid = crate::protocol::parse_uuid(frame.gets("User-Id")?)?;
        let key = PublicKey::from_z85(frame.gets(KEY_PROPERTY)?).ok()?;
        Some(Peer { uuid, key })
    }
}

/// The key of the connection `frame` came from (back end, any name).
pub fn key_of(frame: &mut zmq::Message) -> Option<PublicKey> {
    PublicKey::from_z85(frame.gets(KEY_PROPERTY)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        KeyPair::generate().unwrap().public
    }

    #[test]
    fn listed_keys_speak_as_their_uuid_only() {
        let (a, b) = (key(), key());
        let ua = Uuid::new_v4();
        let mut access = Access::default();
        access.clients.insert(a, ua);
        assert_eq!(access.decide(CLIENT_DOMAIN, &a), Ok(ua.to_string()));
        assert_eq!(access.decide(CLIENT_DOMAIN, &b), Err("key not listed"));
        assert!(access.client_allows(&Peer { uuid: ua, key: a }));
        let other = Peer {
            uuid: Uuid::new_v4(),
            key: a,
        };
        assert!(!access.client_allows(&other));
        access.deny.insert(a);
        assert_eq!(access.decide(CLIENT_DOMAIN, &a), Err("key denied"));
        assert!(!access.client_allows(&Peer { uuid: ua, key: a }));
    }

    #[test]
    fn derived_mode_takes_any_key_but_the_denied() {
        let (a, b) = (key(), key());
        let mut access = Access {
            mode: ClientMode::Derived,
            ..Access::default()
        };
        let ua = curve::derived_uuid(&a);
        assert_eq!(access.decide(CLIENT_DOMAIN, &a), Ok(ua.to_string()));
        assert!(access.client_allows(&Peer { uuid: ua, key: a }));
        let wrong = Peer { uuid: ua, key: b };
        assert!(!access.client_allows(&wrong));
        access.deny.insert(b);
        assert!(access.decide(CLIENT_DOMAIN, &b).is_err());
    }

    #[test]
    fn back_end_and_sinks_have_their_own_lists() {
        let (a, b) = (key(), key());
        let mut access = Access::default();
        access.backend.insert(a, Some("scheduler".into()));
        access.sinks.insert(b, None);
        assert_eq!(access.decide(BACKEND_DOMAIN, &a), Ok("scheduler".into()));
        assert!(access.decide(BACKEND_DOMAIN, &b).is_err());
        assert_eq!(access.decide(SINK_DOMAIN, &b), Ok(b.to_z85()));
        assert!(access.decide(SINK_DOMAIN, &a).is_err());
        assert!(access.decide("other", &a).is_err());
        let mut newer = access.clone();
        newer.sinks.insert(a, None);
        assert!(
            !access.sinks_removed_in(&newer),
            "an addition needs no rebuild"
        );
        newer.sinks.remove(&b);
        assert!(access.sinks_removed_in(&newer));
    }
}
