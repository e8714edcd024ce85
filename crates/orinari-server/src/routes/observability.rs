//! `/admin/v1/errors` (failed requests grouped by kind and route) and
//! `/admin/v1/analytics` (aggregate counts per day; no personal data).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

/// `GET /admin/v1/errors`.
pub async fn errors(State(state): State<AppState>) -> Json<Value> {
    let groups: Vec<Value> = state
        .metrics()
        .errors
        .groups()
        .into_iter()
        .map(|g| {
            json!({
                "kind": g.kind, "route": g.route, "status": g.status, "count": g.count,
                "first_seen_ms": g.first_seen_ms, "last_seen_ms": g.last_seen_ms,
            })
        })
        .collect();
    Json(json!({ "errors": groups }))
}

/// `GET /admin/v1/analytics`.
pub async fn analytics(State(state): State<AppState>) -> Json<Value> {
    let days: Vec<Value> = state
        .metrics()
        .analytics
        .days()
        .into_iter()
        .map(|(day, d)| {
            json!({
                "date": orinari_status::PageClock::utc().date(day * 86_400_000),
                "requests": d.requests,
                "page_views": d.page_views,
                "models": d.models,
                "web_vitals": d.vitals.iter().map(|((page, metric), [good, ni, poor])| json!({
                    "page": page, "metric": metric, "good": good, "needs_improvement": ni, "poor": poor,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "region": state.metrics().analytics.region(), "days": days }))
}

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
