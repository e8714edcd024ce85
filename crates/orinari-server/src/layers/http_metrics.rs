//! Records `orinari_http_requests_total{route,method,status}` and
//! `orinari_http_request_duration_seconds{route}` for every request. The
//! route label is the matched route pattern (`/v1/models/{id}`, handed out
//! of the router by the `route` layer), never the raw path, and methods
//! outside the standard set are counted as `other`, so no client can grow the
//! label set. Requests refused before routing (firewall, panics) and paths
//! that match no route are `unmatched`. Duration runs to the response head:
//! a streamed answer's body time is in the model metrics instead.
//!
//! The same layer feeds error tracking (failed requests by kind and route)
//! and the aggregate analytics (requests per route, page views): counts only.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::AppState;
use crate::error::ErrorKind;

/// Routes whose successful GETs count as page views.
const PAGES: [&str; 2] = ["/", "/status"];

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The layer; see the module docs.
#[derive(Clone)]
pub struct HttpMetricsLayer {
    state: AppState,
}

impl HttpMetricsLayer {
    /// Record into `state`'s metrics, analytics and status service.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service behind [`HttpMetricsLayer`].
#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    state: AppState,
}

impl<S, B, R> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = method_label(req.method());
        RecordFuture {
            inner: self.inner.call(req),
            state: self.state.clone(),
            method,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// Records the request when its response head is ready.
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        state: AppState,
        method: &'static str,
        started: Instant,
    }
}

impl<F, R, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Ok(res) = &out {
            record(this.state, this.method, *this.started, res);
        }
        Poll::Ready(out)
    }
}

fn record<R>(state: &AppState, method: &'static str, started: Instant, res: &Response<R>) {
    let route = res
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let status = res.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let m = state.metrics();
    m.http.record(route, method, status, seconds);
    let now = orinari_store::now_ms();
    let page_view = method == "GET" && status == 200 && PAGES.contains(&route);
    m.analytics.record(route, page_view, now);
    if let Some(s) = state.status() {
        s.record_request(route, status, seconds, now);
    }
    if status >= 400 {
        let kind = res
            .extensions()
            .get::<ErrorKind>()
            .map_or_else(|| format!("http_{status}"), |k| k.0.to_string());
        m.errors.record(&kind, route, status, now);
    }
}
