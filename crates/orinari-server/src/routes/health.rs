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
    let down: Vec<String> = state
        .models()
        .into_iter()
        .filter(|m| !m.backend.ready())
        .map(|m| m.name)
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

/// `GET /.well-known/acme-challenge/{token}`: the key authorization of an
/// open HTTP-01 challenge (plain text) — this instance's, or in a cluster
/// the leader's from the store — or 404.
pub async fn acme_challenge(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.acme_challenges().lookup(&token).await {
        Some(key_authorization) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}
