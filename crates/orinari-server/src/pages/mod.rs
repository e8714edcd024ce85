//! Server-rendered pages and their static assets.
//!
//! Pages are askama templates checked at compile time; every value is
//! HTML-escaped by the template. Handlers here are thin: extract, call one
//! function of [`conversation`] (which asks `orinari-chat` for the
//! answer), render.

pub mod assets;
pub mod chat;
pub mod conversation;
pub mod status;
pub mod vitals;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

/// The HTML pages and their assets, without layers (the stack adds the
/// page-only ones: the form-post edge, compression and security headers).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(chat::page).post(chat::submit))
        .route("/assets/{name}", get(chat::asset))
        .route("/status", get(status::page))
        .route("/status/subscribe", post(status::subscribe))
        .route("/status/subscribe/webhook", post(status::subscribe_webhook))
        .route("/status/vitals", post(vitals::vitals))
        .route("/status/subscriptions/confirm", get(status::confirm))
        .route(
            "/status/subscriptions/unsubscribe",
            get(status::unsubscribe),
        )
        .with_state(state)
}
