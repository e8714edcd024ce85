//! `/admin/v1/backends` and `/admin/v1/models/{name}[/rollout|/rollback]`:
//! backend state, weight and drain; group rollouts and instant rollback.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use orinari_api::ApiError;
use orinari_balance::{BackendStatus, DEFAULT_STEP_INTERVAL, ModelStatus, RolloutRequest};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::{HttpError, from_balance};

/// Steps a gradual rollout may have.
const MAX_STEPS: u64 = 100;

fn gateway(state: &AppState) -> Result<std::sync::Arc<orinari_balance::Gateway>, HttpError> {
    state.gateway().ok_or_else(|| {
        HttpError(
            ApiError::invalid("model", "No model is served by upstream backends.")
                .with_code("no_backend_pools"),
        )
    })
}

fn object(body: &Bytes) -> Result<Map<String, Value>, HttpError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::invalid_json("The body must be a JSON object.").into()),
    }
}

fn unknown_fields(m: &Map<String, Value>, known: &[&str]) -> Result<(), HttpError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(
            k.clone(),
            format!(
                "Unknown field `{k}`; expected one of: {}.",
                known.join(", ")
            ),
        )
        .into()),
        None => Ok(()),
    }
}

fn uint(m: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, HttpError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                key,
                format!("`{key}` must be a whole number from 0 to {max}."),
            )
            .into()),
        },
    }
}

/// Every pool: backends, groups, weights, health and circuit state.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let models = state.gateway().map(|g| g.status()).unwrap_or_default();
    Json(json!({ "models": models }))
}

/// One pool.
pub async fn model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelStatus>, HttpError> {
    Ok(Json(
        gateway(&state)?.model_status(&name).map_err(from_balance)?,
    ))
}

/// `{"weight": 50, "drain": true}` on one backend.
pub async fn update(
    State(state): State<AppState>,
    Path((model, backend)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<BackendStatus>, HttpError> {
    let m = object(&body)?;
    unknown_fields(&m, &["weight", "drain"])?;
    let weight = uint(&m, "weight", 10_000)?.map(|w| w as u32);
    let drain = match m.get("drain") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::invalid("drain", "`drain` must be true or false.").into()),
    };
    if weight.is_none() && drain.is_none() {
        return Err(ApiError::invalid("weight", "Set `weight`, `drain` or both.").into());
    }
    Ok(Json(
        gateway(&state)?
            .set_backend(&model, &backend, weight, drain)
            .map_err(from_balance)?,
    ))
}

/// `{"weights": {"blue": 90, "green": 10}, "steps": 5, "step_interval_ms": 30000, "max_error_rate": 0.05}`.
pub async fn rollout(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ModelStatus>, HttpError> {
    let m = object(&body)?;
    unknown_fields(
        &m,
        &["weights", "steps", "step_interval_ms", "max_error_rate"],
    )?;
    let Some(Value::Object(w)) = m.get("weights") else {
        return Err(ApiError::invalid(
            "weights",
            "`weights` must be an object of group → weight, e.g. {\"blue\": 90, \"green\": 10}.",
        )
        .into());
    };
    let mut weights = BTreeMap::new();
    for (group, v) in w {
        let n = v.as_u64().filter(|n| *n <= 10_000).ok_or_else(|| {
            ApiError::invalid(
                format!("weights.{group}"),
                "A group weight must be a whole number from 0 to 10000.",
            )
        })?;
        weights.insert(group.clone(), n as u32);
    }
    let steps = uint(&m, "steps", MAX_STEPS)?.unwrap_or(1).max(1) as u32;
    let step_interval = uint(&m, "step_interval_ms", 86_400_000)?
        .map_or(DEFAULT_STEP_INTERVAL, Duration::from_millis);
    let max_error_rate = match m.get("max_error_rate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "max_error_rate",
                        "`max_error_rate` must be a number from 0 to 1.",
                    )
                })?,
        ),
    };
    let req = RolloutRequest {
        weights,
        steps,
        step_interval,
        max_error_rate,
    };
    Ok(Json(
        gateway(&state)?.rollout(&name, req).map_err(from_balance)?,
    ))
}

/// Restore the group weights from before the last rollout.
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelStatus>, HttpError> {
    Ok(Json(
        gateway(&state)?.rollback(&name).map_err(from_balance)?,
    ))
}
