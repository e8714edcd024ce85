//! The request rate, after [`api_auth`] resolved the caller: the limiter
//! counts the request against its caller's requests per minute (and a
//! token budget already in debt refuses it too): 429 with `Retry-After`
//! when refused. Every response of the routes it wraps carries the
//! `x-ratelimit-*` headers; the token ones come from the chat answer's own
//! reservation when it made one (it sets them first), else from this check.
//!
//! Nothing here reads a body or knows a route: a chat answer's token
//! reservation and its model's queue are `orinari-chat`'s.
//!
//! The memory limiter decides without waiting; only a Redis round trip is
//! a boxed future.
//!
//! [`api_auth`]: super::api_auth

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use orinari_limits::{Caller, Decision, Limiter, Source};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{Layer, Service};

use crate::AppState;
use crate::error::{HttpError, rate_limited};
use crate::http;

/// The layer; see the module docs.
#[derive(Clone)]
pub struct RateLimitLayer {
    state: AppState,
    posts_only: bool,
}

impl RateLimitLayer {
    /// Limit every request.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            posts_only: false,
        }
    }

    /// Limit `POST`s only (the pages: reading a page is not limited).
    pub fn posts_only(state: AppState) -> Self {
        Self {
            state,
            posts_only: true,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            state: self.state.clone(),
            posts_only: self.posts_only,
        }
    }
}

/// The service behind [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: AppState,
    posts_only: bool,
}

type Check = Pin<Box<dyn Future<Output = Decision> + Send>>;

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LimitFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let caller = if self.posts_only && req.method() != Method::POST {
            None
        } else {
            req.extensions().get::<Caller>()
        };
        // `api_auth` always runs first; without a caller there is nothing to limit.
        let Some(caller) = caller else {
            return LimitFuture::Unlimited {
                fut: self.inner.call(req),
            };
        };
        let limiter = self.state.edge().limiter().clone();
        match limiter.check_now(&caller.subject, caller.policy, 0) {
            Some(decision) => match self.admit(&limiter, &caller.policy, &decision) {
                Some(refused) => LimitFuture::Done { res: Some(refused) },
                None => LimitFuture::Admitted {
                    fut: self.inner.call(req),
                    decision,
                },
            },
            None => {
                let (subject, policy) = (caller.subject.clone(), caller.policy);
                let check_limiter = limiter.clone();
                let check: Check =
                    Box::pin(async move { check_limiter.check(&subject, policy, 0).await });
                // The inner service runs later, from the future: a clone
                // takes the place of the one made ready for this call.
                let clone = self.inner.clone();
                LimitFuture::Checking {
                    check,
                    next: Some((std::mem::replace(&mut self.inner, clone), req)),
                    policy,
                    state: self.state.clone(),
                    limiter,
                }
            }
        }
    }
}

impl<S> RateLimit<S> {
    fn admit(
        &self,
        limiter: &Limiter,
        policy: &orinari_limits::Policy,
        d: &Decision,
    ) -> Option<Response> {
        admit(&self.state, limiter, policy, d)
    }
}

/// Count the decision; the 429 to send when it refuses.
fn admit(
    state: &AppState,
    limiter: &Limiter,
    policy: &orinari_limits::Policy,
    d: &Decision,
) -> Option<Response> {
    let metrics = state.metrics();
    if d.source == Source::Local && !limiter.healthy() {
        metrics.limits.local_fallbacks.inc();
    }
    let kind = d.refused?;
    metrics.limits.rejected(kind.as_str());
    let mut res = HttpError(rate_limited(kind, d.retry_after, 0, *policy)).into_response();
    set_headers(&mut res, d);
    Some(res)
}

/// `x-ratelimit-*`: the token ones only where the answer did not set them.
fn set_headers(res: &mut Response, d: &Decision) {
    let h = res.headers_mut();
    http::set_request_headers(h, &d.requests);
    if !http::has_token_headers(h) {
        http::set_token_headers(h, &d.tokens);
    }
}

pin_project! {
    /// The future of [`RateLimit`].
    #[project = Proj]
    pub enum LimitFuture<S: Service<Request<Body>>> {
        /// Not limited here (a page read; no caller).
        Unlimited { #[pin] fut: S::Future },
        /// Admitted at once: the inner service runs.
        Admitted { #[pin] fut: S::Future, decision: Decision },
        /// Waiting for Redis.
        Checking {
            check: Check,
            next: Option<(S, Request<Body>)>,
            policy: orinari_limits::Policy,
            state: AppState,
            limiter: Arc<Limiter>,
        },
        /// Admitted after the round trip: the inner service runs.
        After { #[pin] fut: Oneshot<S, Request<Body>>, decision: Decision },
        /// Refused.
        Done { res: Option<Response> },
    }
}

impl<S> Future for LimitFuture<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Output = Result<Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Proj::Unlimited { fut } => return fut.poll(cx),
                Proj::Admitted { fut, decision } => {
                    let mut res = std::task::ready!(fut.poll(cx))?;
                    set_headers(&mut res, decision);
                    return Poll::Ready(Ok(res));
                }
                Proj::After { fut, decision } => {
                    let mut res = std::task::ready!(fut.poll(cx))?;
                    set_headers(&mut res, decision);
                    return Poll::Ready(Ok(res));
                }
                Proj::Done { res } => return Poll::Ready(Ok(res.take().unwrap_or_default())),
                Proj::Checking {
                    check,
                    next,
                    policy,
                    state,
                    limiter,
                } => {
                    let decision = std::task::ready!(check.as_mut().poll(cx));
                    let Some((inner, req)) = next.take() else {
                        return Poll::Ready(Ok(Response::default()));
                    };
                    let next = match admit(state, limiter, policy, &decision) {
                        Some(refused) => Self::Done { res: Some(refused) },
                        None => Self::After {
                            fut: Oneshot::new(inner, req),
                            decision,
                        },
                    };
                    self.set(next);
                }
            }
        }
    }
}
