//! Shared application state, built once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use orinari_api::ValidationLimits;
use orinari_models::ModelBackend;
use orinari_store::Store;
use orinari_store::backup::{Backups, Health};
use orinari_telemetry::Metrics;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// A model name and the backend that serves it.
#[derive(Clone)]
pub struct ServedModel {
    /// The name clients ask for.
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn ModelBackend>,
}

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    models: Vec<ServedModel>,
    limits: ValidationLimits,
    max_body_bytes: usize,
    created: u64,
    fingerprint: String,
    draining: AtomicBool,
    abort: watch::Sender<bool>,
    store: Option<Store>,
    metrics: Metrics,
    admin_token_sha256: Option<[u8; 32]>,
    backups: Option<(Arc<Backups>, watch::Receiver<Health>)>,
    screening: Option<crate::guard::Screening>,
    status: Option<Arc<orinari_status::StatusService>>,
    edge: Arc<crate::edge::Edge>,
    gateway: Option<Arc<orinari_balance::Gateway>>,
    acme_challenges: crate::acme::Challenges,
    certificates: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
}

impl AppState {
    /// State for the given models and limits.
    pub fn new(models: Vec<ServedModel>, max_input_chars: usize, max_body_bytes: usize) -> Self {
        let names: Vec<(String, Option<usize>)> =
            models.iter().map(|m| (m.name.clone(), None)).collect();
        let edge = Arc::new(crate::edge::Edge::new(
            orinari_config::admission::AdmissionConfig::default(),
            &names,
        ));
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            inner: Arc::new(Inner {
                models,
                limits: ValidationLimits { max_input_chars },
                max_body_bytes,
                created,
                fingerprint: format!("fp_orinari_{}", env!("CARGO_PKG_VERSION").replace('.', "_")),
                draining: AtomicBool::new(false),
                abort: watch::channel(false).0,
                store: None,
                metrics: Metrics::new(),
                admin_token_sha256: None,
                backups: None,
                screening: None,
                status: None,
                edge,
                gateway: None,
                acme_challenges: crate::acme::Challenges::default(),
                certificates: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The same state serving the gateway's models (pools of upstream
    /// backends and single ones, in config order) in place of those given
    /// to [`AppState::new`] (set once, before serving).
    pub fn with_gateway(mut self, gateway: Arc<orinari_balance::Gateway>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.models = gateway
                .models()
                .map(|(name, backend)| ServedModel {
                    name: name.to_string(),
                    backend,
                })
                .collect();
            inner.gateway = Some(gateway);
        }
        self
    }

    /// The gateway, for the admin API (absent in tests that serve models directly).
    pub fn gateway(&self) -> Option<&orinari_balance::Gateway> {
        self.inner.gateway.as_deref()
    }

    /// The same state with the store that readiness checks (set once, before serving).
    pub fn with_store(mut self, store: Store) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.store = Some(store);
        }
        self
    }

    /// The same state with this admission edge: API keys, rate limits,
    /// queues, connection protection, firewall (set once, before serving).
    pub fn with_edge(mut self, edge: crate::edge::Edge) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.edge = Arc::new(edge);
        }
        self
    }

    /// The TLS certificates `POST /admin/v1/reload` reloads (set once, by
    /// `serve_all`, when HTTPS is on).
    pub fn set_certificates(&self, certificates: Arc<crate::tls::Certificates>) {
        let _ = self.inner.certificates.set(certificates);
    }

    /// The TLS certificates, when HTTPS is on.
    pub fn certificates(&self) -> Option<&Arc<crate::tls::Certificates>> {
        self.inner.certificates.get()
    }

    /// The ACME HTTP-01 challenges open right now (shared with the ACME client).
    pub fn acme_challenges(&self) -> &crate::acme::Challenges {
        &self.inner.acme_challenges
    }

    /// The admission edge.
    pub fn edge(&self) -> &crate::edge::Edge {
        &self.inner.edge
    }

    /// The same state screening user messages for prompt injection (set
    /// once, before serving; without it nothing is screened).
    pub fn with_screening(mut self, screening: crate::guard::Screening) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.screening = Some(screening);
        }
        self
    }

    /// Prompt-injection screening, when configured.
    pub fn screening(&self) -> Option<&crate::guard::Screening> {
        self.inner.screening.as_ref()
    }

    /// The same state guarding `/admin/*` with this token (set once, before serving).
    pub fn with_admin_token_hash(mut self, sha256: [u8; 32]) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.admin_token_sha256 = Some(sha256);
        }
        self
    }

    /// The same state with the backup engine and its health (set once, before serving).
    pub fn with_backups(mut self, engine: Arc<Backups>, health: watch::Receiver<Health>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.backups = Some((engine, health));
        }
        self
    }

    /// The same state with the status page service (set once, before serving).
    pub fn with_status(mut self, status: Arc<orinari_status::StatusService>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.status = Some(status);
        }
        self
    }

    /// The status page service, when one runs.
    pub fn status(&self) -> Option<&Arc<orinari_status::StatusService>> {
        self.inner.status.as_ref()
    }

    /// Whether `token` is the admin token. Compares SHA-256 digests, so the
    /// comparison time says nothing about the token.
    pub fn is_admin(&self, token: &str) -> bool {
        self.inner
            .admin_token_sha256
            .is_some_and(|want| hash_token(token) == want)
    }

    /// The backup engine and its health, when backups are configured.
    pub fn backups(&self) -> Option<(&Arc<Backups>, Health)> {
        self.inner
            .backups
            .as_ref()
            .map(|(engine, health)| (engine, *health.borrow()))
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store, when one is configured.
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    /// Look a model up by name.
    pub fn model(&self, name: &str) -> Option<&ServedModel> {
        self.inner.models.iter().find(|m| m.name == name)
    }

    /// All served models.
    pub fn models(&self) -> &[ServedModel] {
        &self.inner.models
    }

    /// Validation limits for requests.
    pub fn limits(&self) -> ValidationLimits {
        self.inner.limits
    }

    /// The body size limit.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Process start, Unix seconds.
    pub fn created(&self) -> u64 {
        self.inner.created
    }

    /// `system_fingerprint` for responses.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// Mark the instance as draining (readiness turns 503).
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// The drain deadline passed: end every in-flight answer now.
    pub fn abort_in_flight(&self) {
        self.inner.abort.send_replace(true);
    }

    /// Resolves once [`AppState::abort_in_flight`] has been called.
    pub fn aborted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.abort.subscribe();
        async move {
            let _ = rx.wait_for(|aborted| *aborted).await;
        }
    }
}

/// SHA-256 of a token, as kept in memory and in the store.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
