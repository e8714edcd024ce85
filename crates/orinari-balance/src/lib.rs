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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use orinari_models::{
    Embeddings, EmbeddingsRequest, GenerateRequest, Generation, ModelBackend, ModelError,
};
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

    /// Embed without following this model's own fallbacks.
    async fn embed_without_fallback(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<Embeddings, ModelError> {
        match self {
            Self::Pool(p) => p.embed_own(request).await,
            Self::Single(b) => b.embed(request.clone()).await,
        }
    }

    fn ready_without_fallback(&self) -> bool {
        match self {
            Self::Pool(p) => p.own_ready(),
            Self::Single(b) => b.ready(),
        }
    }
}

/// Models by name, for fallbacks. Shared by every generation of the
/// gateway, so a pool kept across a reload resolves its fallbacks against
/// the models served now.
#[derive(Default)]
pub struct Directory {
    models: arc_swap::ArcSwap<HashMap<String, Entry>>,
}

impl Directory {
    fn get(&self, name: &str) -> Option<Entry> {
        self.models.load().get(name).cloned()
    }
}

/// A health-check task and the model it belongs to.
type HealthTask = (String, tokio::task::JoinHandle<()>);

/// Every served model, in config order.
pub struct Gateway {
    models: Vec<(String, Entry)>,
    tasks: Mutex<Vec<HealthTask>>,
    directory: Arc<Directory>,
    metrics: ModelMetrics,
    /// Set by [`Gateway::retire`]: the pools kept by the next gateway must
    /// go on (rollouts included) when this one is dropped.
    retired: AtomicBool,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    directory: Arc<Directory>,
    models: Vec<(String, Entry)>,
    metrics: ModelMetrics,
    /// Health checks of pools carried over from the previous gateway.
    kept: Vec<HealthTask>,
    /// Pools built here, whose health checks start in `build`.
    fresh: Vec<String>,
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
        self.fresh.push(name.clone());
        self.models.push((name, Entry::Pool(Arc::new(pool))));
        self
    }

    /// Serve `name` exactly as `previous` serves it: the same pool, with its
    /// health, circuit breakers, weights and any running rollout, and its
    /// health checks. `false` when `previous` does not serve `name`.
    pub fn keep(&mut self, name: &str, previous: &Gateway) -> bool {
        let Some((_, entry)) = previous.models.iter().find(|(n, _)| n == name) else {
            return false;
        };
        if let Ok(mut tasks) = previous.tasks.lock() {
            let (mine, rest): (Vec<_>, Vec<_>) = tasks.drain(..).partition(|(n, _)| n == name);
            *tasks = rest;
            self.kept.extend(mine);
        }
        self.models.push((name.into(), entry.clone()));
        true
    }

    /// Finish: resolve fallbacks and start the active health checks of the
    /// pools built here (inside a tokio runtime). The gateway owns those
    /// tasks and the ones it kept.
    pub fn build(self) -> Arc<Gateway> {
        let map: HashMap<String, Entry> = self.models.iter().cloned().collect();
        self.directory.models.store(Arc::new(map));
        let mut tasks = self.kept;
        for (name, entry) in &self.models {
            if let Entry::Pool(p) = entry
                && self.fresh.contains(name)
            {
                for m in &p.members {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "owned by the Gateway: `tasks` is aborted when it is retired or shut down"
                    )]
                    let task = tokio::spawn(health::run(name.clone(), m.clone(), p.config.health));
                    tasks.push((name.clone(), task));
                }
            }
        }
        Arc::new(Gateway {
            models: self.models,
            tasks: Mutex::new(tasks),
            directory: self.directory,
            metrics: self.metrics,
            retired: AtomicBool::new(false),
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
            kept: Vec::new(),
            fresh: Vec::new(),
        }
    }

    /// Start building the gateway that replaces this one (a configuration
    /// reload): [`GatewayBuilder::keep`] carries unchanged models over, the
    /// rest are built anew. Fallbacks resolve against the new models as soon
    /// as it is built; then serve it and [`Gateway::retire`] this one.
    pub fn next(&self) -> GatewayBuilder {
        GatewayBuilder {
            directory: self.directory.clone(),
            models: Vec::new(),
            metrics: self.metrics.clone(),
            kept: Vec::new(),
            fresh: Vec::new(),
        }
    }

    /// This gateway has been replaced by `next`: stop the health checks and
    /// rollouts of the pools `next` did not keep. Requests still running on
    /// a dropped pool finish on it.
    pub fn retire(&self, next: &Gateway) {
        self.retired.store(true, Ordering::Release);
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|(_, t)| t.abort());
        }
        for (name, e) in &self.models {
            if let Entry::Pool(p) = e {
                let kept = next
                    .models
                    .iter()
                    .any(|(_, n)| matches!(n, Entry::Pool(q) if Arc::ptr_eq(p, q)));
                if !kept {
                    p.stop_rollout();
                    self.forget_gauges(name, p, next);
                    tracing::info!(model = %name, "backend pool retired");
                }
            }
        }
    }

    /// A retired pool's backends that `next` no longer serves leave the
    /// state gauges (their counters stay: totals never go back).
    fn forget_gauges(&self, model: &str, pool: &Pool, next: &Gateway) {
        let served_next = |backend: &str| {
            next.models.iter().any(|(n, e)| {
                n == model
                    && matches!(e, Entry::Pool(q) if q.members.iter().any(|m| m.spec.name == backend))
            })
        };
        for m in &pool.members {
            if !served_next(&m.spec.name) {
                let labels = orinari_telemetry::models::BackendLabels {
                    model: model.to_string(),
                    backend: m.spec.name.clone(),
                };
                self.metrics.backend_up.remove(&labels);
                self.metrics.circuit_state.remove(&labels);
            }
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
            tasks.drain(..).for_each(|(_, t)| t.abort());
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
        if !self.retired.load(Ordering::Acquire) {
            self.shutdown();
        }
    }
}
