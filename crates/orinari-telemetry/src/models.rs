//! Model-backend metrics: per model and backend, requests by outcome, time
//! to first token, tokens, health and circuit state, plus the time spent in
//! the gateway itself. Labels are configuration names only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Metric handle types, re-exported so users need no prometheus-client dependency.
pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};

/// `{model, backend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The model name clients ask for.
    pub model: String,
    /// The backend's configured name.
    pub backend: String,
}

/// `{model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The model name clients ask for.
    pub model: String,
}

/// The prefix KV cache's metrics for one embedded model.
#[derive(Clone, Debug)]
pub struct PrefixCacheMeter {
    /// `orinari_model_prefix_cache_hits_total`: requests that started from
    /// cached keys and values of an earlier one.
    pub hits: Counter,
    /// `orinari_model_prefix_cache_misses_total`: requests that found none.
    pub misses: Counter,
    /// `orinari_model_prefix_cache_reused_tokens_total`: prompt tokens not
    /// computed again.
    pub reused_tokens: Counter,
    /// `orinari_model_prefix_cache_bytes`: memory the cache holds now.
    pub bytes: Gauge,
}

/// The exact response cache's metrics for one model (`orinari-chat`).
#[derive(Clone, Debug)]
pub struct ResponseCacheMeter {
    /// `orinari_response_cache_hits_total`: cacheable requests answered
    /// from the cache.
    pub hits: Counter,
    /// `orinari_response_cache_misses_total`: cacheable requests that found
    /// nothing (or whose store could not answer) and went to the backend.
    pub misses: Counter,
    /// `orinari_response_cache_bytes`: memory the in-memory cache holds now
    /// (0 when the entries live in Redis).
    pub bytes: Gauge,
}

/// `{model, backend, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The model name.
    pub model: String,
    /// The backend name.
    pub backend: String,
    /// `success`, `error`, `timeout`, `rejected` or `cancelled`.
    pub outcome: String,
}

/// `{model, backend, kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The model name.
    pub model: String,
    /// The backend name.
    pub backend: String,
    /// `prompt` or `completion`.
    pub kind: String,
}

/// How a request to a backend ended: its `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered completely.
    Success,
    /// The backend failed (connection, status, broken stream).
    Error,
    /// The backend was too slow (first token, idle, total).
    Timeout,
    /// The backend refused the request itself (not its fault).
    Rejected,
    /// The client went away first.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order of [`BackendMeter`]'s counters.
    pub const ALL: [Self; 5] = [
        Self::Success,
        Self::Error,
        Self::Timeout,
        Self::Rejected,
        Self::Cancelled,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One backend's per-model series (requests by outcome, tokens, time to
/// first token), resolved once so recording allocates nothing. A pool keeps
/// one per member; a model served by one backend of its own keeps one too.
#[derive(Debug, Clone)]
pub struct BackendMeter {
    outcomes: [Counter; 5],
    prompt_tokens: Counter,
    completion_tokens: Counter,
    ttft: Histogram,
}

impl BackendMeter {
    /// The handles of `backend` serving `model`.
    pub fn new(m: &ModelMetrics, model: &str, backend: &str) -> Self {
        let outcome = |o: Outcome| {
            m.requests
                .get_or_create(&OutcomeLabels {
                    model: model.into(),
                    backend: backend.into(),
                    outcome: o.label().into(),
                })
                .clone()
        };
        let tokens = |kind: &str| {
            m.tokens
                .get_or_create(&TokenLabels {
                    model: model.into(),
                    backend: backend.into(),
                    kind: kind.into(),
                })
                .clone()
        };
        Self {
            outcomes: Outcome::ALL.map(outcome),
            prompt_tokens: tokens("prompt"),
            completion_tokens: tokens("completion"),
            ttft: m
                .time_to_first_token
                .get_or_create(&BackendLabels {
                    model: model.into(),
                    backend: backend.into(),
                })
                .clone(),
        }
    }

    /// A request ended.
    pub fn finish(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].inc();
    }

    /// Its first token came after `ttft`.
    pub fn first_token(&self, ttft: std::time::Duration) {
        self.ttft.observe(ttft.as_secs_f64());
    }

    /// Tokens it read and wrote.
    pub fn tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens.inc_by(u64::from(prompt));
        self.completion_tokens.inc_by(u64::from(completion));
    }
}

/// Histogram of time to first token: 5 ms … ~41 s.
fn ttft_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

