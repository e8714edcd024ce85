//! `/admin/v1/sources`: each data source's state for operators (documents,
//! chunks, index size, last sync, errors, indexing progress, last search),
//! and `POST /admin/v1/sources/{name}/reindex`, which asks a files source to
//! read its folder again (searches keep answering meanwhile).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orinari_api::ApiError;
use orinari_sources::SourceStatus;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::HttpError;

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One source's state as JSON (no query or passage text: errors are
/// scrubbed of the query by `orinari-sources`).
pub fn view(s: &SourceStatus) -> Value {
    json!({
        "name": s.name,
        "kind": s.kind,
        "documents": s.documents,
        "chunks": s.chunks,
        "index_bytes": s.index_bytes,
        "last_sync_ms": s.last_sync.map(ms),
        "failed_documents": s.failed_documents,
        "error": s.error,
        "indexing": s.indexing.map(|p| json!({
            "done": p.done,
            "total": p.total,
            "rate_per_second": (p.rate() * 10.0).round() / 10.0,
            "seconds_left": p.left().map(|d| d.as_secs()),
        })),
        "last_search": s.last_search.as_ref().map(|l| json!({
            "at_ms": ms(l.at),
            "outcome": l.outcome.outcome.as_str(),
            "hits": l.outcome.hits,
            "latency_ms": u64::try_from(l.outcome.latency.as_millis()).unwrap_or(u64::MAX),
            "error": l.outcome.error,
            "note": l.outcome.note,
        })),
        "dense": s.dense.as_ref().map(|d| json!({
            "retrieval": d.retrieval,
            "model": d.model,
            "ready": d.ready,
            "vectors": d.vectors,
            "pending": d.pending,
            "embedded": d.embedded,
            "cache_bytes": d.cache_bytes,
            "error": d.error,
        })),
    })
}

/// `GET /admin/v1/sources`.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let live = state.live();
    let data: Vec<Value> = live
        .chat
        .retrieval()
        .map(|r| r.sources().status())
        .unwrap_or_default()
        .iter()
        .map(view)
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /admin/v1/sources/{name}/reindex`: 202 when the files source was
/// asked to reindex; 404 for no such source; 400 for a source that has no
/// index (http, sql).
pub async fn reindex(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let live = state.live();
    let Some(status) = live
        .chat
        .retrieval()
        .and_then(|r| r.sources().status().into_iter().find(|s| s.name == name))
    else {
        let mut e = ApiError::invalid("name", format!("No source is named `{name}`."))
            .with_code("source_not_found");
        e.status = 404;
        return Err(HttpError(e));
    };
    let asked = state
        .indexer()
        .and_then(|i| {
            i.lock()
                .ok()
                .map(|i| i.as_ref().is_some_and(|i| i.reindex(&name)))
        })
        .unwrap_or(false);
    if !asked {
        return Err(HttpError(ApiError::invalid(
            "name",
            format!(
                "The source `{name}` ({}) has no index to rebuild; only files sources do.",
                status.kind
            ),
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "reindexing": true})),
    ))
}
