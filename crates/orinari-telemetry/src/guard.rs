//! Prompt-injection screening metrics: `orinari_guard_blocks_total{rule,action}`,
//! one count per user message the guard judged an attack. `rule` is the
//! deciding rule's name (or `classifier`); `action` is `block` or `flag`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// `{rule, action}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    /// The rule that decided.
    pub rule: String,
    /// `block` (request refused) or `flag` (answered, marked).
    pub action: String,
}

/// The guard metrics; cheap to clone (handles share storage).
#[derive(Clone, Debug, Default)]
pub struct GuardMetrics {
    /// `orinari_guard_blocks_total{rule,action}`.
    pub blocks: Family<GuardLabels, Counter>,
}

impl GuardMetrics {
    /// Register every guard metric.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "orinari_guard_blocks",
            "User messages judged prompt-injection attempts, by deciding rule and action",
            m.blocks.clone(),
        );
        m
    }

    /// Count one verdict.
    pub fn record(&self, rule: &str, action: &str) {
        self.blocks
            .get_or_create(&GuardLabels {
                rule: rule.to_string(),
                action: action.to_string(),
            })
            .inc();
    }
}
