//! `GET /metrics`: OpenMetrics text.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

/// Refresh the gauges read at scrape time, then render.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let m = state.metrics();
    if let Some((_, health)) = state.backups() {
        m.backup_last_success
            .set(health.last_success_ms as f64 / 1000.0);
    }
    if let Some(status) = state.status() {
        for (check, up) in status.probe_states() {
            m.probes.set(&check, up);
        }
    }
    (
        [(header::CONTENT_TYPE, orinari_telemetry::CONTENT_TYPE)],
        m.render(),
    )
}
