//! What the admin API shows about a pool and its backends.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::breaker::CircuitState;
use crate::config::Strategy;
use crate::member::Member;
use crate::pool::Pool;
use crate::rollout::RolloutStatus;

/// One backend's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendStatus {
    /// Name within the model.
    pub name: String,
    /// `openai`, `anthropic`, …
    pub provider: String,
    /// Rollout group.
    pub group: String,
    /// Region label.
    pub region: Option<String>,
    /// Weight within its group.
    pub weight: u32,
    /// Weight × group weight: its share of traffic.
    pub effective_weight: u64,
    /// Passes its active health check.
    pub up: bool,
    /// Drained by an operator.
    pub drained: bool,
    /// Circuit breaker state.
    pub circuit: CircuitState,
    /// Requests in flight.
    pub in_flight: u32,
    /// Peak-EWMA time to first token, milliseconds.
    pub latency_ms: f64,
    /// Requests finished.
    pub requests: u64,
    /// Of which failed or timed out.
    pub failures: u64,
}

impl BackendStatus {
    pub(crate) fn of(m: &Member, now: Instant) -> Self {
        Self {
            name: m.spec.name.clone(),
            provider: m.spec.provider.clone(),
            group: m.spec.group.clone(),
            region: m.spec.region.clone(),
            weight: m.weight.load(Ordering::Relaxed),
            effective_weight: m.effective.load(Ordering::Relaxed),
            up: m.up.load(Ordering::Relaxed),
            drained: m.drained.load(Ordering::Relaxed),
            circuit: m.breaker.state(now),
            in_flight: m.in_flight.load(Ordering::Relaxed),
            latency_ms: (m.latency.get(now) * 1e6).round() / 1e3,
            requests: m.requests.load(Ordering::Relaxed),
            failures: m.failures.load(Ordering::Relaxed),
        }
    }
}

/// One pool's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelStatus {
    /// The model name.
    pub name: String,
    /// Selection strategy.
    pub strategy: Strategy,
    /// Fallback chain.
    pub fallback: Vec<String>,
    /// Whether it can serve now (own backends or a fallback).
    pub ready: bool,
    /// Traffic weight per group.
    pub groups: BTreeMap<String, u32>,
    /// The weights a rollback would restore.
    pub previous_groups: Option<BTreeMap<String, u32>>,
    /// The last rollout.
    pub rollout: RolloutStatus,
    /// Backends.
    pub backends: Vec<BackendStatus>,
}

impl ModelStatus {
    pub(crate) fn of(p: &Pool) -> Self {
        use orinari_models::ModelBackend;
        let now = Instant::now();
        let (groups, previous_groups) = p
            .groups
            .read()
            .map(|g| (g.current().clone(), g.previous().cloned()))
            .unwrap_or_default();
        let mut rollout = p.rollout_status();
        if rollout.state.is_empty() {
            rollout.state = "none";
        }
        Self {
            name: p.name().to_string(),
            strategy: p.config.strategy,
            fallback: p.config.fallback.clone(),
            ready: p.ready(),
            groups,
            previous_groups,
            rollout,
            backends: p
                .members
                .iter()
                .map(|m| BackendStatus::of(m, now))
                .collect(),
        }
    }
}
