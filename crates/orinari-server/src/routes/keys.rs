//! `/admin/v1/keys`: create (the key is in the response once, only its hash
//! is stored), list (never the key), revoke.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orinari_api::ApiError;
use orinari_store::{ApiKey, Store};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::HttpError;
use orinari_limits::{KeySpec, create_key};

fn store(state: &AppState) -> Result<&Store, HttpError> {
    state.store().ok_or_else(|| {
        HttpError(ApiError::internal(
            "API keys need a store; this instance runs without one.",
        ))
    })
}

fn failed(e: orinari_store::StoreError) -> HttpError {
    HttpError(crate::error::from_store(
        &e,
        "The key operation failed; see the server log.",
    ))
}

/// The public view of a key (never the key or its hash).
pub fn view(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "requests_per_minute": k.requests_per_minute,
        "tokens_per_minute": k.tokens_per_minute,
        "allowed_models": k.allowed_models,
        "priority": k.priority,
        "max_concurrent": k.max_concurrent,
        "prompt_injection": k.prompt_injection,
        "allowed_sources": k.allowed_sources,
        "created_at_ms": k.created_at,
        "revoked_at_ms": k.revoked_at,
    })
}

fn invalid(field: &str, why: impl std::fmt::Display) -> HttpError {
    HttpError(ApiError::invalid(
        field.to_string(),
        format!("`{field}` {why}."),
    ))
}

fn opt_u32(v: &Value, field: &str) -> Result<Option<u32>, HttpError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(field, "must be a whole number from 1 to 4294967295")),
    }
}

/// An optional array of names (`allowed_models`, `allowed_sources`).
fn opt_names(v: &Value, field: &str, what: &str) -> Result<Option<Vec<String>>, HttpError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(&format!("{field}[{i}]"), "must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(field, format!("must be an array of {what} names"))),
    }
}

fn parse_spec(body: &[u8]) -> Result<KeySpec, HttpError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        HttpError(ApiError::invalid_json(format!(
            "The body is not valid JSON: {e}."
        )))
    })?;
    let Some(obj) = v.as_object() else {
        return Err(HttpError(ApiError::invalid_json(
            "The body must be a JSON object.",
        )));
    };
    const KNOWN: &[&str] = &[
        "name",
        "requests_per_minute",
        "tokens_per_minute",
        "allowed_models",
        "priority",
        "max_concurrent",
        "prompt_injection",
        "allowed_sources",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(unknown, "is not a key field"));
    }
    let name = match v.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("name", "must be a string")),
        None => return Err(invalid("name", "is required")),
    };
    let priority = match v.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| (-100..=100).contains(p))
            .ok_or_else(|| invalid("priority", "must be a whole number from -100 to 100"))?,
    };
    let prompt_injection = match v.get("prompt_injection") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_str()
                .and_then(orinari_limits::callers::policy)
                .ok_or_else(|| invalid("prompt_injection", "must be one of block, flag, off"))?,
        ),
    };
    let spec = KeySpec {
        name,
        requests_per_minute: opt_u32(&v, "requests_per_minute")?,
        tokens_per_minute: opt_u32(&v, "tokens_per_minute")?,
        allowed_models: opt_names(&v, "allowed_models", "model")?,
        priority,
        max_concurrent: opt_u32(&v, "max_concurrent")?,
        prompt_injection,
        allowed_sources: opt_names(&v, "allowed_sources", "source")?,
    };
    spec.validate()
        .map_err(|(field, why)| invalid(field, why))?;
    Ok(spec)
}

/// `POST /admin/v1/keys`.
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let spec = parse_spec(&body)?;
    let created = create_key(store(&state)?, spec).await.map_err(failed)?;
    tracing::info!(key_id = %created.record.id, "API key created");
    let mut v = view(&created.record);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("key".into(), Value::String(created.secret));
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /admin/v1/keys`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let keys = store(&state)?.list_keys().await.map_err(failed)?;
    Ok(Json(json!({
        "object": "list",
        "data": keys.iter().map(view).collect::<Vec<_>>(),
    })))
}

/// `DELETE /admin/v1/keys/{id}`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let revoked = store(&state)?.revoke_key(&id).await.map_err(failed)?;
    if !revoked {
        let mut e = ApiError::invalid("id", format!("No active key has the id `{id}`."))
            .with_code("key_not_found");
        e.status = 404;
        return Err(HttpError(e));
    }
    state.edge().forget_keys();
    tracing::info!(key_id = %id, "API key revoked");
    Ok(Json(json!({"id": id, "revoked": true})))
}
