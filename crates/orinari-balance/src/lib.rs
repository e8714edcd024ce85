//! Backend pools for upstream models: selection (round-robin, weighted,
//! P2C on peak-EWMA latency, region preference), health (active probes and
//! passive circuit breakers), failover before the first token (bounded
//! attempts, backoff with jitter, a time budget, then the fallback chain),
//! timeouts (first token, idle, total), and rollouts by group.
//!
//! A [`Pool`] is a [`ModelBackend`], so the server serves a pool exactly as
//! it serves the embedded model. The [`Gateway`] holds every served model,
//! resolves fallbacks by name, owns the health-check tasks, and answers the
//! admin operations. This crate knows nothing of HTTP routes.

mod breaker;
pub mod config;
mod health;
mod member;
mod pool;
mod relay;
mod rollout;
mod select;
mod status;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use orinari_models::{GenerateRequest, Generation, ModelBackend, ModelError};
use orinari_telemetry::models::ModelMetrics;

pub use breaker::CircuitState;
pub use config::{BackendSpec, BreakerConfig, HealthConfig, PoolConfig, Retry, Strategy, Timeouts};
pub use pool::Pool;
pub use rollout::{DEFAULT_STEP_INTERVAL, RolloutRequest, RolloutStatus};
pub use status::{BackendStatus, ModelStatus};

/// Errors of the admin operations, each naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// No model of that name.
    #[error("there is no model `{0}`")]
    UnknownModel(String),
    /// The model is served by one backend (the embedded model), not a pool.
    #[error("model `{0}` is not served by a backend pool")]
    NotAPool(String),
    /// No backend of that name in the model.
    #[error("model `{model}` has no backend `{backend}`")]
    UnknownBackend {
        /// The model.
        model: String,
        /// The backend asked for.
        backend: String,
    },
    /// A bad field.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A lock was poisoned (a bug).
    #[error("internal error")]
    Internal,
}

impl BalanceError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A served model: a pool, or a single backend (the embedded model).
#[derive(Clone)]
pub enum Entry {
    /// Balanced upstream backends.
    Pool(Arc<Pool>),
    /// One backend.
    Single(Arc<dyn ModelBackend>),
}

impl Entry {
    /// As the trait object the server serves.
    pub fn backend(&self) -> Arc<dyn ModelBackend> {
        match self {
            Self::Pool(p) => p.clone(),
            Self::Single(b) => b.clone(),
        }
    }

    /// Start without following this model's own fallbacks (a fallback's
    /// fallbacks are not followed, so chains never loop).
    async fn start_without_fallback(
        &self,
        request: &GenerateRequest,
    ) -> Result<Generation, ModelError> {
        match self {
            Self::Pool(p) => p.start_own(request).await,
            Self::Single(b) => b.start(request.clone()).await,
        }
    }

    fn ready_without_fallback(&self) -> bool {
        match self {
            Self::Pool(p) => p.own_ready(),
            Self::Single(b) => b.ready(),
        }
    }
}

/// Models by name, for fallbacks (filled once, after every model is built).
#[derive(Default)]
pub struct Directory {
    models: OnceLock<HashMap<String, Entry>>,
}

impl Directory {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.models.get()?.get(name)
    }
}

/// Every served model, in config order.
pub struct Gateway {
    models: Vec<(String, Entry)>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    directory: Arc<Directory>,
    models: Vec<(String, Entry)>,
    metrics: ModelMetrics,
}

impl GatewayBuilder {
    /// Serve a single backend (the embedded model) under `name`.
    pub fn single(&mut self, name: &str, backend: Arc<dyn ModelBackend>) -> &mut Self {
        self.models.push((name.into(), Entry::Single(backend)));
        self
    }

    /// Serve a pool.
    pub fn pool(&mut self, config: PoolConfig, backends: Vec<BackendSpec>) -> &mut Self {
        let name = config.name.clone();
        let pool = Pool::new(config, backends, self.directory.clone(), &self.metrics);
        self.models.push((name, Entry::Pool(Arc::new(pool))));
        self
    }

