//! Secrets of the handlers (the SMTP password, the PagerDuty routing key,
//! webhook URLs that embed a token) and how they are kept out of logs,
//! status and error texts.
//!
//! A secret is read once at start from a file only its owner can read, so
//! it is in neither the environment nor the unit file; it is held in a
//! [`Secret`], whose `Debug` shows nothing of it; and a URL is shown as
//! `scheme://host/…` only ([`redact_url`]): Slack's and many other webhook
//! URLs carry their token in the path.

use crate::config::ConfigError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the secret in `path` (the value of `var`): the file's content
/// without its trailing line end. Refused when the file is missing, empty,
/// or readable or writable by its group or others (a secret in a file any
/// local user can read is not a secret).
pub fn read_secret_file(var: &str, path: &str) -> Result<Secret, ConfigError> {
    let bad = |why: String| ConfigError::new(var, path, why);
    let text = read_owner_only(path).map_err(bad)?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    if value.contains(['\r', '\n']) {
        return Err(bad("expected one line".into()));
    }
    Ok(Secret(value.to_string()))
}

/// The whole text of `path`, a regular file its group and others may
/// neither read nor write. The error is a sentence fragment.
pub fn read_owner_only(path: &str) -> Result<String, String> {
    let meta = std::fs::metadata(Path::new(path)).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "the file is open to its group or others (mode {:04o}); make it readable by its owner only (chmod 600)",
            mode & 0o7777
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))
}

/// `https://hooks.slack.com/services/T0/B0/XYZ` → `https://hooks.slack.com/…`:
/// the scheme and host (with the port) only, for logs and error texts.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "…".into(),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the authority are a secret too.
    let host = authority.rsplit('@').next().unwrap_or("");
    let more = rest.len() > authority.len() || authority.contains('@');
    format!("{scheme}://{host}{}", if more { "/…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_scheme_and_host_only() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8080/hook?token=abc"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(
            redact_url("https://user:pw@example.org"),
            "https://example.org/…"
        );
        assert_eq!(redact_url("https://example.org"), "https://example.org");
        assert_eq!(redact_url("garbage"), "…");
    }

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = std::env::temp_dir().join(format!("vigil-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        let p = path.to_str().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_file("V", p).unwrap_err();
        assert_eq!(err.var, "V");
        assert!(err.reason.contains("0640"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(read_secret_file("V", p).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file("V", p).unwrap().expose(), "hunter2");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file("V", p).is_err());
        assert!(read_secret_file("V", dir.join("none").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
