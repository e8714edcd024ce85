//! `/admin/v1/incidents` and `/admin/v1/maintenances`: operators open
//! incidents, post updates (through resolved and postmortem), and schedule
//! maintenances. Bodies are read field by field so every error names its
//! field; the service enforces the lifecycles.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orinari_api::ApiError;
use orinari_status::{IncidentInput, MaintenanceInput, StatusError, UpdateInput, statuspage};
use serde_json::{Map, Value, json};

use super::status::service;
use crate::AppState;
use crate::error::HttpError;

/// Classify a status error once (admin and public status routes).
pub(super) fn failed(e: StatusError) -> HttpError {
    match e {
        StatusError::Invalid { field, message } => HttpError(ApiError::invalid(
            field.clone(),
            format!("`{field}`: {message}"),
        )),
        StatusError::NotFound { .. } => {
            let mut a = ApiError::invalid("id", format!("{e}."));
            a.status = 404;
            HttpError(a.with_code("not_found"))
        }
        StatusError::Delivery(_) => {
            tracing::warn!(error = %e, "status notification failed");
            HttpError(ApiError::upstream_failed(
                "A notification could not be delivered.",
            ))
        }
        StatusError::Limited { retry_after_s } => HttpError(ApiError::rate_limited(
            format!("{e}."),
            "subscription_rate_limited",
            retry_after_s,
        )),
        StatusError::Store(s) => HttpError(crate::error::from_store(
            &s,
            "The change could not be stored.",
        )),
    }
}

pub(super) fn object(body: &Bytes) -> Result<Map<String, Value>, HttpError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(HttpError(ApiError::invalid_json(
            "The body must be a JSON object.",
        ))),
        Err(e) => Err(HttpError(ApiError::invalid_json(format!(
            "The body is not valid JSON: {e}."
        )))),
    }
}

pub(super) fn string(o: &Map<String, Value>, key: &str) -> Result<Option<String>, HttpError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HttpError(ApiError::invalid(
            key,
            format!("`{key}` must be a string."),
        ))),
    }
}

pub(super) fn known(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), HttpError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(HttpError(ApiError::invalid(
            k.clone(),
            format!(
                "Unknown field `{k}`; expected one of {}.",
                allowed.join(", ")
            ),
        ))),
        None => Ok(()),
    }
}

/// `{"id": "status", …}`.
/// `components`: absent, `null`, or an array of component id strings.
pub(super) fn component_ids(o: &Map<String, Value>) -> Result<Vec<String>, HttpError> {
    Ok(match o.get("components") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    HttpError(ApiError::invalid(
                        format!("components[{i}]"),
                        format!("`components[{i}]` must be a component id (a string)."),
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(HttpError(ApiError::invalid(
                "components",
                "`components` must be an array of component ids.",
            )));
        }
    })
}

fn component_map(o: &Map<String, Value>) -> Result<Vec<(String, String)>, HttpError> {
    match o.get("components") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(HttpError(ApiError::invalid(
                    format!("components.{k}"),
                    format!("`components.{k}` must be a status string such as \"major_outage\"."),
                ))),
            })
            .collect(),
        Some(_) => Err(HttpError(ApiError::invalid(
            "components",
            "`components` must be an object of component id → status.",
        ))),
    }
}

fn created(v: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(v))
}

/// `GET /admin/v1/incidents`.
pub async fn list_incidents(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let snap = service(&state)?.snapshot();
    Ok(Json(statuspage::incidents_json(&snap)))
}

/// `POST /admin/v1/incidents`.
pub async fn create_incident(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let svc = service(&state)?;
    let o = object(&body)?;
    known(&o, &["name", "status", "impact", "message", "components"])?;
    let input = IncidentInput {
        name: string(&o, "name")?.unwrap_or_default(),
        status: string(&o, "status")?,
        impact: string(&o, "impact")?,
        message: string(&o, "message")?.unwrap_or_default(),
        components: component_map(&o)?,
    };
    let row = svc
        .create_incident(input, orinari_store::now_ms())
        .await
        .map_err(failed)?;
    Ok(created(statuspage::incident(&svc.snapshot(), &row)))
}

/// `POST /admin/v1/incidents/{id}/updates`.
pub async fn update_incident(
    state: State<AppState>,
    id: Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    update("incident", state, id, body).await
}

/// `POST /admin/v1/maintenances/{id}/updates`.
pub async fn update_maintenance(
    state: State<AppState>,
    id: Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    update("maintenance", state, id, body).await
}

async fn update(
    kind: &'static str,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let svc = service(&state)?;
    let o = object(&body)?;
    known(&o, &["status", "message", "components"])?;
    let input = UpdateInput {
        status: string(&o, "status")?
            .ok_or_else(|| HttpError(ApiError::invalid("status", "`status` is required.")))?,
        message: string(&o, "message")?.unwrap_or_default(),
        components: component_map(&o)?,
    };
    let row = svc
        .add_update(kind, &id, input, orinari_store::now_ms())
        .await
        .map_err(failed)?;
    Ok(created(statuspage::incident(&svc.snapshot(), &row)))
}

/// `GET /admin/v1/maintenances`.
pub async fn list_maintenances(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let snap = service(&state)?.snapshot();
    Ok(Json(statuspage::maintenances_json(&snap)))
}

/// `POST /admin/v1/maintenances`.
pub async fn create_maintenance(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let svc = service(&state)?;
    let o = object(&body)?;
    known(
        &o,
        &[
            "name",
            "scheduled_for",
            "scheduled_until",
            "message",
            "components",
        ],
    )?;
    let components = component_ids(&o)?;
    let input = MaintenanceInput {
        name: string(&o, "name")?.unwrap_or_default(),
        scheduled_for: string(&o, "scheduled_for")?.unwrap_or_default(),
        scheduled_until: string(&o, "scheduled_until")?.unwrap_or_default(),
        message: string(&o, "message")?.unwrap_or_default(),
        components,
    };
    let row = svc
        .create_maintenance(input, orinari_store::now_ms())
        .await
        .map_err(failed)?;
    Ok(created(statuspage::incident(&svc.snapshot(), &row)))
}

/// `GET /admin/v1/status`: the probes' view of every component.
pub async fn probes(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let svc = service(&state)?;
    let snap = svc.snapshot();
    let list: Vec<Value> = snap
        .components
        .iter()
        .map(|c| {
            json!({
                "id": c.row.id,
                "status": c.status.as_str(),
                "observed": c.observed.map(|s| s.as_str()),
                "uptime_30d": c.uptime_30.map(orinari_status::uptime::percent),
                "uptime_90d": c.uptime_90.map(orinari_status::uptime::percent),
            })
        })
        .collect();
    Ok(Json(json!({"components": list})))
}
