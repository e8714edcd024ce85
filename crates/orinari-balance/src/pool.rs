//! A model's pool of backends: pick one, fail over before the first token
//! (bounded attempts, backoff with jitter, a time budget), then walk the
//! fallback chain. Implements [`ModelBackend`], so the server holds a pool
//! exactly like the embedded model. Embeddings requests take the same way
//! (selection, circuit permits, failover, fallbacks), whole.
//!
//! Panic routing (Envoy's term): when no backend passes its active health
//! check, the checks are more likely wrong than every backend — one probe
//! slower than its timeout on a loaded machine takes the last backend out —
//! so requests go to every backend whose circuit lets them through, and the
//! circuit breakers (the requests' own outcomes) decide. A pool whose
//! backends are really down costs a few failed attempts (their errors are
//! the answers) until their circuits open; then it refuses at once, as
//! without panic routing (`Unavailable`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use orinari_models::{
    BoxFuture, Embeddings, EmbeddingsRequest, GenerateRequest, Generation, ModelBackend,
    ModelError, ModelInfo, Outcome,
};
use orinari_telemetry::models::ModelMetrics;

use crate::Directory;
use crate::breaker::CircuitState;
use crate::config::{BackendSpec, PoolConfig};
use crate::member::{InFlight, Member};
use crate::relay;
use crate::rollout::{Groups, RolloutState};
use crate::select::{Candidate, Selector, random_below};

/// A model served by a pool of backends.
pub struct Pool {
    pub(crate) config: PoolConfig,
    pub(crate) members: Vec<Arc<Member>>,
    selector: Selector,
    pub(crate) groups: RwLock<Groups>,
    pub(crate) rollout: Mutex<RolloutState>,
    directory: Arc<Directory>,
    metrics: ModelMetrics,
    info: ModelInfo,
    /// Whether the last selection found no backend passing its health
    /// check (panic routing), to log the change once each way.
    panicking: AtomicBool,
}

