//! `[server.tls]`, validated: a TLS listener with certificate files that are
//! reloaded when they change. (ACME issuance is refused until implemented.)

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ConfigError;
use crate::raw::RawTls;

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
}

/// `server.tls.listen` default.
pub const TLS_LISTEN: &str = "0.0.0.0:8443";

fn err(name: &str, key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{name}: `{key}`: {why}"))
}

/// Validate `[server.tls]`.
pub fn validate(raw: &RawTls, name: &str) -> Result<TlsConfig, ConfigError> {
    if raw.acme.is_some() {
        return Err(err(
            name,
            "server.tls.acme",
            "automatic certificates (ACME) are not available in this version; give `cert` and `key` files (renewed by your ACME client; they are reloaded when they change)",
        ));
    }
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
    Ok(TlsConfig {
        listen,
        cert: file("cert", &raw.cert)?,
        key: file("key", &raw.key)?,
        modern: raw.modern.unwrap_or(false),
    })
}
