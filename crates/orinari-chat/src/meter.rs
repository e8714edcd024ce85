//! Per-model metrics for a model served by one backend (the embedded
//! model): the same series a balancer pool records for each of its members
//! (`orinari_model_requests_total{model,backend,outcome}`,
//! `orinari_model_time_to_first_token_seconds`,
//! `orinari_model_tokens_total{kind}`, `orinari_gateway_overhead_seconds`),
//! with the backend label [`LOCAL`]. Handles are resolved once per model
//! when a configuration is built, so recording allocates nothing.

use std::time::Duration;

use orinari_models::Outcome;
use orinari_telemetry::models::{BackendMeter, Histogram, ModelMetrics};

/// The `backend` label of a model served by one backend of its own.
pub const LOCAL: &str = "local";

/// One model's handles: its backend's series and the gateway's overhead.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    backend: BackendMeter,
    overhead: Histogram,
}

impl Meter {
    pub(crate) fn new(m: &ModelMetrics, model: &str) -> Self {
        Self {
            backend: BackendMeter::new(m, model, LOCAL),
            overhead: m.gateway_overhead.clone(),
        }
    }

    pub(crate) fn finish(&self, outcome: Outcome) {
        self.backend.finish(outcome);
    }

    pub(crate) fn first_token(&self, ttft: Duration) {
        self.backend.first_token(ttft);
    }

    pub(crate) fn overhead(&self, d: Duration) {
        self.overhead.observe(d.as_secs_f64());
    }

    pub(crate) fn tokens(&self, prompt: u32, completion: u32) {
        self.backend.tokens(prompt, completion);
    }
}
