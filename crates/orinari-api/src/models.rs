//! `GET /v1/models` shapes.

use serde::Serialize;

/// One model as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Model {
    /// The name clients ask for.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when it became available (process start).
    pub created: u64,
    /// Who provides it.
    pub owned_by: String,
}

impl Model {
    /// A model entry.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: "model",
            created,
            owned_by: owned_by.into(),
        }
    }
}

/// The list envelope.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// Wrap models in the list envelope.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: "list",
            data,
        }
    }
}