impl Pool {
    pub(crate) fn new(
        config: PoolConfig,
        backends: Vec<BackendSpec>,
        directory: Arc<Directory>,
        metrics: &ModelMetrics,
    ) -> Self {
        let members: Vec<Arc<Member>> = backends
            .into_iter()
            .map(|b| Arc::new(Member::new(b, config.breaker, metrics, &config.name)))
            .collect();
        let info = ModelInfo {
            context_window: members
                .iter()
                .map(|m| m.backend().info().context_window)
                .max()
                .unwrap_or(0),
            owned_by: members
                .first()
                .map_or_else(|| "orinari".into(), |m| m.backend().info().owned_by.clone()),
        };
        let groups = Groups::new(&config.group_weights, &members);
        let pool = Self {
            config,
            members,
            selector: Selector::default(),
            groups: RwLock::new(groups),
            rollout: Mutex::new(RolloutState::default()),
            directory,
            metrics: metrics.clone(),
            info,
            panicking: AtomicBool::new(false),
        };
        pool.apply_weights();
        pool
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Recompute every member's effective weight from its weight and its group's.
    pub(crate) fn apply_weights(&self) {
        let Ok(groups) = self.groups.read() else {
            return;
        };
        for m in &self.members {
            let g = groups.weight(&m.spec.group);
            let w = u64::from(m.weight.load(Ordering::Relaxed)) * u64::from(g);
            m.effective.store(w, Ordering::Relaxed);
        }
    }

    /// Pick a backend not yet tried (or any available one if all were tried).
    fn select(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let mut available: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].available(now))
            .collect();
        if available.is_empty() {
            available = (0..self.members.len())
                .filter(|&i| self.members[i].routable(now))
                .collect();
            if available.is_empty() {
                return None;
            }
            if !self.panicking.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    model = %self.config.name,
                    "no backend passes its health check: routing to every backend whose circuit is closed (panic routing)"
                );
            }
        } else if self.panicking.swap(false, Ordering::Relaxed) {
            tracing::info!(model = %self.config.name, "a backend passes its health check again: panic routing ends");
        }
        // Untried backends first (all of them again once every one was tried),
        // and among those, the ones in our region when there are any.
        let fresh: Vec<usize> = available
            .iter()
            .copied()
            .filter(|i| !tried.contains(i))
            .collect();
        let base = if fresh.is_empty() { available } else { fresh };
        let region = &self.config.region;
        let prefer_local = base
            .iter()
            .any(|&i| self.members[i].spec.region.as_ref() == Some(region));
        let pool: Vec<usize> = if prefer_local {
            base.into_iter()
                .filter(|&i| {
                    self.members[i]
                        .spec
                        .region
                        .as_ref()
                        .is_none_or(|r| r == region)
                })
                .collect()
        } else {
            base
        };
        // A half-open circuit's one trial goes first: it is how a recovered
        // backend gets its traffic back.
        if let Some(&i) = pool
            .iter()
            .find(|&&i| self.members[i].breaker.state(now) == CircuitState::HalfOpen)
        {
            return Some(i);
        }
        let candidates: Vec<Candidate> = pool
            .iter()
            .map(|&i| {
                let m = &self.members[i];
                Candidate {
                    index: i,
                    weight: m.effective.load(Ordering::Relaxed).max(1),
                    latency: m.latency.get(now),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                }
            })
            .collect();
        let pick = self.selector.pick(self.config.strategy, &candidates);
        Some(candidates[pick].index)
    }

    /// Full-jitter exponential backoff before attempt `n` (n ≥ 1).
    fn backoff(&self, n: u32) -> Duration {
        let r = self.config.retry;
        let cap = r
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(r.max_backoff);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(random_below(nanos.saturating_add(1)))
    }

    /// Try this pool's own backends.
    pub(crate) async fn start_own(
        &self,
        request: &GenerateRequest,
    ) -> Result<Generation, ModelError> {
        self.try_own(|member| {
            let request = request.clone();
            async move { self.attempt(&member, request).await }
        })
        .await
    }

    /// Embed with this pool's own backends (OpenAI-compatible ones embed;
    /// the others refuse, and that refusal is not retried).
    pub(crate) async fn embed_own(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<Embeddings, ModelError> {
        self.try_own(|member| {
            let request = request.clone();
            async move { self.embed_attempt(member, request).await }
        })
        .await
    }

    /// Run `on` on this pool's backends in turn: pick one, take its
    /// circuit permit, and move to another after a retryable failure
    /// (jittered backoff, within `max_attempts` and the budget).
    async fn try_own<T, F>(&self, mut on: impl FnMut(Arc<Member>) -> F) -> Result<T, ModelError>
    where
        F: Future<Output = Result<T, ModelError>>,
    {
        let started = Instant::now();
        let budget_end = started + self.config.retry.budget;
        let mut upstream = Duration::ZERO;
        let mut tried: Vec<usize> = Vec::new();
        let mut last = None;
        for attempt in 0..self.config.retry.max_attempts {
            if attempt > 0 {
                let now = Instant::now();
                if now >= budget_end {
                    break;
                }
                let pause = self.backoff(attempt).min(budget_end - now);
                tokio::time::sleep(pause).await;
                upstream += pause;
            }
            let Some(i) = self.select(&tried, Instant::now()) else {
                break;
            };
            tried.push(i);
            let member = &self.members[i];
            if !member.breaker.acquire(Instant::now()) {
                continue;
            }
            let t0 = Instant::now();
            let result = on(member.clone()).await;
            upstream += t0.elapsed();
            match result {
                Ok(generation) => {
                    let overhead = started.elapsed().saturating_sub(upstream);
                    self.metrics
                        .gateway_overhead
                        .observe(overhead.as_secs_f64());
                    return Ok(generation);
                }
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        model = %self.config.name,
                        backend = %member.spec.name,
                        attempt = attempt + 1,
                        error = %e,
                        "backend attempt failed"
                    );
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ModelError::Unavailable))
    }

    /// One attempt on one backend, up to its first token (streams) or its
    /// whole answer (non-streamed requests, so they can fail over at any point).
    async fn attempt(
        &self,
        member: &Arc<Member>,
        request: GenerateRequest,
    ) -> Result<Generation, ModelError> {
        let timeouts = self.config.timeouts;
        let stream = request.stream;
        let guard = InFlight::new(member.clone());
        let t0 = Instant::now();
        let wait = if stream {
            timeouts.first_token
        } else {
            timeouts.total
        };
        let first = tokio::time::timeout(wait, async {
            let mut g = member.backend().start(request).await?;
            let first = g.events.recv().await;
            Ok::<_, ModelError>((g, first))
        })
        .await;
        let (generation, first) = match first {
            Err(_) => Err(ModelError::Timeout(format!(
                "no first token within {} ms",
                wait.as_millis()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((_, None))) => Err(ModelError::Upstream(
                "the answer ended before its first token".into(),
            )),
            Ok(Ok((_, Some(Err(e))))) => Err(e),
            Ok(Ok((g, Some(Ok(first))))) => Ok((g, first)),
        }
        .inspect_err(|e| member.finish(e.outcome(), Instant::now()))?;
        let now = Instant::now();
        member.first_token(now - t0, now);
        if stream {
            Ok(relay::stream(guard, generation, first, timeouts, t0))
        } else {
            relay::whole(guard, generation, first, t0, timeouts.total).await
        }
    }

    /// One embeddings request to one backend, under the total timeout;
    /// recorded on the member like an answer (its latency as the first token).
    async fn embed_attempt(
        &self,
        member: Arc<Member>,
        request: EmbeddingsRequest,
    ) -> Result<Embeddings, ModelError> {
        let total = self.config.timeouts.total;
        let guard = InFlight::new(member.clone());
        let t0 = Instant::now();
        let result = tokio::time::timeout(total, member.backend().embed(request))
            .await
            .unwrap_or_else(|_| {
                Err(ModelError::Timeout(format!(
                    "no embeddings within {} ms",
                    total.as_millis()
                )))
            });
        drop(guard);
        let now = Instant::now();
        match &result {
            Ok(e) => {
                member.first_token(now - t0, now);
                member.tokens(e.prompt_tokens, 0);
                member.finish(Outcome::Success, now);
            }
            Err(e) => member.finish(e.outcome(), now),
        }
        result
    }

    async fn start_with_fallback(
        &self,
        request: GenerateRequest,
    ) -> Result<Generation, ModelError> {
        let own = self.start_own(&request).await;
        let mut error = match own {
            Ok(g) => return Ok(g),
            Err(e) if !e.retryable() => return Err(e),
            Err(e) => e,
        };
        for name in &self.config.fallback {
            let Some(entry) = self.directory.get(name) else {
                continue;
            };
            tracing::warn!(model = %self.config.name, fallback = %name, "falling back");
            match entry.start_without_fallback(&request).await {
                Ok(g) => return Ok(g),
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => error = e,
            }
        }
        Err(error)
    }

    async fn embed_with_fallback(
        &self,
        request: EmbeddingsRequest,
    ) -> Result<Embeddings, ModelError> {
        let mut error = match self.embed_own(&request).await {
            Ok(e) => return Ok(e),
            Err(e) if !e.retryable() => return Err(e),
            Err(e) => e,
        };
        for name in &self.config.fallback {
            let Some(entry) = self.directory.get(name) else {
                continue;
            };
            tracing::warn!(model = %self.config.name, fallback = %name, "falling back");
            match entry.embed_without_fallback(&request).await {
                Ok(e) => return Ok(e),
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => error = e,
            }
        }
        Err(error)
    }

    /// Whether any backend of this pool can take a request now.
    pub fn own_ready(&self) -> bool {
        let now = Instant::now();
        self.members.iter().any(|m| m.available(now))
    }
}

impl ModelBackend for Pool {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn start(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, ModelError>> {
        Box::pin(self.start_with_fallback(request))
    }

    fn embed(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<Embeddings, ModelError>> {
        Box::pin(self.embed_with_fallback(request))
    }

    /// Ready when one of its backends or a fallback model can serve.
    fn ready(&self) -> bool {
        self.own_ready()
            || self
                .config
                .fallback
                .iter()
                .filter_map(|f| self.directory.get(f))
                .any(|e| e.ready_without_fallback())
    }
}
