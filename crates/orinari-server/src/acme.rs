//! Automatic certificates (ACME, RFC 8555, HTTP-01) with `instant-acme`:
//! the account and the certificate live in `cache_dir` (private keys 0600);
//! a certificate that expires within `renew_before` (or is missing) is
//! ordered again, the challenge answered on the plain listener at
//! `/.well-known/acme-challenge/{token}`, and the new pair written
//! atomically and loaded into the running TLS listener — no restart.
//!
//! Until the first certificate arrives, handshakes get a self-signed
//! placeholder for the configured names.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use orinari_config::tls::AcmeConfig;
use tokio::sync::watch;

use crate::tls::Certificates;

/// How soon a failed issuance is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server or the protocol failed.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The order did not become ready.
    #[error("ACME order ended as {0}")]
    Order(String),
    /// A cache file could not be read or written.
    #[error("ACME cache {path}: {why}")]
    Cache {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// HTTP-01 tokens being validated right now: token → key authorization.
#[derive(Debug, Default, Clone)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    /// The key authorization for `token`, while its challenge is open.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A self-signed certificate and key (PEM) for `domains`, served until the
/// first real one arrives.
pub fn placeholder(domains: &[String]) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(domains.to_vec())?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Seconds until the certificate in `pem` expires (negative when expired),
/// or `None` when it cannot be read.
fn expires_in(pem: &[u8]) -> Option<i64> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(not_after - now)
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Cache {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename), with
/// mode 0600 for secrets.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), AcmeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| cache_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| cache_err(&tmp, e))?;
    f.sync_all().map_err(|e| cache_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| cache_err(path, e))
}

/// The ACME client of one instance.
pub struct Acme {
    config: AcmeConfig,
    challenges: Challenges,
    certificates: Arc<Certificates>,
}

impl Acme {
    /// An ACME client that keeps `certificates` current.
    pub fn new(
        config: AcmeConfig,
        challenges: Challenges,
        certificates: Arc<Certificates>,
    ) -> Self {
        Self {
            config,
            challenges,
            certificates,
        }
    }

    /// Whether the cached certificate is missing or expires within `renew_before`.
    pub fn due(&self) -> bool {
        let path = self.config.cache_dir.join("cert.pem");
        match std::fs::read(&path).ok().as_deref().and_then(expires_in) {
            Some(left) => left < self.config.renew_before.as_secs() as i64,
            None => true,
        }
    }

    /// Issue or renew whenever due, until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = if self.due() {
                // Shutdown does not wait for an order in flight.
                let issued = tokio::select! {
                    r = self.issue() => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match issued {
                    Ok(()) => self.config.check_interval,
                    Err(e) => {
                        tracing::error!(error = %e, "certificate issuance failed; retrying");
                        RETRY_AFTER_FAILURE.min(self.config.check_interval)
                    }
                }
            } else {
                self.config.check_interval
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = || match &self.config.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let path = self.config.cache_dir.join("account.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let creds: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| cache_err(&path, e))?;
            return Ok(builder()?.from_credentials(creds).await?);
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_vec(&creds).map_err(|e| cache_err(&path, e))?;
        write_file(&path, &json, true)?;
        tracing::info!(directory = %self.config.directory, "ACME account created");
        Ok(account)
    }

    /// Order a certificate for the configured names and load it.
    pub async fn issue(&self) -> Result<(), AcmeError> {
        let dir = &self.config.cache_dir;
        std::fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Order("offered no http-01 challenge".into()))?;
            self.challenges.set(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await;
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                self.challenges.clear();
                return Err(e.into());
            }
        };
        if status != OrderStatus::Ready {
            self.challenges.clear();
            return Err(AcmeError::Order(format!("{status:?}")));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
        self.challenges.clear();
        // Key first: a reload that sees the new certificate with the old key
        // fails the key check and keeps the old pair until both are in place.
        write_file(&dir.join("key.pem"), key_pem.as_bytes(), true)?;
        write_file(&dir.join("cert.pem"), chain_pem.as_bytes(), false)?;
        if let Err(e) = self.certificates.reload() {
            tracing::error!(error = %e, "the issued certificate did not load");
        }
        tracing::info!(domains = ?self.config.domains, "certificate issued");
        Ok(())
    }
}
