//! What `VIGIL_DB` names: a SQLite file (the embedded default, one host) or
//! a PostgreSQL server (`postgres://` / `postgresql://`, the store shared
//! by sinks, schedulers and `vigil status` on several hosts).
//!
//! The URL is libpq's: `postgres://user[:password]@host[:port]/dbname
//! [?param=value&...]`. A password not in the URL comes from `PGPASSFILE`
//! or `~/.pgpass` as libpq reads it (the `postgres` crate does not), so
//! the secret can live in a file readable by the service's user only.
//! `sslmode` is `disable` (the default), `require` (encrypted, server not
//! verified) or `verify-full` (encrypted, certificate and host name
//! verified against the Web PKI roots and `VIGIL_DB_CA_FILE`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How long connecting to PostgreSQL may take unless the URL says
/// `connect_timeout`: `vigil status` must say "unreachable", not hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The store `VIGIL_DB` names.
#[derive(Clone, PartialEq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

/// A PostgreSQL server, ready to connect to.
#[derive(Clone)]
pub struct PgTarget {
    pub config: postgres::Config,
    pub tls: TlsMode,
    /// The URL without its password, for logs and `vigil status`.
    pub shown: String,
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &PgTarget) -> bool {
        self.shown == other.shown && self.tls == other.tls
    }
}

/// `sslmode`, as vigil supports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    /// Encrypted; the server's certificate is not checked (libpq's
    /// `require`).
    Require,
    /// Encrypted; certificate chain and host name verified against the
    /// Web PKI roots and the CA file, if any.
    VerifyFull {
        ca_file: Option<PathBuf>,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "{}", path.display()),
            Target::Postgres(pg) => f.write_str(&pg.shown),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password: Debug ends up in the start-up log line.
        write!(f, "{:?}", self.to_string())
    }
}

impl Target {
    /// `VIGIL_DB` (and `VIGIL_DB_CA_FILE`), checked. `pgpass` is the
    /// password file to consult (see [`pgpass_file`]).
    pub fn parse(
        value: &str,
        ca_file: Option<&str>,
        pgpass: Option<&Path>,
    ) -> Result<Target, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("empty: give a file path or a postgres:// URL".into());
        }
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return parse_url(value, ca_file, pgpass).map(|pg| Target::Postgres(Box::new(pg)));
        }
        if lower.contains("://") {
            return Err(
                "not a file path, and only postgres:// or postgresql:// URLs are understood".into(),
            );
        }
        Ok(Target::Sqlite(PathBuf::from(value)))
    }

    /// `VIGIL_DB` from the environment, with `default` when unset. A bad
    /// value is a [`ConfigError`](crate::config::ConfigError) naming it.
    pub fn from_env(
        env: &crate::config::Env,
        default: &str,
    ) -> Result<Target, crate::config::ConfigError> {
        let value = env.string("VIGIL_DB", default);
        let ca = env.get("VIGIL_DB_CA_FILE");
        let pgpass = pgpass_file();
        Target::parse(&value, ca, pgpass.as_deref()).map_err(|reason| {
            // The password, if any, must not reach the log.
            let shown = redact(&value);
            crate::config::ConfigError::new("VIGIL_DB", &shown, reason)
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Target::Postgres(_))
    }
}

/// The password file libpq would read: `PGPASSFILE`, else `~/.pgpass`.
pub fn pgpass_file() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")),
    }
}

