//! `/v1/*` callers: the API key in `Authorization: Bearer <key>` (required
//! when `[auth] required = true`), or the client IP when keys are optional
//! and none is sent. The resolved [`Caller`] goes into the request's
//! extensions for the rate-limit layer; an unknown or revoked key is 401.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::edge::Caller;
use crate::error::HttpError;

/// The middleware behind the layer built in `stack.rs`.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match caller(&state, peer, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert::<Caller>(caller);
            next.run(req).await
        }
        Err(res) => res,
    }
}

/// The caller of a request from `peer` with `headers`, or the 401 response
/// that refuses it.
pub async fn caller(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    let edge = state.edge();
    let ip = edge.client_ip(peer, headers);
    edge.authenticate(state.store(), headers, ip)
        .await
        .map_err(|e| {
            let unauthorized = e.status == 401;
            let mut res = HttpError(e).into_response();
            if unauthorized {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            res
        })
}
