//! Per-model metrics for a model served by one backend (the embedded
//! model): the same series a balancer pool records for each of its members
//! (`orinari_model_requests_total{model,backend,outcome}`,
//! `orinari_model_time_to_first_token_seconds`,
//! `orinari_model_tokens_total{kind}`, `orinari_gateway_overhead_seconds`),
//! with the backend label [`LOCAL`]. Handles are resolved once per model
//! when a configuration is built, so recording allocates nothing.

use std::time::Duration;

use orinari_models::ModelError;
use orinari_telemetry::models::{
    BackendLabels, Counter, Histogram, ModelMetrics, OutcomeLabels, TokenLabels,
};

/// The `backend` label of a model served by one backend of its own.
pub const LOCAL: &str = "local";

/// How an answer ended, as the `outcome` label says it (the balancer's
/// words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Error,
    Timeout,
    Rejected,
    Cancelled,
}

impl Outcome {
    const ALL: [Self; 5] = [
        Self::Success,
        Self::Error,
        Self::Timeout,
        Self::Rejected,
        Self::Cancelled,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome an error stands for (as the balancer classifies it).
    pub(crate) fn of(e: &ModelError) -> Self {
        match e {
            ModelError::Timeout(_) => Self::Timeout,
            e if e.is_backend_fault() => Self::Error,
            _ => Self::Rejected,
        }
    }
}

/// One model's handles.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    outcomes: [Counter; 5],
    prompt_tokens: Counter,
    completion_tokens: Counter,
    ttft: Histogram,
    overhead: Histogram,
}

impl Meter {
    pub(crate) fn new(m: &ModelMetrics, model: &str) -> Self {
        let outcome = |o: Outcome| {
            m.requests
                .get_or_create(&OutcomeLabels {
                    model: model.into(),
                    backend: LOCAL.into(),
                    outcome: o.label().into(),
                })
                .clone()
        };
        let tokens = |kind: &str| {
            m.tokens
                .get_or_create(&TokenLabels {
                    model: model.into(),
                    backend: LOCAL.into(),
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
                    backend: LOCAL.into(),
                })
                .clone(),
            overhead: m.gateway_overhead.clone(),
        }
    }

    pub(crate) fn finish(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].inc();
    }

    pub(crate) fn first_token(&self, ttft: Duration) {
        self.ttft.observe(ttft.as_secs_f64());
    }

    pub(crate) fn overhead(&self, d: Duration) {
        self.overhead.observe(d.as_secs_f64());
    }

    pub(crate) fn tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens.inc_by(u64::from(prompt));
        self.completion_tokens.inc_by(u64::from(completion));
    }
}
