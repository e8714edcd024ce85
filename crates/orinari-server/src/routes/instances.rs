//! `GET /admin/v1/instances`: every instance of the cluster sharing this
//! instance's store — id, region, version, configuration hash, leader, last
//! seen — with the ones whose version or configuration differ from the
//! others marked, and stale (not seen lately) or stopped ones shown as such.

use axum::Json;
use axum::extract::State;
use orinari_api::ApiError;
use orinari_store::instances::{self, InstanceView};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::HttpError;

fn view(i: &InstanceView, me: Option<&str>, leading: Option<bool>, now: i64) -> Value {
    let this = me == Some(i.row.id.as_str());
    // This instance knows its own leadership now; the others' is as of
    // their last heartbeat.
    let leader = match (this, leading) {
        (true, Some(l)) => l,
        _ => i.row.leader && i.state == instances::InstanceState::Up,
    };
    json!({
        "id": i.row.id,
        "region": i.row.region,
        "version": i.row.version,
        "config_hash": i.row.config_hash,
        "leader": leader,
        "state": i.state.as_str(),
        "this": this,
        "version_differs": i.version_differs,
        "config_differs": i.config_differs,
        "pid": i.row.pid,
        "started_at_ms": i.row.started_at,
        "last_seen_ms": i.row.last_seen,
        "last_seen_ago_ms": now.saturating_sub(i.row.last_seen).max(0),
        "stopped_at_ms": i.row.stopped_at,
    })
}

/// `GET /admin/v1/instances`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let me = state.instance();
    let Some(store) = state.store() else {
        return Ok(Json(json!({
            "object": "list", "instance": me, "agree": true, "leaders": 0, "data": [],
        })));
    };
    let rows = store.instances().await.map_err(|e| {
        tracing::warn!(error = %e, "listing instances failed");
        HttpError(ApiError::overloaded(
            "The store does not answer; the instances cannot be listed now.",
            5,
        ))
    })?;
    let now = orinari_store::now_ms();
    let cluster = instances::cluster_view(rows, now);
    let leading = state.status().map(|s| s.is_leader());
    let data: Vec<Value> = cluster
        .instances
        .iter()
        .map(|i| view(i, me, leading, now))
        .collect();
    let leaders = data.iter().filter(|v| v["leader"] == true).count();
    Ok(Json(json!({
        "object": "list",
        "instance": me,
        "agree": cluster.agree,
        "leaders": leaders,
        "stale_after_ms": u64::try_from(instances::STALE_AFTER.as_millis()).unwrap_or(u64::MAX),
        "data": data,
    })))
}
