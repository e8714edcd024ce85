//! Routes and thin handlers.

mod admin;
mod chat;
mod health;
mod metrics;
mod models;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::HttpError;
use crate::pages::chat as chat_page;
use orinari_api::ApiError;

/// The HTML pages and their assets, without layers (the stack adds the
/// page-only ones: compression and security headers).
pub fn pages(state: AppState) -> Router {
    Router::new()
        .route("/", get(chat_page::page).post(chat_page::submit))
        .route("/assets/{name}", get(chat_page::asset))
        .with_state(state)
}

/// The admin API, without layers (the stack adds admin authentication).
pub fn admin(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/backups", get(admin::list).post(admin::create))
        .route("/admin/v1/backups/verify", post(admin::verify))
        .with_state(state)
}

/// Every API route, without layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::render))
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
