//! `vigil web`'s configuration: `VIGIL_WEB_*` and the store and router
//! variables `vigil status` reads, checked at start into plain data.
//!
//! A bind that is not loopback needs a token: the pages show every host's
//! plugin output, which is nobody's business outside the operators.

use crate::config::{ConfigError, Env};
use crate::scheduler::config as shared;
use std::net::SocketAddr;
use std::time::Duration;

/// `VIGIL_WEB_BIND`'s default: loopback, away from vigil's 5555-5565.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

#[derive(Clone, PartialEq)]
pub struct WebConfig {
    pub bind: SocketAddr,
    /// The token every request must carry; required off loopback.
    pub token: Option<String>,
    pub threads: usize,
    /// The pages' `<meta http-equiv="refresh">` period.
    pub refresh: Duration,
    /// Rows per page of a list.
    pub page_size: usize,
    pub db: crate::store::Target,
    pub backends: Vec<String>,
    pub heartbeat_grace: f64,
    pub backend_timeout: Duration,
    /// Keys for the routers' back end (`VIGIL_CURVE_KEY`, `VIGIL_ROUTER_KEY`).
    pub keys: Option<crate::curve::ClientKeys>,
}

// The token never reaches a log line.
impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("bind", &self.bind)
            .field(
                "token",
                &self.token.as_ref().map(|_| "(from VIGIL_WEB_TOKEN_FILE)"),
            )
            .field("threads", &self.threads)
            .field("refresh", &self.refresh)
            .field("page_size", &self.page_size)
            .field("db", &self.db)
            .field("backends", &self.backends)
            .finish()
    }
}

impl WebConfig {
    pub fn from_env(env: &Env) -> Result<WebConfig, ConfigError> {
        const BIND: &str = "VIGIL_WEB_BIND";
        const TOKEN: &str = "VIGIL_WEB_TOKEN_FILE";
        let raw = env.string(BIND, DEFAULT_BIND);
        let bind: SocketAddr = raw.parse().map_err(|_| {
            ConfigError::new(
                BIND,
                &raw,
                "expected an address:port such as 127.0.0.1:8080",
            )
        })?;
        let token = match env.get(TOKEN) {
            Some(path) => Some(read_token(path).map_err(|why| ConfigError::new(TOKEN, path, why))?),
            None if !bind.ip().is_loopback() => {
                return Err(ConfigError::new(
                    TOKEN,
                    "",
                    format!("required when VIGIL_WEB_BIND ({bind}) is not a loopback address"),
                ))
            }
            None => None,
        };
        Ok(WebConfig {
            bind,
            token,
            threads: env.int("VIGIL_WEB_THREADS", 4, 1, 256)?,
            refresh: Duration::from_secs(env.int("VIGIL_WEB_REFRESH_SECS", 10, 1, 3_600)?),
            page_size: env.int("VIGIL_WEB_PAGE_SIZE", 100, 1, 10_000)?,
            db: shared::db_path(env)?,
            backends: shared::backends(env)?,
            heartbeat_grace: shared::heartbeat_grace(env)?,
            backend_timeout: shared::backend_timeout(env)?,
            keys: crate::curve::client_keys(env)?,
        })
    }
}

/// The token: the file's first line, at least 16 characters, from a file
/// only its owner may read (like every other secret file).
fn read_token(path: &str) -> Result<String, String> {
    let text = crate::notify::secret::read_owner_only(path)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.chars().count() < 16 {
        return Err("the token (first line) must have at least 16 characters".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loopback_by_default_and_a_token_off_it() {
        let c = WebConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.token, None);
        let err =
            WebConfig::from_env(&Env::from_pairs([("VIGIL_WEB_BIND", "0.0.0.0:0")])).unwrap_err();
        assert_eq!(err.var, "VIGIL_WEB_TOKEN_FILE");
        let dir = std::env::temp_dir().join(format!("vigil-web-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "short\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.display().to_string();
        let pairs = [
            ("VIGIL_WEB_BIND", "0.0.0.0:0"),
            ("VIGIL_WEB_TOKEN_FILE", path.as_str()),
        ];
        assert_eq!(
            WebConfig::from_env(&Env::from_pairs(pairs))
                .unwrap_err()
                .var,
            "VIGIL_WEB_TOKEN_FILE"
        );
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = WebConfig::from_env(&Env::from_pairs(pairs)).unwrap_err();
        assert_eq!(loose.var, "VIGIL_WEB_TOKEN_FILE");
        assert!(loose.reason.contains("chmod 600"), "{loose}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = WebConfig::from_env(&Env::from_pairs(pairs)).unwrap();
        assert_eq!(c.token.as_deref(), Some("0123456789abcdef0123"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        std::fs::remove_dir_all(dir).unwrap();
        for (var, value) in [
            ("VIGIL_WEB_BIND", "localhost"),
            ("VIGIL_WEB_THREADS", "0"),
            ("VIGIL_WEB_REFRESH_SECS", "x"),
        ] {
            let err = WebConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var);
        }
    }
}
