//! Shared application state, built once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use orinari_api::ValidationLimits;
use orinari_models::ModelBackend;
use orinari_store::Store;
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
}

impl AppState {
    /// State for the given models and limits.
    pub fn new(models: Vec<ServedModel>, max_input_chars: usize, max_body_bytes: usize) -> Self {
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
            }),
        }
    }

    /// The same state with the store that readiness checks (set once, before serving).
    pub fn with_store(mut self, store: Store) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.store = Some(store);
        }
        self
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
