//! IP allow and deny lists per route group (`[firewall]`): a refused address
//! gets 403 in the error envelope before anything else runs. Requests that
//! did not come over a network connection (in-process tests) have no
//! address and are let through.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orinari_api::ApiError;

use crate::AppState;
use crate::error::HttpError;

/// The route groups that carry their own lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// `/v1/*`.
    Api,
    /// `/admin/*`.
    Admin,
    /// Pages and their assets.
    Pages,
    /// `/healthz`, `/readyz`, `/metrics`.
    Ops,
}

fn group(path: &str) -> Group {
    if path.starts_with("/v1/") || path == "/v1" {
        Group::Api
    } else if path.starts_with("/admin/") || path == "/admin" {
        Group::Admin
    } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        Group::Ops
    } else {
        Group::Pages
    }
}

/// The middleware behind the layer built in `stack.rs`.
pub async fn filter(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let edge = state.edge();
    let group = group(req.uri().path());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let Some(ip) = edge.client_ip(peer, req.headers()) else {
        return next.run(req).await;
    };
    let fw = &edge.config().firewall;
    let rule = match group {
        Group::Api => &fw.api,
        Group::Admin => &fw.admin,
        Group::Pages => &fw.pages,
        Group::Ops => &fw.ops,
    };
    if rule.permits(ip) {
        next.run(req).await
    } else {
        state.metrics().limits.rejected("firewall");
        HttpError(ApiError::forbidden(
            "Requests from your address are not allowed on this route.",
            "address_not_allowed",
        ))
        .into_response()
    }
}
