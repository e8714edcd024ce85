//! Tells the layers outside the router which route matched: the matched
//! route pattern (`/v1/models/{id}`) goes into the request's trace span and
//! into the response's extensions, where `http_metrics` reads it.
//!
//! The common layers wrap the router from the outside as one concrete
//! service (no per-layer boxing), so they run before routing; this is the one
//! layer that sits inside the router to hand the route back out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteLayer;

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Route<S> {
        Route { inner }
    }
}

/// The service behind [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct Route<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        if let Some(r) = &route {
            tracing::Span::current().record("route", r.as_str());
        }
        RouteFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project! {
    /// Puts the matched route into the response's extensions.
    pub struct RouteFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F, R, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = ready!(this.inner.poll(cx));
        if let (Ok(res), Some(route)) = (&mut out, this.route.take()) {
            res.extensions_mut().insert(route);
        }
        Poll::Ready(out)
    }
}
