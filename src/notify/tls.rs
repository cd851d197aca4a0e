//! The certificates the handlers trust: Mozilla's root store (the
//! `webpki-roots` crate, so nothing depends on the host's CA bundle), plus
//! the CAs in `VIGIL_NOTIFY_CA_FILE` (PEM) for a relay or receiver with a
//! private CA.
//!
//! Read and checked once at start, so a missing or unparsable CA file stops
//! the sink with one line instead of failing every page. The same set
//! serves HTTPS (a rustls `ClientConfig` for ureq) and SMTP (lettre's TLS
//! parameters are built from the same certificates). There is no way to
//! turn verification off: a certificate that does not verify fails the
//! attempt.

use crate::config::{ConfigError, Env};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

pub const CA_FILE: &str = "VIGIL_NOTIFY_CA_FILE";

/// The trusted certificates.
#[derive(Clone)]
pub struct Roots {
    /// The CAs from `VIGIL_NOTIFY_CA_FILE` (DER), trusted besides Mozilla's.
    pub extra: Vec<CertificateDer<'static>>,
    /// The rustls configuration for HTTPS: Mozilla's roots and `extra`.
    pub client_config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roots(mozilla + {} from {CA_FILE})", self.extra.len())
    }
}

impl Roots {
    pub fn from_env(env: &Env) -> Result<Roots, ConfigError> {
        let extra = match env.get(CA_FILE) {
            None => Vec::new(),
            Some(path) => read_ca_file(path)?,
        };
        Roots::new(extra).map_err(|e| ConfigError::new(CA_FILE, env.get(CA_FILE).unwrap_or(""), e))
    }

    /// Mozilla's roots plus `extra`; the error is a sentence fragment.
    pub fn new(extra: Vec<CertificateDer<'static>>) -> Result<Roots, String> {
        let mut store = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &extra {
            store
                .add(cert.clone())
                .map_err(|e| format!("a certificate is not usable as a CA: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Roots {
            extra,
            client_config: Arc::new(client_config),
        })
    }
}

/// The certificates of a PEM file, at least one.
fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |why: String| ConfigError::new(CA_FILE, path, why);
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mozilla_roots_without_a_ca_file() {
        let roots = Roots::from_env(&Env::from_pairs([])).unwrap();
        assert!(roots.extra.is_empty());
    }

    #[test]
    fn a_bad_ca_file_names_the_variable() {
        let dir = std::env::temp_dir().join(format!("vigil-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        for path in [not_pem.to_str().unwrap(), "/nonexistent/ca.pem"] {
            let err = Roots::from_env(&Env::from_pairs([(CA_FILE, path)])).unwrap_err();
            assert_eq!(err.var, CA_FILE, "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
