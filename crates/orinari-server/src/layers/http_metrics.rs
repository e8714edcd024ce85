//! Records `orinari_http_requests_total{route,method,status}` and
//! `orinari_http_request_duration_seconds{route}` for every request. The
//! route label is the matched route pattern (`/v1/models/{id}`), never the
//! raw path, and methods outside the standard set are counted as `other`, so
//! no client can grow the label set. Duration runs to the response head:
//! a streamed answer's body time is in the model metrics instead.
//!
//! The same layer feeds error tracking (failed requests by kind and route)
//! and the aggregate analytics (requests per route, page views): counts only.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

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

/// The middleware behind the layer built in `stack.rs`.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let m = state.metrics();
    m.http
        .record(&route, method, status, started.elapsed().as_secs_f64());
    let now = orinari_store::now_ms();
    let page_view = method == "GET" && status == 200 && PAGES.contains(&route.as_str());
    m.analytics.record(&route, page_view, now);
    if let Some(s) = state.status() {
        s.record_request(&route, status, started.elapsed().as_secs_f64(), now);
    }
    if status >= 400 {
        let kind = res
            .extensions()
            .get::<ErrorKind>()
            .map_or_else(|| format!("http_{status}"), |k| k.0.to_string());
        m.errors.record(&kind, &route, status, now);
    }
    res
}
