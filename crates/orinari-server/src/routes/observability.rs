//! `/admin/v1/errors` (failed requests grouped by kind and route) and
//! `/admin/v1/analytics` (aggregate counts per day; no personal data). The
//! pages' web-vitals beacon that feeds the analytics is `pages/vitals.rs`.

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
