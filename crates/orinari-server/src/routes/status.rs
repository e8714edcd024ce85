//! The status page's public machine interfaces: Statuspage-compatible JSON
//! under `/api/v2/`, the Atom feed, SVG badges and the live-update stream
//! (`text/event-stream`). Each reads the service's current snapshot; none
//! touches the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use orinari_api::ApiError;
use orinari_status::{Snapshot, StatusService, statuspage};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::error::HttpError;

/// How often a live stream checks whether the server is draining.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// The service, or 503 when this instance runs none.
pub fn service(state: &AppState) -> Result<&Arc<StatusService>, HttpError> {
    state.status().ok_or_else(|| {
        HttpError(
            ApiError::overloaded("The status page is not running on this instance.", 5)
                .with_code("status_unavailable"),
        )
    })
}

fn json(v: Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
            // Aggregators and other pages read these from browsers, as
            // they do from Statuspage.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        v.to_string(),
    )
        .into_response()
}

macro_rules! endpoint {
    ($name:ident, $f:path, $doc:literal) => {
        #[doc = $doc]
        pub async fn $name(State(state): State<AppState>) -> Result<Response, HttpError> {
            Ok(json($f(&service(&state)?.snapshot())))
        }
    };
}

endpoint!(summary, statuspage::summary, "`GET /api/v2/summary.json`.");
endpoint!(
    status,
    statuspage::status_json,
    "`GET /api/v2/status.json`."
);
endpoint!(
    components,
    statuspage::components_json,
    "`GET /api/v2/components.json`."
);
endpoint!(
    incidents,
    statuspage::incidents_json,
    "`GET /api/v2/incidents.json`."
);
endpoint!(
    unresolved,
    statuspage::unresolved_json,
    "`GET /api/v2/incidents/unresolved.json`."
);
endpoint!(
    maintenances,
    statuspage::maintenances_json,
    "`GET /api/v2/scheduled-maintenances.json`."
);
endpoint!(
    upcoming,
    statuspage::upcoming_json,
    "`GET /api/v2/scheduled-maintenances/upcoming.json`."
);
endpoint!(
    active,
    statuspage::active_json,
    "`GET /api/v2/scheduled-maintenances/active.json`."
);

/// `GET /status/feed.atom`.
pub async fn feed(State(state): State<AppState>) -> Result<Response, HttpError> {
    let body = orinari_status::atom(&service(&state)?.snapshot());
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// `?component=ID` for a badge of one component.
#[derive(Debug, Deserialize)]
pub struct BadgeQuery {
    component: Option<String>,
}

/// `GET /status/badge.svg[?component=ID]`.
pub async fn badge(
    State(state): State<AppState>,
    Query(q): Query<BadgeQuery>,
) -> Result<Response, HttpError> {
    let snap = service(&state)?.snapshot();
    let (label, message, colour) = match &q.component {
        None => (
            snap.page.name.clone(),
            snap.status.description.to_string(),
            orinari_status::colour_of(None, snap.status.indicator),
        ),
        Some(id) => {
            let c = snap.component(id).ok_or_else(|| {
                let mut e = ApiError::invalid("component", format!("no component `{id}`"));
                e.status = 404;
                HttpError(e)
            })?;
            (
                c.row.name.clone(),
                c.status.label().to_lowercase(),
                orinari_status::colour_of(Some(c.status), snap.status.indicator),
            )
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        orinari_status::badge(&label, &message, colour),
    )
        .into_response())
}

/// `GET /status/events`: the summary now and after every change, as
/// `summary` events; ends when the server starts draining.
pub async fn events(State(state): State<AppState>) -> Result<Response, HttpError> {
    let svc = service(&state)?;
    let rx = svc.subscribe();
    let stream = live(rx, state.clone());
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-cache")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response())
}

fn event(s: &Snapshot) -> Event {
    Event::default()
        .event("summary")
        .id(s.version.to_string())
        .data(statuspage::summary(s).to_string())
}

fn live(
    rx: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    state: AppState,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((rx, state, true), |(mut rx, state, first)| async move {
        if first {
            let e = event(&rx.borrow_and_update());
            return Some((Ok(e), (rx, state, false)));
        }
        loop {
            if state.draining() {
                return None;
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let e = event(&rx.borrow_and_update());
                    return Some((Ok(e), (rx, state, false)));
                }
                () = tokio::time::sleep(DRAIN_POLL) => {}
            }
        }
    })
}

/// `POST /api/v2/subscribers.json` `{"endpoint": URL, "components": [ID…],
/// "secret": "…"}`: subscribe a webhook. The endpoint is verified first (it
/// must echo the `challenge` of a signed `subscription.verify` event); the
/// answer, 201, carries the signing secret (once) and the unsubscribe token.
pub async fn subscribe(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    use super::status_admin::{failed, known, object, string};
    let svc = service(&state)?.clone();
    let o = object(&body)?;
    known(&o, &["endpoint", "components", "secret"])?;
    let endpoint = string(&o, "endpoint")?.ok_or_else(|| {
        HttpError(ApiError::invalid(
            "endpoint",
            "`endpoint` is required: the URL notifications are POSTed to.",
        ))
    })?;
    let components = super::status_admin::component_ids(&o)?;
    let input = orinari_status::webhooks::WebhookInput {
        endpoint,
        components,
        secret: string(&o, "secret")?,
    };
    let client = crate::http::client_ip(&state.edge().config().connections, &extensions, &headers);
    let now = orinari_store::now_ms();
    let created = svc
        .subscribe_webhook(input, client, now)
        .await
        .map_err(failed)?;
    let body = serde_json::json!({
        "subscriber": {
            "id": created.id,
            "mode": "webhook",
            "endpoint": created.endpoint,
            "components": created.components,
            "secret": created.secret,
            "unsubscribe_token": created.unsubscribe_token,
            "unsubscribe_url": created.unsubscribe_url,
            "created_at": svc.snapshot().page.clock.format(now),
        }
    });
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response())
}

/// `DELETE /api/v2/subscribers/{token}`: end a subscription (webhook or
/// email) by its unsubscribe token; 204, or 404 when none is active.
pub async fn unsubscribe(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Result<Response, HttpError> {
    let svc = service(&state)?.clone();
    let done = svc
        .unsubscribe(&token, orinari_store::now_ms())
        .await
        .map_err(super::status_admin::failed)?;
    if done {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        let mut e = ApiError::invalid("token", "No active subscription has this token.");
        e.status = 404;
        Err(HttpError(e.with_code("not_found")))
    }
}
