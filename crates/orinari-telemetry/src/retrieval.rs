//! Retrieval metrics for grounded answers:
//! `orinari_retrieval_seconds{source}` (histogram: from the start of a
//! retrieval to the source's answer or deadline) and
//! `orinari_retrieval_outcomes_total{source,outcome}` (`ok`, `timeout`,
//! `error`). `source` is a configured `[[sources]]` name (bounded by the
//! config); queries never reach a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source's configured name.
    pub source: String,
}

/// `{source, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The source's configured name.
    pub source: String,
    /// `ok`, `timeout` or `error`.
    pub outcome: String,
}

/// Latency buckets: 1 ms … ~16 s (a budget is at most 60 s, most answer
/// within tens of milliseconds).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The retrieval metrics; cheap to clone (handles share storage).
#[derive(Clone, Debug)]
pub struct RetrievalMetrics {
    /// `orinari_retrieval_seconds{source}`.
    pub seconds: Family<SourceLabels, Histogram, fn() -> Histogram>,
    /// `orinari_retrieval_outcomes_total{source,outcome}`.
    pub outcomes: Family<OutcomeLabels, Counter>,
}

impl Default for RetrievalMetrics {
    fn default() -> Self {
        Self {
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            outcomes: Family::default(),
        }
    }
}

impl RetrievalMetrics {
    /// Register every retrieval metric.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "orinari_retrieval_seconds",
            "Time from the start of a retrieval to a source's answer or deadline",
            m.seconds.clone(),
        );
        registry.register(
            "orinari_retrieval_outcomes",
            "Source searches of grounded answers, by source and outcome (ok, timeout, error)",
            m.outcomes.clone(),
        );
        m
    }

    /// Record one source's part in a retrieval.
    pub fn record(&self, source: &str, outcome: &str, seconds: f64) {
        self.seconds
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .observe(seconds);
        self.outcomes
            .get_or_create(&OutcomeLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names() {
        let mut registry = Registry::default();
        let m = RetrievalMetrics::register(&mut registry);
        m.record("handbook", "ok", 0.012);
        m.record("wiki", "timeout", 0.8);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(
            text.contains("orinari_retrieval_seconds_count{source=\"handbook\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "orinari_retrieval_outcomes_total{source=\"wiki\",outcome=\"timeout\"} 1"
            ),
            "{text}"
        );
    }
}
