//! Prompt-injection screening metrics: `orinari_guard_blocks_total{rule,action}`,
//! one count per text the guard judged an attack. `rule` is the deciding
//! rule's name (or `classifier`); `action` is `block` or `flag` (user
//! messages), `block_tool` or `flag_tool` (tool results),
//! `drop_retrieved` or `flag_retrieved` (retrieved passages). And
//! `orinari_guard_score{channel}`: the score (attack probability) of every
//! text screened, by channel (`user`, `tool`, `retrieved`) — the numbers
//! to tune a threshold with, never the text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{rule, action}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    /// The rule that decided.
    pub rule: String,
    /// `block` (request refused) or `flag` (answered, marked).
    pub action: String,
}

/// `{channel}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    /// `user`, `tool` or `retrieved`.
    pub channel: String,
}

/// Score buckets: dense near the thresholds (0.5 to 1).
const SCORE_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.999];

fn score_histogram() -> Histogram {
    Histogram::new(SCORE_BUCKETS)
}

/// The guard metrics; cheap to clone (handles share storage).
#[derive(Clone, Debug)]
pub struct GuardMetrics {
    /// `orinari_guard_blocks_total{rule,action}`.
    pub blocks: Family<GuardLabels, Counter>,
    /// `orinari_guard_score{channel}`.
    pub scores: Family<ChannelLabels, Histogram, fn() -> Histogram>,
}

impl Default for GuardMetrics {
    fn default() -> Self {
        Self {
            blocks: Family::default(),
            scores: Family::new_with_constructor(score_histogram as fn() -> Histogram),
        }
    }
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
        registry.register(
            "orinari_guard_score",
            "The guard's score (attack probability) of each text screened, by channel",
            m.scores.clone(),
        );
        m
    }

    /// Observe one screened text's score.
    pub fn score(&self, channel: &str, score: f32) {
        self.scores
            .get_or_create(&ChannelLabels {
                channel: channel.to_string(),
            })
            .observe(f64::from(score));
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
