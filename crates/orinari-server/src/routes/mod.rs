//! Routes and thin handlers.

mod admin;
mod backends;
mod chat;
mod completions;
mod embeddings;
mod health;
mod instances;
mod keys;
mod messages;
mod metrics;
mod models;
mod observability;
mod openapi;
mod responses;
mod sources;
mod status;
mod status_admin;
mod surface;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::HttpError;
use orinari_api::ApiError;

/// The admin API, without layers (the stack adds admin authentication).
pub fn admin(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/backups", get(admin::list).post(admin::create))
        .route("/admin/v1/backups/verify", post(admin::verify))
        .route("/admin/v1/reload", post(admin::reload))
        .route("/admin/v1/backends", get(backends::list))
        .route(
            "/admin/v1/backends/{model}/{backend}",
            post(backends::update).patch(backends::update),
        )
        .route("/admin/v1/models/{name}", get(backends::model))
        .route("/admin/v1/models/{name}/rollout", post(backends::rollout))
        .route("/admin/v1/models/{name}/rollback", post(backends::rollback))
        .route("/admin/v1/keys", get(keys::list).post(keys::create))
        .route("/admin/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route(
            "/admin/v1/incidents",
            get(status_admin::list_incidents).post(status_admin::create_incident),
        )
        .route(
            "/admin/v1/incidents/{id}/updates",
            post(status_admin::update_incident),
        )
        .route(
            "/admin/v1/maintenances",
            get(status_admin::list_maintenances).post(status_admin::create_maintenance),
        )
        .route(
            "/admin/v1/maintenances/{id}/updates",
            post(status_admin::update_maintenance),
        )
        .route("/admin/v1/status", get(status_admin::probes))
        .route("/admin/v1/errors", get(observability::errors))
        .route("/admin/v1/analytics", get(observability::analytics))
        .route("/admin/v1/instances", get(instances::list))
        .route("/admin/v1/sources", get(sources::list))
        .route("/admin/v1/sources/{name}/reindex", post(sources::reindex))
        .with_state(state)
}

/// The OpenAI-compatible API (`/v1/*`), without layers (the stack adds
/// API-key authentication, rate limits and the admission queue).
pub fn v1(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/messages", post(messages::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/responses", post(responses::create))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Every other public route (health, metrics, status JSON), without layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::live))
        .route(
            "/.well-known/acme-challenge/{token}",
            get(health::acme_challenge),
        )
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .route("/api/v2/summary.json", get(status::summary))
        .route("/api/v2/status.json", get(status::status))
        .route("/api/v2/components.json", get(status::components))
        .route("/api/v2/incidents.json", get(status::incidents))
        .route("/api/v2/incidents/unresolved.json", get(status::unresolved))
        .route(
            "/api/v2/scheduled-maintenances.json",
            get(status::maintenances),
        )
        .route(
            "/api/v2/scheduled-maintenances/upcoming.json",
            get(status::upcoming),
        )
        .route(
            "/api/v2/scheduled-maintenances/active.json",
            get(status::active),
        )
        .route("/api/v2/subscribers.json", post(status::subscribe))
        .route(
            "/api/v2/subscribers/{token}",
            axum::routing::delete(status::unsubscribe),
        )
        .route("/status/feed.atom", get(status::feed))
        .route("/status/badge.svg", get(status::badge))
        .route("/status/events", get(status::events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(method: Method, uri: OriginalUri) -> HttpError {
    ApiError::route_not_found(method.as_str(), uri.path()).into()
}

async fn method_not_allowed(method: Method, uri: OriginalUri) -> HttpError {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into()
}