    /// Finish: resolve fallbacks and start the active health checks
    /// (inside a tokio runtime). The gateway owns those tasks.
    pub fn build(self) -> Arc<Gateway> {
        let map: HashMap<String, Entry> = self.models.iter().cloned().collect();
        let _ = self.directory.models.set(map);
        let mut tasks = Vec::new();
        for (name, entry) in &self.models {
            if let Entry::Pool(p) = entry {
                for m in &p.members {
                    tasks.push(tokio::spawn(health::run(
                        name.clone(),
                        m.clone(),
                        p.config.health,
                    )));
                }
            }
        }
        Arc::new(Gateway {
            models: self.models,
            tasks: Mutex::new(tasks),
        })
    }
}

impl Gateway {
    /// Start building; metrics are recorded into `metrics`.
    pub fn builder(metrics: ModelMetrics) -> GatewayBuilder {
        GatewayBuilder {
            directory: Arc::new(Directory::default()),
            models: Vec::new(),
            metrics,
        }
    }

    /// Every model: name and what serves it, in config order.
    pub fn models(&self) -> impl Iterator<Item = (&str, Arc<dyn ModelBackend>)> {
        self.models.iter().map(|(n, e)| (n.as_str(), e.backend()))
    }

    fn pool(&self, name: &str) -> Result<&Arc<Pool>, BalanceError> {
        match self.models.iter().find(|(n, _)| n == name) {
            Some((_, Entry::Pool(p))) => Ok(p),
            Some((_, Entry::Single(_))) => Err(BalanceError::NotAPool(name.into())),
            None => Err(BalanceError::UnknownModel(name.into())),
        }
    }

    /// Every pool's state.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.models
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Pool(p) => Some(ModelStatus::of(p)),
                Entry::Single(_) => None,
            })
            .collect()
    }

    /// One pool's state.
    pub fn model_status(&self, name: &str) -> Result<ModelStatus, BalanceError> {
        self.pool(name).map(|p| ModelStatus::of(p))
    }

    /// Set a backend's weight and/or drain it (`drain = false` undrains).
    pub fn set_backend(
        &self,
        model: &str,
        backend: &str,
        weight: Option<u32>,
        drain: Option<bool>,
    ) -> Result<BackendStatus, BalanceError> {
        let pool = self.pool(model)?;
        let member = pool
            .members
            .iter()
            .find(|m| m.spec.name == backend)
            .ok_or_else(|| BalanceError::UnknownBackend {
                model: model.into(),
                backend: backend.into(),
            })?;
        if let Some(w) = weight {
            if w > rollout::MAX_GROUP_WEIGHT {
                return Err(BalanceError::invalid(
                    "weight",
                    format!("{w} is over the limit of {}", rollout::MAX_GROUP_WEIGHT),
                ));
            }
            member.weight.store(w, Ordering::Relaxed);
            pool.apply_weights();
        }
        if let Some(d) = drain {
            member.drained.store(d, Ordering::Relaxed);
        }
        tracing::info!(%model, %backend, ?weight, ?drain, "backend changed by an operator");
        Ok(BackendStatus::of(member, std::time::Instant::now()))
    }

    /// Start a rollout on a pool.
    pub fn rollout(&self, model: &str, req: RolloutRequest) -> Result<ModelStatus, BalanceError> {
        let pool = self.pool(model)?;
        pool.rollout(req)?;
        Ok(ModelStatus::of(pool))
    }

    /// Roll a pool back to the weights before its last rollout.
    pub fn rollback(&self, model: &str) -> Result<ModelStatus, BalanceError> {
        let pool = self.pool(model)?;
        pool.rollback()?;
        Ok(ModelStatus::of(pool))
    }

    /// Stop the health checks and any running rollout.
    pub fn shutdown(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|t| t.abort());
        }
        for (_, e) in &self.models {
            if let Entry::Pool(p) = e {
                p.stop_rollout();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}