fn parse_url(url: &str, ca_file: Option<&str>, pgpass: Option<&Path>) -> Result<PgTarget, String> {
    refuse_ambiguous_credentials(url)?;
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut sslmode = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = Some(percent_decode(value)?),
            // Certificates come from VIGIL_DB_CA_FILE; say so instead of
            // ignoring a parameter that would look as if it worked.
            "sslrootcert" | "sslcert" | "sslkey" => {
                return Err(format!("{key} is not supported here: use VIGIL_DB_CA_FILE"))
            }
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config =
        postgres::Config::from_str(&rebuilt).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("no host in the URL".into());
    }
    if config.get_user().is_none() {
        // libpq's default: the operating-system user.
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .map_err(|_| "no user in the URL (postgres://USER@host/db)".to_string())?;
        config.user(&user);
    }
    let tls = match sslmode.as_deref() {
        None | Some("disable") => TlsMode::Disable,
        Some("require") => TlsMode::Require,
        Some("verify-full") => TlsMode::VerifyFull {
            ca_file: ca_file.map(PathBuf::from),
        },
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not supported: use disable, require or verify-full"
            ))
        }
    };
    if let (Some(ca), TlsMode::VerifyFull { .. }) = (ca_file, &tls) {
        if !Path::new(ca).is_file() {
            return Err(format!("VIGIL_DB_CA_FILE {ca:?} is not a readable file"));
        }
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => postgres::config::SslMode::Disable,
        _ => postgres::config::SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A server gone without a word (a cable pulled, a host frozen) is
    // noticed within these bounds instead of never.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.tcp_user_timeout(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("vigil");
    }
    if config.get_password().is_none() {
        if let Some(file) = pgpass {
            if let Some(password) = pgpass_lookup(file, &config)? {
                config.password(password);
            }
        }
    }
    Ok(PgTarget {
        config,
        tls,
        shown: redact(url),
    })
}

/// The postgres crate takes a URL's credentials up to its first `@`, so a
/// password holding an unencoded `/`, `?`, `#` or `@` would be read in a
/// way vigil's own reading (for `sslmode`, and for hiding the password)
/// would not match: `ab?cd` would even hide `sslmode=require` from vigil
/// and connect in the clear. Such a URL is refused instead.
fn refuse_ambiguous_credentials(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let Some(at) = rest.find('@') else {
        return Ok(());
    };
    if rest[..at].contains(['/', '?', '#']) || rest[at + 1..].contains('@') {
        return Err("the user name or password holds an unencoded @, /, ? or #: \
             percent-encode it (%40, %2F, %3F, %23), or leave the password out and use a pgpass file"
            .into());
    }
    Ok(())
}

/// `url` with its passwords replaced by `***`: the one between `user:` and
/// `@`, and a `password=` query parameter (libpq and the postgres crate take
/// either).
pub fn redact(url: &str) -> String {
    let (head, rest) = redact_credentials(url);
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut shown = head;
    shown.push_str(base);
    if let Some(query) = query {
        let pairs: Vec<&str> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => pair,
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// The scheme and credentials of `url`, the password hidden, and the rest.
/// The credentials end at the URL's last `@`: a password may hold `@`, `/`
/// or `?` unencoded (such a URL is refused, but its error line shows it),
/// and hiding too much is the safe side.
fn redact_credentials(url: &str) -> (String, &str) {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return (String::new(), url);
    };
    let Some(at) = url[start..].rfind('@').map(|i| start + i) else {
        return (url[..start].to_string(), &url[start..]);
    };
    let shown = match url[start..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***@", &url[..start]),
        None => url[..=at].to_string(),
    };
    (shown, &url[at + 1..])
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// The password `.pgpass` gives for this connection, if any. Like libpq, a
/// file readable by group or others is ignored (with a warning), and a
/// missing file is no error.
fn pgpass_lookup(file: &Path, config: &postgres::Config) -> Result<Option<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(None);
    };
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access; ignored (chmod 0600 it)",
            file.display()
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("password file {}: {e}", file.display()))?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        // libpq matches a socket directory as "localhost".
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    Ok(pgpass_match(&text, &host, &port, dbname, user))
}

/// The first `hostname:port:database:username:password` line of `text`
/// matching (fields may be `*`; `\:` and `\\` escape).
pub fn pgpass_match(
    text: &str,
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = pgpass_fields(line);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let ok = |field: &str, value: &str| field == "*" || field == value;
        if ok(h, host) && ok(p, port) && ok(d, dbname) && ok(u, user) {
            return Some(password.clone());
        }
    }
    None
}

