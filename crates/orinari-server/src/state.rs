//! Shared application state, built once at start-up. What a configuration
//! reload may change (the gateway and the chat pipeline: models, the
//! admission edge, screening, validation limits) sits in one [`Live`] value that is swapped as a whole, so a
//! request sees either the old configuration or the new one, never a mix;
//! requests already running keep the value they started with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use orinari_api::ValidationLimits;
use orinari_chat::{Chat, Screening, ServedModel};
use orinari_limits::Edge;
use orinari_store::Store;
use orinari_store::backup::{Backups, Health};
use orinari_telemetry::Metrics;
use tokio::sync::watch;

/// The part of the state that a configuration reload replaces.
#[derive(Clone)]
pub struct Live {
    /// The gateway serving the models (absent in tests that serve models directly).
    pub gateway: Option<Arc<orinari_balance::Gateway>>,
    /// The chat pipeline: served models, admission (API keys, rate limits,
    /// queues, firewall), screening and input limits.
    pub chat: Chat,
}

impl Live {
    /// The same with new admission, screening and input limits (a reload).
    pub fn reconfigured(
        self,
        edge: Edge,
        screening: Option<Screening>,
        max_input_chars: usize,
    ) -> Self {
        Self {
            chat: self
                .chat
                .with_edge(Arc::new(edge))
                .with_screening(screening)
                .with_limits(ValidationLimits { max_input_chars }),
            ..self
        }
    }

    /// The same, serving the gateway's models (pools of upstream backends
    /// and single ones, in config order).
    pub fn serve(self, gateway: Arc<orinari_balance::Gateway>) -> Self {
        // Pools record their own per-model metrics, per member.
        let pools: Vec<String> = gateway.status().into_iter().map(|p| p.name).collect();
        let models = gateway
            .models()
            .map(|(name, backend)| ServedModel {
                name: name.to_string(),
                backend,
            })
            .collect();
        Self {
            chat: self
                .chat
                .serving(models, |name| pools.iter().any(|p| p == name)),
            gateway: Some(gateway),
        }
    }

    /// Look a model up by name.
    pub fn model(&self, name: &str) -> Option<&ServedModel> {
        self.chat.model(name)
    }

    /// API keys, rate limits, queues, firewall.
    pub fn edge(&self) -> &Arc<Edge> {
        self.chat.edge()
    }
}

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// Applies a new configuration to a running server (SIGHUP and
/// `POST /admin/v1/reload`). The binary implements it: it alone knows where
/// the configuration comes from and how backends are built.
pub trait Reload: Send + Sync {
    /// Read the configuration again and apply what can change while serving.
    fn reload<'a>(
        &'a self,
        state: &'a AppState,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ReloadReport, String>> + Send + 'a>,
    >;
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Sections applied now.
    pub applied: Vec<String>,
    /// Sections that changed but take effect only after a restart.
    pub restart_required: Vec<String>,
    /// `reloaded`, or `not configured` without HTTPS.
    pub tls_certificate: &'static str,
}

