//! Operator alerts: finished requests are counted for the alert rules
//! (`crate::alerts`), and a rule that starts or stops firing is announced
//! once across instances, to operators only (never public subscribers).

use serde_json::json;

use super::StatusService;
use crate::StatusError;

impl StatusService {
    /// Count a finished request for the alert rules (nothing without rules).
    pub fn record_request(&self, route: &str, status: u16, seconds: f64, now: i64) {
        self.alerts.record(route, status, seconds, now);
    }

    /// Evaluate the alert rules; notify (webhooks and `alert_emails`) about
    /// each that started or stopped firing, once across instances.
    pub async fn evaluate_alerts(&self, now: i64) -> Result<(), StatusError> {
        for (rule, reading) in self.alerts.changes(now) {
            let state = if reading.firing { "firing" } else { "resolved" };
            if self
                .store
                .claim(
                    &format!("status.alertrule.{}.{state}.{}", rule.id, now / 60_000),
                    &now.to_string(),
                )
                .await?
            {
                tracing::warn!(alert = %rule.name, state, value = reading.value, requests = reading.requests, "alert");
                self.notifier.notify(json!({
                    "event": format!("alert.{state}"),
                    "page": crate::webhooks::notice_page(&self.snapshot()),
                    "alert": {
                        "id": rule.id,
                        "name": rule.name,
                        "kind": match rule.kind {
                            orinari_config::AlertKind::ErrorRate => "error_rate",
                            orinari_config::AlertKind::LatencyP99 => "latency_p99",
                        },
                        "route": rule.route,
                        "threshold": rule.threshold,
                        "window_seconds": rule.window.as_secs(),
                        "value": reading.value,
                        "requests": reading.requests,
                    },
                }));
            }
        }
        Ok(())
    }
}
