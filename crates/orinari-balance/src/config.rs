//! How a pool behaves: the validated settings it is built from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orinari_models::ModelBackend;

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Each available backend in turn.
    RoundRobin,
    /// At random, in proportion to weight.
    Weighted,
    /// Power of two choices (drawn by weight) on peak-EWMA latency × in-flight.
    P2cEwma,
}

/// Timeouts applied to every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From sending the request to the first token (whole answers: to the answer).
    pub first_token: Duration,
    /// Longest silence between two tokens of a stream.
    pub idle: Duration,
    /// Longest a whole request may take, stream included.
    pub total: Duration,
}

/// Failover before the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts across this model's backends (the first included).
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts (full jitter).
    pub backoff: Duration,
    /// Cap of one backoff.
    pub max_backoff: Duration,
    /// Time after which no new attempt starts (fallbacks excepted).
    pub budget: Duration,
}

/// When a backend's circuit opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// Error rate over the last `window` requests that opens it.
    pub error_rate: f64,
    /// Requests in the error-rate window (at most 64).
    pub window: u32,
    /// How long it stays open before one trial request (half-open).
    pub open_for: Duration,
}

/// Active health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between checks of each backend.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
}

/// One model's pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The model name clients ask for.
    pub name: String,
    /// Selection strategy.
    pub strategy: Strategy,
    /// Models tried in order when every backend fails before the first token.
    pub fallback: Vec<String>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Failover.
    pub retry: Retry,
    /// Circuit breakers.
    pub breaker: BreakerConfig,
    /// Active health checks.
    pub health: HealthConfig,
    /// This instance's region: backends in it are preferred.
    pub region: String,
    /// Initial traffic per group (groups not named get 100).
    pub group_weights: BTreeMap<String, u32>,
}

/// One backend of a pool.
#[derive(Clone)]
pub struct BackendSpec {
    /// Unique within the model.
    pub name: String,
    /// `openai`, `anthropic` or `local` (for display).
    pub provider: String,
    /// Rollout group (`default` when not set).
    pub group: String,
    /// Relative weight within its group.
    pub weight: u32,
    /// Region label, when the backend carries one.
    pub region: Option<String>,
    /// The adapter.
    pub backend: Arc<dyn ModelBackend>,
}

impl std::fmt::Debug for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSpec")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("group", &self.group)
            .field("weight", &self.weight)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}
