//! IP allow and deny lists per route group (`[firewall]`): a refused address
//! gets 403 in the error envelope before anything else runs. Requests that
//! did not come over a network connection (in-process tests) have no
//! address and are let through.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::http::Request;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use orinari_api::ApiError;
use tower::{Layer, Service};

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

/// The layer; see the module docs.
#[derive(Clone)]
pub struct FirewallLayer {
    state: AppState,
}

impl FirewallLayer {
    /// Apply `state`'s `[firewall]` (the live one: a reload applies at once).
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for FirewallLayer {
    type Service = Firewall<S>;
    fn layer(&self, inner: S) -> Firewall<S> {
        Firewall {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service behind [`FirewallLayer`].
#[derive(Clone)]
pub struct Firewall<S> {
    inner: S,
    state: AppState,
}

impl<S, B> Service<Request<B>> for Firewall<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if permits(&self.state, &req) {
            Either::Right(self.inner.call(req))
        } else {
            self.state.metrics().limits.rejected("firewall");
            Either::Left(ready(Ok(HttpError(ApiError::forbidden(
                "Requests from your address are not allowed on this route.",
                "address_not_allowed",
            ))
            .into_response())))
        }
    }
}

fn permits<B>(state: &AppState, req: &Request<B>) -> bool {
    let edge = state.edge();
    let Some(ip) =
        crate::http::client_ip(&edge.config().connections, req.extensions(), req.headers())
    else {
        return true;
    };
    let fw = &edge.config().firewall;
    let rule = match group(req.uri().path()) {
        Group::Api => &fw.api,
        Group::Admin => &fw.admin,
        Group::Pages => &fw.pages,
        Group::Ops => &fw.ops,
    };
    rule.permits(ip)
}