/// The model metrics; cheap to clone (handles share storage).
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    /// `orinari_model_requests_total{model,backend,outcome}`.
    pub requests: Family<OutcomeLabels, Counter>,
    /// `orinari_model_time_to_first_token_seconds{model,backend}`.
    pub time_to_first_token: Family<BackendLabels, Histogram, fn() -> Histogram>,
    /// `orinari_model_tokens_total{model,backend,kind}`.
    pub tokens: Family<TokenLabels, Counter>,
    /// `orinari_backend_up{model,backend}`: 1 when the active check passes.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// `orinari_circuit_state{model,backend}`: 0 closed, 1 open, 2 half-open.
    pub circuit_state: Family<BackendLabels, Gauge>,
    /// `orinari_gateway_overhead_seconds`: time a request spends in ORINARI
    /// itself before its first token is handed on (selection, retries'
    /// bookkeeping, relaying), upstream time excluded.
    pub gateway_overhead: Histogram,
    /// `orinari_model_prefix_cache_hits_total{model}`.
    pub prefix_cache_hits: Family<ModelLabel, Counter>,
    /// `orinari_model_prefix_cache_misses_total{model}`.
    pub prefix_cache_misses: Family<ModelLabel, Counter>,
    /// `orinari_model_prefix_cache_reused_tokens_total{model}`.
    pub prefix_cache_reused_tokens: Family<ModelLabel, Counter>,
    /// `orinari_model_prefix_cache_bytes{model}`.
    pub prefix_cache_bytes: Family<ModelLabel, Gauge>,
    /// `orinari_response_cache_hits_total{model}`.
    pub response_cache_hits: Family<ModelLabel, Counter>,
    /// `orinari_response_cache_misses_total{model}`.
    pub response_cache_misses: Family<ModelLabel, Counter>,
    /// `orinari_response_cache_bytes{model}`.
    pub response_cache_bytes: Family<ModelLabel, Gauge>,
}

impl ModelMetrics {
    /// Create and register every model metric.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            time_to_first_token: Family::new_with_constructor(ttft_histogram as fn() -> Histogram),
            tokens: Family::default(),
            backend_up: Family::default(),
            circuit_state: Family::default(),
            // 10 µs … ~82 ms.
            gateway_overhead: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_01, 2.0, 14),
            ),
            prefix_cache_hits: Family::default(),
            prefix_cache_misses: Family::default(),
            prefix_cache_reused_tokens: Family::default(),
            prefix_cache_bytes: Family::default(),
            response_cache_hits: Family::default(),
            response_cache_misses: Family::default(),
            response_cache_bytes: Family::default(),
        };
        registry.register(
            "orinari_model_requests",
            "Requests to model backends by outcome",
            m.requests.clone(),
        );
        registry.register(
            "orinari_model_time_to_first_token_seconds",
            "Time from sending a request to a backend to its first token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "orinari_model_tokens",
            "Tokens processed by model backends",
            m.tokens.clone(),
        );
        registry.register(
            "orinari_backend_up",
            "Whether a backend passes its active health check",
            m.backend_up.clone(),
        );
        registry.register(
            "orinari_circuit_state",
            "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open",
            m.circuit_state.clone(),
        );
        registry.register(
            "orinari_gateway_overhead_seconds",
            "Time spent in the gateway itself before the first token is handed on",
            m.gateway_overhead.clone(),
        );
        registry.register(
            "orinari_model_prefix_cache_hits",
            "Requests to an embedded model that reused cached keys and values of an earlier prompt",
            m.prefix_cache_hits.clone(),
        );
        registry.register(
            "orinari_model_prefix_cache_misses",
            "Requests to an embedded model that found no cached prefix",
            m.prefix_cache_misses.clone(),
        );
        registry.register(
            "orinari_model_prefix_cache_reused_tokens",
            "Prompt tokens an embedded model did not compute again thanks to its prefix cache",
            m.prefix_cache_reused_tokens.clone(),
        );
        registry.register(
            "orinari_model_prefix_cache_bytes",
            "Memory held by an embedded model's prefix cache",
            m.prefix_cache_bytes.clone(),
        );
        registry.register(
            "orinari_response_cache_hits",
            "Deterministic requests answered from the exact response cache",
            m.response_cache_hits.clone(),
        );
        registry.register(
            "orinari_response_cache_misses",
            "Cacheable requests that found no cached answer and went to the backend",
            m.response_cache_misses.clone(),
        );
        registry.register(
            "orinari_response_cache_bytes",
            "Memory held by a model's in-memory response cache",
            m.response_cache_bytes.clone(),
        );
        m
    }

    /// The response-cache handles of one model.
    pub fn response_cache(&self, model: &str) -> ResponseCacheMeter {
        let l = ModelLabel {
            model: model.to_string(),
        };
        ResponseCacheMeter {
            hits: self.response_cache_hits.get_or_create(&l).clone(),
            misses: self.response_cache_misses.get_or_create(&l).clone(),
            bytes: self.response_cache_bytes.get_or_create(&l).clone(),
        }
    }

    /// The prefix-cache handles of one embedded model.
    pub fn prefix_cache(&self, model: &str) -> PrefixCacheMeter {
        let l = ModelLabel {
            model: model.to_string(),
        };
        PrefixCacheMeter {
            hits: self.prefix_cache_hits.get_or_create(&l).clone(),
            misses: self.prefix_cache_misses.get_or_create(&l).clone(),
            reused_tokens: self.prefix_cache_reused_tokens.get_or_create(&l).clone(),
            bytes: self.prefix_cache_bytes.get_or_create(&l).clone(),
        }
    }
}

impl Default for ModelMetrics {
    /// Metrics that are recorded but not exported (tests, tools).
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}
