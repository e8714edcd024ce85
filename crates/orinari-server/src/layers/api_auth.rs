//! Callers: the API key in `Authorization: Bearer <key>` (required when
//! `[auth] required = true`), or the client IP when keys are optional and
//! none is sent. The resolved [`Caller`] goes into the request's
//! extensions for the rate-limit layer and the handler; a missing, unknown
//! or revoked key is 401 with `WWW-Authenticate: Bearer`.
//!
//! The decision is taken without waiting when it can be (no key, a key
//! that is not ours, a cached lookup); only a key the cache does not hold
//! waits for the store, in a boxed future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use orinari_limits::{AuthError, Caller};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{Layer, Service};

use crate::AppState;
use crate::error::{HttpError, from_auth};
use crate::http;

/// The layer; see the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    state: AppState,
    posts_only: bool,
}

impl AuthLayer {
    /// Resolve the caller of every request.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            posts_only: false,
        }
    }

    /// Resolve the caller of `POST`s only (the pages: a form post runs the
    /// model; reading a page does not).
    pub fn posts_only(state: AppState) -> Self {
        Self {
            state,
            posts_only: true,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            state: self.state.clone(),
            posts_only: self.posts_only,
        }
    }
}

/// The service behind [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    state: AppState,
    posts_only: bool,
}

type Lookup = Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send>>;

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AuthFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if self.posts_only && req.method() != Method::POST {
            return AuthFuture::Inner {
                fut: self.inner.call(req),
            };
        }
        let edge = self.state.edge();
        let ip = http::client_ip(&edge.config().connections, req.extensions(), req.headers());
        let bearer = http::bearer(req.headers());
        let store = self.state.store();
        match edge.authenticate_now(store.is_some(), bearer, ip) {
            Some(Ok(caller)) => {
                req.extensions_mut().insert(caller);
                AuthFuture::Inner {
                    fut: self.inner.call(req),
                }
            }
            Some(Err(e)) => AuthFuture::Refused {
                res: Some(refusal(e)),
            },
            None => {
                let (store, token) = (store.cloned(), bearer.map(str::to_string));
                let lookup: Lookup = Box::pin(async move {
                    edge.authenticate(store.as_ref(), token.as_deref(), ip)
                        .await
                });
                // The inner service runs later, from the future: a clone
                // takes the place of the one made ready for this call.
                let clone = self.inner.clone();
                AuthFuture::Lookup {
                    lookup,
                    next: Some((std::mem::replace(&mut self.inner, clone), req)),
                }
            }
        }
    }
}

/// 401 (with `WWW-Authenticate: Bearer`) or 503 in the envelope.
fn refusal(e: AuthError) -> Response {
    let e = from_auth(e);
    let unauthorized = e.status == 401;
    let mut res = HttpError(e).into_response();
    if unauthorized {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

pin_project! {
    /// The future of [`Auth`].
    #[project = Proj]
    pub enum AuthFuture<S: Service<Request<Body>>> {
        /// Resolved at once: the inner service runs.
        Inner { #[pin] fut: S::Future },
        /// Waiting for the store.
        Lookup { lookup: Lookup, next: Option<(S, Request<Body>)> },
        /// The store answered: the inner service runs.
        After { #[pin] fut: Oneshot<S, Request<Body>> },
        /// Refused.
        Refused { res: Option<Response> },
    }
}

impl<S> Future for AuthFuture<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Output = Result<Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Proj::Inner { fut } => return fut.poll(cx),
                Proj::After { fut } => return fut.poll(cx),
                Proj::Refused { res } => {
                    return Poll::Ready(Ok(res.take().unwrap_or_default()));
                }
                Proj::Lookup { lookup, next } => {
                    let caller = std::task::ready!(lookup.as_mut().poll(cx));
                    let Some((inner, mut req)) = next.take() else {
                        return Poll::Ready(Ok(Response::default()));
                    };
                    let next = match caller {
                        Ok(caller) => {
                            req.extensions_mut().insert(caller);
                            Self::After {
                                fut: Oneshot::new(inner, req),
                            }
                        }
                        Err(e) => Self::Refused {
                            res: Some(refusal(e)),
                        },
                    };
                    self.set(next);
                }
            }
        }
    }
}
