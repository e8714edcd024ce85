//! HTTPS: rustls with Mozilla's "intermediate" profile (TLS 1.3, and 1.2 with
//! ECDHE + AEAD suites only — rustls offers nothing weaker) or "modern" (1.3
//! only), HTTP/2 by ALPN, and a certificate that is reloaded when its files
//! change: new handshakes get the new certificate, open connections keep
//! theirs, nothing restarts. In a cluster with ACME the certificate comes
//! from the store instead ([`Certificates::install`], by the ACME client).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use orinari_config::tls::TlsConfig;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn from_pem(cert: &[u8], key: &[u8], what: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let bad = |why: String| TlsError::Config(format!("{what}: {why}"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no PEM certificate".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(e.to_string()))?;
    let signing = ring::sign::any_supported_type(&der).map_err(|e| bad(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| bad(format!("the key does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_err = |p: &Path, why: String| TlsError::File {
        path: p.display().to_string(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no PEM certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let signing = ring::sign::any_supported_type(&der)
        .map_err(|e| file_err(key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| file_err(key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// A file's modification time and size, when it can be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The current certificate, swapped on reload.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<(Stamp, Stamp)>,
    /// Set when the certificate comes from the store (a cluster with ACME):
    /// the files are then neither watched nor reloaded.
    from_store: AtomicBool,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl Certificates {
    /// Load the files now (an error here stops start-up), or — when there
    /// are no files yet and a `placeholder` (PEM certificate and key) is
    /// given — serve that until the files appear.
    pub fn open(
        cert: &Path,
        key: &Path,
        placeholder: Option<(String, String)>,
    ) -> Result<Self, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let current = match (load(cert, key), placeholder) {
            (Ok(c), _) => c,
            (Err(_), Some((c, k))) if !cert.exists() => {
                from_pem(c.as_bytes(), k.as_bytes(), "placeholder certificate")?
            }
            (Err(e), _) => return Err(e),
        };
        Ok(Self {
            current: RwLock::new(current),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            seen: RwLock::new(seen),
            from_store: AtomicBool::new(false),
        })
    }

    /// From now on the certificate comes from the store through
    /// [`Certificates::install`]: the files are no longer watched, and a
    /// reload (SIGHUP, `POST /admin/v1/reload`) leaves it as it is.
    pub fn follow_store(&self) {
        self.from_store.store(true, Ordering::Relaxed);
    }

    /// Serve this PEM chain and key from the next handshake on (they must
    /// match); on failure keep serving the current certificate.
    pub fn install(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let fresh = from_pem(cert, key, "stored certificate")?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Load the files again; on failure keep serving the current certificate.
    /// A certificate that comes from the store is kept as it is.
    pub fn reload(&self) -> Result<(), TlsError> {
        if self.from_store.load(Ordering::Relaxed) {
            return Ok(());
        }
        let seen = (stamp(&self.cert), stamp(&self.key));
        let fresh = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = seen;
        tracing::info!(cert = %self.cert.display(), "TLS certificate loaded");
        Ok(())
    }

    fn changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        *self.seen.read().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// Reload whenever the files change, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_CHECK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if !self.from_store.load(Ordering::Relaxed)
                && self.changed()
                && let Err(e) = self.reload()
            {
                // Half-written files (cert renewed before key) land here:
                // keep the old pair and try again when a file changes again.
                tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the current one");
                *self.seen.write().unwrap_or_else(|p| p.into_inner()) =
                    (stamp(&self.cert), stamp(&self.key));
            }
        }
    }
}

/// The HTTPS side: settings, the reloading certificates and the acceptor.
#[derive(Clone)]
pub struct Tls {
    /// Settings.
    pub config: TlsConfig,
    /// The certificates (reload with [`Certificates::reload`]).
    pub certificates: Arc<Certificates>,
    /// The rustls acceptor.
    pub acceptor: TlsAcceptor,
    /// With ACME in a cluster: the store and key the certificate is shared
    /// through ([`Tls::with_shared_acme`]); `None` keeps it in `cache_dir`.
    pub shared_acme: Option<crate::acme::SharedAcme>,
}

impl Tls {
    /// Load the certificate and build the rustls configuration.
    pub fn new(config: TlsConfig) -> Result<Self, TlsError> {
        // With ACME the files may not exist yet: a self-signed placeholder
        // for the configured names is served until the first issuance.
        let placeholder = match &config.acme {
            Some(a) => Some(
                crate::acme::placeholder(&a.domains)
                    .map_err(|e| TlsError::Config(format!("placeholder certificate: {e}")))?,
            ),
            None => None,
        };
        let certificates = Arc::new(Certificates::open(&config.cert, &config.key, placeholder)?);
        let versions: &[&rustls::SupportedProtocolVersion] = if config.modern {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(versions)
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config,
            certificates,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            shared_acme: None,
        })
    }

    /// The same listener with ACME shared through `store` and sealed with
    /// `key` (several instances on one PostgreSQL store): only the leader
    /// orders, every instance serves the stored certificate.
    pub fn with_shared_acme(
        mut self,
        store: orinari_store::Store,
        key: orinari_store::AcmeKey,
    ) -> Self {
        self.shared_acme = Some(crate::acme::SharedAcme { store, key });
        self
    }
}
