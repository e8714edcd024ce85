//! Admission metrics: `orinari_ratelimit_rejections_total{kind}` (kind:
//! `requests`, `tokens`, `queue_full`, `queue_timeout`, `firewall`,
//! `connections`), `orinari_queue_depth`, and
//! `orinari_ratelimit_local_fallbacks_total` (decisions taken locally
//! because the shared Redis limiter was unreachable).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Which limit refused.
    pub kind: &'static str,
}

/// The admission metrics; cheap to clone (handles share storage).
#[derive(Clone, Debug, Default)]
pub struct LimitMetrics {
    /// `orinari_ratelimit_rejections_total{kind}`.
    pub rejections: Family<KindLabel, Counter>,
    /// `orinari_queue_depth`: requests waiting for a model slot.
    pub queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `orinari_ratelimit_local_fallbacks_total`.
    pub local_fallbacks: Counter<u64, AtomicU64>,
}

impl LimitMetrics {
    /// Register every admission metric.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "orinari_ratelimit_rejections",
            "Requests or connections refused by a limit, by kind",
            m.rejections.clone(),
        );
        registry.register(
            "orinari_queue_depth",
            "Requests waiting in the admission queues",
            m.queue_depth.clone(),
        );
        registry.register(
            "orinari_ratelimit_local_fallbacks",
            "Rate-limit decisions taken locally because Redis was unreachable",
            m.local_fallbacks.clone(),
        );
        m
    }

    /// Count one refusal.
    pub fn rejected(&self, kind: &'static str) {
        self.rejections.get_or_create(&KindLabel { kind }).inc();
    }
}
