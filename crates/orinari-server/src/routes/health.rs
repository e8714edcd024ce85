//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// Readiness waits this long for the store before calling it unavailable.
const STORE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// 200 while the process serves.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every model can serve; 503 with a reason while draining or degraded.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "reason": "the instance is shutting down"})),
        );
    }
    if let Some(store) = state.store() {
        let answered = tokio::time::timeout(STORE_PING_TIMEOUT, store.ping()).await;
        if !matches!(answered, Ok(Ok(()))) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "degraded", "reason": "storage does not answer"})),
            );
        }
    }
    let down: Vec<&str> = state
        .models()
        .iter()
        .filter(|m| !m.backend.ready())
        .map(|m| m.name.as_str())
        .collect();
    if down.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "degraded", "reason": "models without a ready backend", "models": down}),
            ),
        )
    }
}
