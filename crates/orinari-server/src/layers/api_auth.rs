//! `/v1/*` callers: the API key in `Authorization: Bearer <key>` (required
//! when `[auth] required = true`), or the client IP when keys are optional
//! and none is sent. The resolved [`Caller`] goes into the request's
//! extensions for the rate-limit layer; an unknown or revoked key is 401.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::edge::Caller;
use crate::error::HttpError;

/// The middleware behind the layer built in `stack.rs`.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let edge = state.edge();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = edge.client_ip(peer, req.headers());
    match edge.authenticate(state.store(), req.headers(), ip).await {
        Ok(caller) => {
            req.extensions_mut().insert::<Caller>(caller);
            next.run(req).await
        }
        Err(e) => {
            let unauthorized = e.status == 401;
            let mut res = HttpError(e).into_response();
            if unauthorized {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            res
        }
    }
}