impl Default for ReloadReport {
    fn default() -> Self {
        Self {
            applied: Vec::new(),
            restart_required: Vec::new(),
            tls_certificate: "not configured",
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The configuration does not validate (the message names the key and
    /// why, never a file path); the running one stays.
    #[error("{0}")]
    Config(String),
    /// The certificate or key file was refused; the current certificate stays.
    #[error("the TLS certificate was not reloaded")]
    Tls,
}

struct Inner {
    live: arc_swap::ArcSwap<Live>,
    reloader: std::sync::OnceLock<Arc<dyn Reload>>,
    max_body_bytes: usize,
    created: u64,
    fingerprint: String,
    draining: AtomicBool,
    abort: watch::Sender<bool>,
    store: Option<Store>,
    metrics: Arc<Metrics>,
    admin_token_sha256: Option<[u8; 32]>,
    backups: Option<(Arc<Backups>, watch::Receiver<Health>)>,
    status: Option<Arc<orinari_status::StatusService>>,
    acme_challenges: crate::acme::Challenges,
    certificates: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    indexer: std::sync::OnceLock<SourceIndexer>,
    instance: std::sync::OnceLock<String>,
}

/// The files sources' background indexers, shared between their owner (the
/// binary, which takes them out and stops them at shutdown) and the admin
/// API (which asks one to reindex). `None` once stopped.
pub type SourceIndexer = Arc<std::sync::Mutex<Option<orinari_sources::Indexer>>>;

impl AppState {
    /// State for the given models and limits.
    pub fn new(models: Vec<ServedModel>, max_input_chars: usize, max_body_bytes: usize) -> Self {
        let names: Vec<(String, Option<usize>)> =
            models.iter().map(|m| (m.name.clone(), None)).collect();
        let edge = Arc::new(Edge::new(
            orinari_config::admission::AdmissionConfig::default(),
            &names,
        ));
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let metrics = Arc::new(Metrics::new());
        let chat = Chat::new(
            models,
            edge,
            ValidationLimits { max_input_chars },
            metrics.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                live: arc_swap::ArcSwap::from_pointee(Live {
                    gateway: None,
                    chat,
                }),
                reloader: std::sync::OnceLock::new(),
                max_body_bytes,
                created,
                fingerprint: format!("fp_orinari_{}", env!("CARGO_PKG_VERSION").replace('.', "_")),
                draining: AtomicBool::new(false),
                abort: watch::channel(false).0,
                store: None,
                metrics,
                admin_token_sha256: None,
                backups: None,
                status: None,
                acme_challenges: crate::acme::Challenges::default(),
                certificates: std::sync::OnceLock::new(),
                indexer: std::sync::OnceLock::new(),
                instance: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The same state serving the gateway's models (pools of upstream
    /// backends and single ones, in config order) in place of those given
    /// to [`AppState::new`] (set once, before serving).
    pub fn with_gateway(self, gateway: Arc<orinari_balance::Gateway>) -> Self {
        self.update(|live| live.serve(gateway));
        self
    }

    /// The same state serving `embedder` as `orinari-embed` (set once,
    /// before serving; reloads keep it).
    pub fn with_embedder(self, embedder: Option<Arc<orinari_embed::Embedder>>) -> Self {
        self.update(|live| Live {
            chat: live.chat.with_embedder(embedder),
            ..live
        });
        self
    }

    /// The gateway, for the admin API (absent in tests that serve models directly).
    pub fn gateway(&self) -> Option<Arc<orinari_balance::Gateway>> {
        self.inner.live.load().gateway.clone()
    }

    /// What a reload may change, as it is now. Hold it for the length of
    /// one request so the request sees one configuration.
    pub fn live(&self) -> Arc<Live> {
        self.inner.live.load_full()
    }

    /// Replace the reloadable part: `change` gets a copy of the current
    /// value and returns the new one. Requests already running keep theirs.
    pub fn update(&self, change: impl FnOnce(Live) -> Live) {
        let next = change(Live::clone(&self.inner.live.load()));
        self.inner.live.store(Arc::new(next));
    }

    /// The same state reloading its configuration with `reloader` (set once,
    /// before serving).
    pub fn with_reloader(self, reloader: Arc<dyn Reload>) -> Self {
        let _ = self.inner.reloader.set(reloader);
        self
    }

    /// SIGHUP and `POST /admin/v1/reload`: read the configuration again and
    /// apply what can change while serving (when a reloader is set), then
    /// reload the TLS certificate files (when HTTPS is on). A configuration
    /// that does not validate changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut report = match self.inner.reloader.get().cloned() {
            Some(r) => r.reload(self).await.map_err(ReloadError::Config)?,
            None => ReloadReport::default(),
        };
        if let Some(c) = self.certificates() {
            c.reload().map_err(|e| {
                tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the current one");
                ReloadError::Tls
            })?;
            report.tls_certificate = "reloaded";
        }
        Ok(report)
    }

    /// The same state with the exact response cache of the models that
    /// opted in (set once, before serving; kept across reloads).
    pub fn with_response_cache(self, cache: orinari_chat::ResponseCache) -> Self {
        let cache = Arc::new(cache);
        self.update(|live| Live {
            chat: live.chat.with_response_cache(Some(cache.clone())),
            ..live
        });
        self
    }

    /// The same state answering grounded models from these sources (set
    /// once, before serving; a reload keeps them).
    pub fn with_retrieval(self, retrieval: orinari_chat::Retrieval) -> Self {
        self.update(|live| Live {
            chat: live.chat.with_retrieval(Some(retrieval)),
            ..live
        });
        self
    }

    /// The files sources' indexers, for `POST /admin/v1/sources/{name}/reindex`
    /// (set once, before serving; the caller keeps its owner's handle).
    pub fn with_indexer(self, indexer: SourceIndexer) -> Self {
        let _ = self.inner.indexer.set(indexer);
        self
    }

    /// The same state knowing its id among the instances of a cluster
    /// (`/admin/v1/instances`; set once, before serving).
    pub fn with_instance(self, id: String) -> Self {
        let _ = self.inner.instance.set(id);
        self
    }

    /// This instance's id, when it is registered in the store.
    pub fn instance(&self) -> Option<&str> {
        self.inner.instance.get().map(String::as_str)
    }

    /// The files sources' indexers, while they run.
    pub fn indexer(&self) -> Option<&SourceIndexer> {
        self.inner.indexer.get()
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
    pub fn with_edge(self, edge: Edge) -> Self {
        let edge = Arc::new(edge);
        self.update(|live| Live {
            chat: live.chat.with_edge(edge),
            ..live
        });
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
    pub fn edge(&self) -> Arc<Edge> {
        self.inner.live.load().edge().clone()
    }

    /// The same state screening user messages for prompt injection (set
    /// once, before serving; without it nothing is screened).
    pub fn with_screening(self, screening: Screening) -> Self {
        self.update(|live| Live {
            chat: live.chat.with_screening(Some(screening)),
            ..live
        });
        self
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
            .is_some_and(|want| crate::http::hash_token(token) == want)
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
    pub fn model(&self, name: &str) -> Option<ServedModel> {
        self.inner.live.load().model(name).cloned()
    }

    /// All served models, in config order.
    pub fn models(&self) -> Vec<ServedModel> {
        self.inner.live.load().chat.models().cloned().collect()
    }

    /// Validation limits for requests.
    pub fn limits(&self) -> ValidationLimits {
        self.inner.live.load().chat.limits()
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
