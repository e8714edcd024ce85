//! `GET /openapi.json`: the OpenAPI 3.1 document of every route.
//!
//! The document is written by hand (`src/openapi.json`) and held to the
//! code by `tests/openapi.rs`: every route the routers register is in it
//! and every path in it is registered, with the same methods.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The handler.
pub async fn document() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DOCUMENT,
    )
}
