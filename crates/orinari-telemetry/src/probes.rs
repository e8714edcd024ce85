//! Probe metrics: `orinari_probe_up{check}` (1 up or degraded, 0 down) for
//! every status-page check that has decided, set at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `{check}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The check's component id.
    pub check: String,
}

/// The probe metrics.
#[derive(Clone, Debug)]
pub struct ProbeMetrics {
    /// `orinari_probe_up{check}`.
    pub up: Family<CheckLabels, Gauge>,
}

impl ProbeMetrics {
    /// Create and register.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            up: Family::default(),
        };
        registry.register(
            "orinari_probe_up",
            "Whether the status check passes (1) or is down (0)",
            m.up.clone(),
        );
        m
    }

    /// Set one check's state.
    pub fn set(&self, check: &str, up: bool) {
        self.up
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(i64::from(up));
    }
}
