//! `/admin/*` requires `Authorization: Bearer <admin token>`: 401 without
//! credentials, 403 with wrong ones, always in the JSON error envelope.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orinari_api::{ApiError, ErrorType};

use crate::AppState;
use crate::error::HttpError;

fn denied(status: u16, kind: ErrorType, message: &str, code: &'static str) -> Response {
    HttpError(ApiError {
        status,
        message: message.into(),
        kind,
        param: None,
        code: Some(code),
        retry_after: None,
    })
    .into_response()
}

/// The middleware behind the layer built in `stack.rs`.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        None | Some("") => {
            let mut res = denied(
                401,
                ErrorType::AuthenticationError,
                "Admin endpoints need `Authorization: Bearer <admin token>`.",
                "missing_admin_token",
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            res
        }
        Some(t) if state.is_admin(t) => next.run(req).await,
        Some(_) => denied(
            403,
            ErrorType::PermissionError,
            "The admin token is not valid.",
            "invalid_admin_token",
        ),
    }
}
