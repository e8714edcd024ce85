//! `GET /metrics`: OpenMetrics text when the scraper asks for it (Prometheus
//! does), else the Prometheus text format (`curl`, `promtool`).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use crate::AppState;

/// Refresh the gauges read at scrape time, then render.
pub async fn render(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let m = state.metrics();
    if let Some((_, health)) = state.backups() {
        m.backup_last_success
            .set(health.last_success_ms as f64 / 1000.0);
    }
    if let Some(status) = state.status() {
        m.leader.set(i64::from(status.is_leader()));
        for (check, up) in status.probe_states() {
            m.probes.set(&check, up);
        }
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, orinari_telemetry::CONTENT_TYPE)],
            m.render(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                orinari_telemetry::exposition::TEXT_CONTENT_TYPE,
            )],
            orinari_telemetry::exposition::to_prometheus_text(&m.render()),
        )
    }
}
