//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use orinari_api::ApiError;
use orinari_api::models::{Model, ModelList};

use crate::AppState;
use crate::error::HttpError;

fn entry(state: &AppState, m: &crate::ServedModel) -> Model {
    Model::new(&m.name, state.created(), &m.backend.info().owned_by)
}

/// List served models.
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList::new(
        state.models().iter().map(|m| entry(&state, m)).collect(),
    ))
}

/// One model, or 404 in the OpenAI envelope.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, HttpError> {
    let m = state
        .model(&id)
        .ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(entry(&state, &m)))
}
