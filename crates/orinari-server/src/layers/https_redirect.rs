//! With HTTPS on, the plain listener answers health checks and ACME HTTP-01
//! challenges itself and sends everything else to the same path on HTTPS
//! (308, so methods and bodies are kept).

use axum::extract::Request;
use axum::http::uri::Authority;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orinari_api::ApiError;

use crate::error::HttpError;

fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/.well-known/acme-challenge/")
}

/// The middleware behind the layer built in `stack.rs`.
pub async fn redirect(port: u16, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        .map(|a| a.host().to_string())
        .or_else(|| req.uri().host().map(str::to_string));
    let Some(host) = host else {
        return HttpError(ApiError::invalid("host", "A Host header is required.")).into_response();
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => {
            HttpError(ApiError::invalid("host", "The Host header is not valid.")).into_response()
        }
    }
}
