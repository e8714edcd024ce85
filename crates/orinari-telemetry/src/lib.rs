//! Metrics: one registry, the metric names of CONTRACT.md as typed fields,
//! rendered as OpenMetrics text for `GET /metrics`.
//!
//! Naming convention: `orinari_<subsystem>_<name>_<unit>[_total]`. Metrics
//! never carry personal data or conversation text in names or labels.

pub mod analytics;
pub mod errors;
pub mod exposition;
pub mod guard;
pub mod http;
pub mod limits;
pub mod models;
pub mod probes;
pub mod process;
pub mod retrieval;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric this process exports.
pub struct Metrics {
    registry: Registry,
    /// Unix seconds of the last backup shipment that reached every destination
    /// (0 when backups are not configured or none has succeeded yet).
    pub backup_last_success: Gauge<f64, AtomicU64>,
    /// `orinari_leader`: 1 while this instance runs the singleton jobs
    /// (probes, the maintenance clock, reminders), else 0.
    pub leader: Gauge,
    /// Model backends and the gateway ([`models::ModelMetrics`]).
    pub models: models::ModelMetrics,
    /// Prompt-injection screening ([`guard::GuardMetrics`]).
    pub guard: guard::GuardMetrics,
    /// Rate limits, queues and connection caps ([`limits::LimitMetrics`]).
    pub limits: limits::LimitMetrics,
    /// HTTP requests by route ([`http::HttpMetrics`]).
    pub http: http::HttpMetrics,
    /// Status-page checks ([`probes::ProbeMetrics`]).
    pub probes: probes::ProbeMetrics,
    /// Data sources of grounded answers ([`retrieval::RetrievalMetrics`]).
    pub retrieval: retrieval::RetrievalMetrics,
    /// Failed requests grouped by kind and route ([`errors::ErrorLog`]).
    pub errors: errors::ErrorLog,
    /// Aggregate counts for `/admin/v1/analytics` ([`analytics::Analytics`]).
    pub analytics: analytics::Analytics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let backup_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "orinari_backup_last_success_timestamp_seconds",
            "Unix time of the last backup shipment that reached every destination",
            backup_last_success.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "orinari_leader",
            "Whether this instance runs the singleton jobs (1) or not (0)",
            leader.clone(),
        );
        let models = models::ModelMetrics::register(&mut registry);
        let guard = guard::GuardMetrics::register(&mut registry);
        let limits = limits::LimitMetrics::register(&mut registry);
        let http = http::HttpMetrics::register(&mut registry);
        let probes = probes::ProbeMetrics::register(&mut registry);
        let retrieval = retrieval::RetrievalMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            backup_last_success,
            leader,
            models,
            guard,
            limits,
            http,
            probes,
            retrieval,
            errors: errors::ErrorLog::default(),
            analytics: analytics::Analytics::default(),
        }
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_names() {
        let m = Metrics::new();
        m.backup_last_success.set(1_795_640_000.5);
        let text = m.render();
        assert!(
            text.contains("orinari_backup_last_success_timestamp_seconds 1795640000.5"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn renders_leader_gauge() {
        let m = Metrics::new();
        assert!(m.render().contains("orinari_leader 0"));
        m.leader.set(1);
        assert!(m.render().contains("orinari_leader 1"));
    }

    #[test]
    fn renders_guard_blocks() {
        let m = Metrics::new();
        m.guard.record("prompt_leak", "block");
        m.guard.record("prompt_leak", "block");
        let text = m.render();
        assert!(
            text.contains(r#"orinari_guard_blocks_total{rule="prompt_leak",action="block"} 2"#),
            "{text}"
        );
    }
}