/// Splits a `.pgpass` line on unescaped colons; the last field takes the
/// rest of the line.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// A rustls client configuration for `mode` (None for `disable`).
pub fn tls_config(mode: &TlsMode) -> Result<Option<rustls::ClientConfig>, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    match mode {
        TlsMode::Disable => Ok(None),
        TlsMode::Require => Ok(Some(
            builder
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
        )),
        TlsMode::VerifyFull { ca_file } => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("VIGIL_DB_CA_FILE {}: {e}", path.display()))?;
                let mut added = 0;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert =
                        cert.map_err(|e| format!("VIGIL_DB_CA_FILE {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("VIGIL_DB_CA_FILE {}: {e}", path.display()))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(format!(
                        "VIGIL_DB_CA_FILE {}: no PEM certificate in it",
                        path.display()
                    ));
                }
            }
            Ok(Some(
                builder.with_root_certificates(roots).with_no_client_auth(),
            ))
        }
    }
}

/// `sslmode=require`: encryption without authentication of the server, as
/// libpq does it. Signatures are still checked, so the session is sound;
/// only who the server is stays unverified.
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            Target::parse("/var/lib/vigil/vigil.db", None, None).unwrap(),
            Target::Sqlite("/var/lib/vigil/vigil.db".into())
        );
        let t = Target::parse(
            "postgres://vigil:s3cret@db1:6543/mon?sslmode=require",
            None,
            None,
        )
        .unwrap();
        let Target::Postgres(pg) = &t else {
            panic!("{t}")
        };
        assert_eq!(pg.tls, TlsMode::Require);
        assert_eq!(pg.config.get_user(), Some("vigil"));
        assert_eq!(pg.config.get_dbname(), Some("mon"));
        assert_eq!(pg.config.get_ports(), [6543]);
        assert_eq!(pg.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            t.to_string(),
            "postgres://vigil:***@db1:6543/mon?sslmode=require"
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(Target::parse("postgresql://u@h/d", None, None)
            .unwrap()
            .is_postgres());
    }

    #[test]
    fn bad_values_say_why() {
        for (value, why) in [
            ("", "empty"),
            ("mysql://u@h/d", "only postgres"),
            ("postgres://u@h/d?sslmode=verify-ca", "verify-ca"),
            ("postgres://u@h/d?sslmode=prefer", "prefer"),
            ("postgres://u@h:notaport/d", "not a PostgreSQL URL"),
            ("postgres://u@h/d?sslrootcert=/x", "VIGIL_DB_CA_FILE"),
        ] {
            let err = Target::parse(value, None, None).unwrap_err();
            assert!(err.contains(why), "{value}: {err}");
        }
        let err = Target::parse(
            "postgres://u@h/d?sslmode=verify-full",
            Some("/nonexistent"),
            None,
        )
        .unwrap_err();
        assert!(err.contains("VIGIL_DB_CA_FILE"), "{err}");
    }

    #[test]
    fn a_bad_url_is_refused_naming_vigil_db_without_its_password() {
        let env = crate::config::Env::from_pairs([("VIGIL_DB", "postgres://u:pw@h:x/d")]);
        let err = Target::from_env(&env, "/x.db").unwrap_err();
        assert_eq!(err.var, "VIGIL_DB");
        assert!(!err.to_string().contains("pw@"), "{err}");
        let env = crate::config::Env::from_pairs([("VIGIL_DB", "postgres://u@h:x/d?password=pw")]);
        let err = Target::from_env(&env, "/x.db").unwrap_err();
        assert!(!err.to_string().contains("=pw"), "{err}");
    }

    #[test]
    fn a_password_in_the_query_is_used_but_never_shown() {
        let t = Target::parse("postgres://u@h/d?password=s3cret", None, None).unwrap();
        let Target::Postgres(pg) = &t else {
            panic!("{t}")
        };
        assert_eq!(pg.config.get_password(), Some(&b"s3cret"[..]));
        assert!(!t.to_string().contains("s3cret"), "{t}");
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("postgres://a:b@h/d"), "postgres://a:***@h/d");
        assert_eq!(redact("postgres://a@h/d"), "postgres://a@h/d");
        // The postgres crate would read "b" as the password here.
        assert_eq!(redact("postgres://h/d?x=a:b@c"), "postgres://h/d?x=a:***@c");
        for (url, shown) in [
            (
                "postgres://vigil:ab/cd@db1/vigil",
                "postgres://vigil:***@db1/vigil",
            ),
            (
                "postgres://vigil:ab?cd@db1/vigil?sslmode=require",
                "postgres://vigil:***@db1/vigil?sslmode=require",
            ),
            ("postgres://vigil:p@ss@db1/v", "postgres://vigil:***@db1/v"),
        ] {
            assert_eq!(redact(url), shown);
            let err = Target::parse(url, None, None).unwrap_err();
            assert!(err.contains("percent-encode"), "{url}: {err}");
        }
        let encoded = Target::parse(
            "postgres://vigil:ab%2Fcd%3Fe%40f@db1/v?sslmode=require",
            None,
            None,
        )
        .unwrap();
        let Target::Postgres(pg) = &encoded else {
            panic!("{encoded}")
        };
        assert_eq!(pg.config.get_password(), Some(&b"ab/cd?e@f"[..]));
        assert_eq!(pg.tls, TlsMode::Require);
        assert!(!encoded.to_string().contains("ab%2F"), "{encoded}");
        assert_eq!(redact("/path/vigil.db"), "/path/vigil.db");
        assert_eq!(
            redact("postgres://a@h/d?sslmode=require&password=s3cret"),
            "postgres://a@h/d?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgres://a:b@h/d?password=c"),
            "postgres://a:***@h/d?password=***"
        );
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let text = "# comment\n\
                    db1:5432:mon:vigil:first\n\
                    *:*:*:vigil:any\\:colon\\\\slash\n\
                    db2:5432:*:other:nope\n";
        assert_eq!(
            pgpass_match(text, "db1", "5432", "mon", "vigil").as_deref(),
            Some("first")
        );
        assert_eq!(
            pgpass_match(text, "db9", "1", "x", "vigil").as_deref(),
            Some("any:colon\\slash")
        );
        assert_eq!(pgpass_match(text, "db2", "5432", "x", "someone"), None);
        assert_eq!(
            pgpass_fields("a:b:c:d:e:f"),
            ["a", "b", "c", "d", "e:f"],
            "the password keeps its colons"
        );
    }

    #[test]
    fn pgpass_file_is_read_only_when_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vigil-pgpass-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "h:5432:d:u:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = Target::parse("postgres://u@h/d", None, Some(&file)).unwrap();
        let Target::Postgres(pg) = t else { panic!() };
        assert_eq!(pg.config.get_password(), Some(&b"from-file"[..]));
        let t = Target::parse("postgres://u:given@h/d", None, Some(&file)).unwrap();
        let Target::Postgres(pg) = t else { panic!() };
        assert_eq!(
            pg.config.get_password(),
            Some(&b"given"[..]),
            "the URL wins"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = Target::parse("postgres://u@h/d", None, Some(&file)).unwrap();
        let Target::Postgres(pg) = t else { panic!() };
        assert_eq!(pg.config.get_password(), None, "a readable file is ignored");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tls_configs_build() {
        assert!(tls_config(&TlsMode::Disable).unwrap().is_none());
        assert!(tls_config(&TlsMode::Require).unwrap().is_some());
        assert!(tls_config(&TlsMode::VerifyFull { ca_file: None })
            .unwrap()
            .is_some());
    }
}
