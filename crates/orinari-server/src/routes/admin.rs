//! `/admin/v1/backups`: list, back up now, verify.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orinari_api::ApiError;
use orinari_store::backup;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::HttpError;

fn unavailable() -> HttpError {
    HttpError(
        ApiError::invalid(
            "backup",
            "No backups are configured: set [backup] destinations.",
        )
        .with_code("backups_not_configured"),
    )
}

fn failed(e: impl std::fmt::Display) -> HttpError {
    tracing::error!(error = %e, "admin backup operation failed");
    HttpError(ApiError::internal(format!(
        "The backup operation failed: {e}"
    )))
}

/// Every destination's snapshots and journal, and the scheduler's health.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let (engine, health) = state.backups().ok_or_else(unavailable)?;
    let cfg = engine.config().clone();
    let listing = tokio::task::spawn_blocking(move || backup::list(&cfg))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    let destinations: Vec<Value> = listing
        .iter()
        .map(|l| {
            json!({
                "destination": l.destination.display().to_string(),
                "newest_restorable_ms": l.newest_point(),
                "snapshots": l.snapshots.iter().map(|s| json!({
                    "id": s.name, "as_of_ms": s.max_at, "position": s.seq, "bytes": s.bytes,
                })).collect::<Vec<_>>(),
                "journal": {
                    "segments": l.segments.len(),
                    "first_position": l.segments.first().map(|s| s.first),
                    "last_position": l.segments.last().map(|s| s.last),
                    "last_ms": l.segments.last().map(|s| s.last_at),
                },
            })
        })
        .collect();
    Ok(Json(json!({
        "last_success_ms": health.last_success_ms,
        "last_verified_ms": health.last_verified_ms,
        "rpo_exceeded": health.rpo_exceeded,
        "destinations": destinations,
    })))
}

/// Snapshot now (and ship the journal): 201 with the snapshot.
pub async fn create(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), HttpError> {
    let (engine, _) = state.backups().ok_or_else(unavailable)?;
    engine.ship().await.map_err(failed)?;
    let snap = engine.snapshot().await.map_err(failed)?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": snap.name, "as_of_ms": snap.max_at, "position": snap.seq, "bytes": snap.bytes}),
        ),
    ))
}

/// Restore the newest point into a temporary place and check it.
pub async fn verify(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let (engine, _) = state.backups().ok_or_else(unavailable)?;
    let r = backup::verify(engine.config(), None)
        .await
        .map_err(failed)?;
    Ok(Json(json!({
        "ok": true,
        "snapshot": r.snapshot,
        "replayed": r.replayed,
        "position": r.seq,
        "as_of_ms": r.at,
        "destination": r.destination.display().to_string(),
    })))
}

/// `POST /admin/v1/reload`: read the configuration again and apply what can
/// change while serving (upstream models and backends, limits, auth,
/// firewall, guard, status checks, alert rules and operator webhooks), and
/// reload the TLS certificate files. The answer lists what was applied and
/// each key that changed but waits for a restart. An invalid configuration
/// is a 400 with `file:line:col`, the key and why; nothing changes.
pub async fn reload(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    match state.reload().await {
        Ok(report) => Ok(Json(json!(report))),
        Err(crate::state::ReloadError::Config(reason)) => Err(HttpError(
            ApiError::invalid(
                "config",
                format!("The configuration was not reloaded: {reason}"),
            )
            .with_code("invalid_config"),
        )),
        Err(crate::state::ReloadError::Tls) => Err(HttpError(ApiError::internal(
            "The TLS certificate was not reloaded (the current one stays); see the server log.",
        ))),
    }
}
