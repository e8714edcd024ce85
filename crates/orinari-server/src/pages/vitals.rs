//! `POST /status/vitals`: the pages' web-vitals beacon (`assets/*.js`),
//! counted into the aggregate analytics (`/admin/v1/analytics`).

use axum::extract::State;
use serde_json::Value;

use crate::AppState;

/// `POST /status/vitals`: a page's web-vitals beacon,
/// `{"page": "/status", "ttfb_ms": …, "fcp_ms": …, "lcp_ms": …, "cls": …}`.
/// Only the bucket of each value is counted; nothing identifies the sender.
pub async fn vitals(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let page = match o.get("page").and_then(Value::as_str) {
        Some(p @ ("/" | "/status")) => p,
        _ => return axum::http::StatusCode::BAD_REQUEST,
    };
    let now = orinari_store::now_ms();
    for (metric, _, _) in orinari_telemetry::analytics::VITALS {
        if let Some(v) = o.get(metric).and_then(Value::as_f64) {
            state.metrics().analytics.vital(page, metric, v, now);
        }
    }
    axum::http::StatusCode::NO_CONTENT
}
