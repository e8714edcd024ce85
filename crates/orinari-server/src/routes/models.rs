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

/// The embedding model `orinari-embed`, when it is served.
fn embedding(state: &AppState) -> Option<Model> {
    let live = state.live();
    live.chat
        .embedder()
        .map(|_| Model::new(orinari_embed::MODEL, state.created(), "orinari"))
}

/// List served models (the embedding model last).
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let mut models: Vec<Model> = state.models().iter().map(|m| entry(&state, m)).collect();
    models.extend(embedding(&state));
    Json(ModelList::new(models))
}

/// One model, or 404 in the OpenAI envelope.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, HttpError> {
    if let Some(m) = state.model(&id) {
        return Ok(Json(entry(&state, &m)));
    }
    embedding(&state)
        .filter(|_| id == orinari_embed::MODEL)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id).into())
}
