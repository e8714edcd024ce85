//! `[server.tls]`, validated: a TLS listener with certificate files that are
//! reloaded when they change, or certificates issued and renewed by ACME.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ConfigError;
use crate::raw::RawTls;
use crate::validate::err;

/// The TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where HTTPS listens.
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// TLS 1.3 only (Mozilla "modern"); otherwise 1.3 and 1.2 with ECDHE + AEAD
    /// suites only (Mozilla "intermediate").
    pub modern: bool,
    /// Automatic certificates; `cert` and `key` are then files in its cache.
    pub acme: Option<AcmeConfig>,
}

/// `[server.tls] acme = { … }`: issuance and renewal by ACME (HTTP-01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// DNS names on the certificate.
    pub domains: Vec<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// Account contacts (`mailto:…`).
    pub contact: Vec<String>,
    /// Account, certificate and key (0600) live here.
    pub cache_dir: PathBuf,
    /// Renew when the certificate expires sooner than this.
    pub renew_before: std::time::Duration,
    /// How often the certificate's expiry is checked.
    pub check_interval: std::time::Duration,
    /// A PEM root to trust for the ACME server itself (private or test CAs).
    pub directory_ca: Option<PathBuf>,
    /// The environment variable holding the key (base64, 32 bytes) that
    /// seals the account and certificates shared through a PostgreSQL
    /// store; required there, unused with SQLite (files in `cache_dir`).
    pub key_env: Option<String>,
}

/// `acme.directory` default: Let's Encrypt production.
pub const ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `acme.cache_dir` default.
pub const ACME_CACHE_DIR: &str = "orinari-data/acme";
/// `acme.renew_before` default.
pub const ACME_RENEW_BEFORE: &str = "30d";
/// `acme.check_interval` default.
pub const ACME_CHECK_INTERVAL: &str = "12h";

/// `server.tls.listen` default.
pub const TLS_LISTEN: &str = "0.0.0.0:8443";

/// Validate `[server.tls]`.
pub fn validate(raw: &RawTls, name: &str) -> Result<TlsConfig, ConfigError> {
    let listen_s = raw.listen.as_deref().unwrap_or(TLS_LISTEN);
    let listen: SocketAddr = listen_s.parse().map_err(|_| {
        err(
            name,
            "server.tls.listen",
            format!("`{listen_s}` is not an address like 0.0.0.0:8443"),
        )
    })?;
    let file = |key: &str, v: &Option<String>| -> Result<PathBuf, ConfigError> {
        match v.as_deref() {
            Some(p) if !p.trim().is_empty() => Ok(PathBuf::from(p)),
            _ => Err(err(
                name,
                &format!("server.tls.{key}"),
                "is required: the path of a PEM file",
            )),
        }
    };
    let modern = raw.modern.unwrap_or(false);
    if let Some(a) = &raw.acme {
        if raw.cert.is_some() || raw.key.is_some() {
            return Err(err(
                name,
                "server.tls.acme",
                "give either `acme` or `cert` and `key`, not both",
            ));
        }
        let acme = acme(a, name)?;
        return Ok(TlsConfig {
            listen,
            cert: acme.cache_dir.join("cert.pem"),
            key: acme.cache_dir.join("key.pem"),
            modern,
            acme: Some(acme),
        });
    }
    Ok(TlsConfig {
        listen,
        cert: file("cert", &raw.cert)?,
        key: file("key", &raw.key)?,
        modern,
        acme: None,
    })
}

fn acme(a: &crate::raw::RawAcme, name: &str) -> Result<AcmeConfig, ConfigError> {
    if a.domains.is_empty() {
        return Err(err(
            name,
            "server.tls.acme.domains",
            "must list at least one DNS name",
        ));
    }
    for (i, d) in a.domains.iter().enumerate() {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(err(
                name,
                &format!("server.tls.acme.domains[{i}]"),
                format!("`{d}` is not a DNS name like example.org"),
            ));
        }
    }
    let directory = a.directory.clone().unwrap_or_else(|| ACME_DIRECTORY.into());
    if !directory.starts_with("https://") {
        return Err(err(
            name,
            "server.tls.acme.directory",
            "must be an https:// URL",
        ));
    }
    let contact: Vec<String> = a.contact.iter().cloned().collect();
    if let Some(c) = contact.iter().find(|c| !c.starts_with("mailto:")) {
        return Err(err(
            name,
            "server.tls.acme.contact",
            format!("`{c}` must start with mailto:"),
        ));
    }
    if let Some(env) = &a.key_env
        && (env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(err(
            name,
            "server.tls.acme.key_env",
            format!("`{env}` is not an environment variable name"),
        ));
    }
    let duration = |key: &str, v: &Option<String>, default: &str| {
        crate::validate::duration(
            name,
            &format!("server.tls.acme.{key}"),
            v.as_deref().unwrap_or(default),
        )
    };
    Ok(AcmeConfig {
        domains: a.domains.clone(),
        directory,
        contact,
        cache_dir: PathBuf::from(a.cache_dir.as_deref().unwrap_or(ACME_CACHE_DIR)),
        renew_before: duration("renew_before", &a.renew_before, ACME_RENEW_BEFORE)?,
        check_interval: duration("check_interval", &a.check_interval, ACME_CHECK_INTERVAL)?,
        directory_ca: a.directory_ca.as_ref().map(PathBuf::from),
        key_env: a.key_env.clone(),
    })
}
