//! The tower layer stack, composed in exactly one place.
//!
//! Layers wrap from the inside out: the last `.layer` call is the outermost
//! and sees a request first. Order, outermost first:
//!
//! 1. `SetRequestId` — every request gets an `x-request-id` (kept if the
//!    client sent one) before anything logs.
//! 2. `Trace` — one span per request with method, matched route and request
//!    id; logs outcome and latency, never bodies or credentials.
//!    Right inside it, `http_metrics` counts every request by matched route,
//!    method and status and times it to the response head: inside the span,
//!    outside everything that can refuse a request (firewall, limits, auth,
//!    panics), so refusals are counted too.
//! 3. `PropagateRequestId` — echoes the id on the response, errors included.
//! 4. `SetSensitiveHeaders` — marks `authorization` and cookies so no layer
//!    ever logs them.
//! 5. `baseline` security headers — nosniff, no referrer, no framing, a
//!    `default-src 'none'` CSP unless a page set its own, HSTS on the HTTPS
//!    listener: on every response the stack produces, errors included.
//! 6. `CatchPanic` — a bug in a handler becomes a 500 in the OpenAI envelope,
//!    not a dropped connection (and never a stack trace).
//! 7. `firewall` — `[firewall]` allow/deny lists by route group (`/v1`,
//!    `/admin`, ops, pages): a refused address gets 403 before any work,
//!    after the request id and trace so refusals are logged with their id;
//!    inside `CatchPanic`, whose boxed body type its refusals could not name.
//! 8. `RequestBodyTimeout` — a body must arrive within
//!    `server.body_read_timeout_ms` (slow POST); the head's own timeout is a
//!    listener setting (`listener.rs`).
//! 9. `DefaultBodyLimit` — bodies over `limits.max_body_bytes` are refused
//!    while reading; the chat handler maps that to 413 in the envelope (the
//!    chat form to a page saying so).
//! 10. the router, with one layer around every route, `route`: it records
//!     the matched route pattern in the span and hands it out to
//!     `http_metrics` on the response (the layers above run before routing).
//!
//! Layers 1–9 are composed with `ServiceBuilder` around the router: one
//! concrete service, no boxed future per layer and request (a router layer
//! costs a boxed service clone, a boxed future and a boxed body each time;
//! measured, they were a third of the allocations of a proxied request).
//!
//! The API (`/v1/*`) gets three more layers, inside the common ones and around
//! those routes only. They do edge work only: none reads a body or knows a
//! route; a chat answer's token reservation and queue slot are taken by the
//! chat domain (`orinari-chat`), which the handler calls.
//!
//! - `api_auth` — resolves the caller (API key, or client IP when keys are
//!   optional) into a `Caller`: 401 for a missing or unknown key, before any
//!   limit is spent.
//! - `Cors` — outermost of the three: answers preflights for the origins in
//!   `server.cors_allow_origins` before authentication; with none (the
//!   default) the layer is left out and no CORS headers are sent.
//! - `rate_limit` — inside `api_auth` because limits are per caller: the
//!   request rate (429 + `Retry-After`), `x-ratelimit-*` on every response.
//!
//! Pages and assets (`/`, `/assets/*`) get five more layers, inside the ones
//! above and around those routes only, so `/v1/*` responses stay exactly as
//! API clients expect them:
//!
//! - `form_post`, `api_auth`, `rate_limit` (posts only, innermost) — the
//!   no-JS chat form (`POST /`) runs the model, so it meets the `/v1` edge:
//!   `form_post` (outermost of the three) lifts the form's `api_key` field
//!   into the bearer token before `api_auth` reads it, and turns their
//!   refusals into the page with the reason (rendered by
//!   `pages::chat::refused`, handed in here); innermost, so its 429s still
//!   get compressed and security headers.
//! - `Compression` — Brotli or gzip by `Accept-Encoding`; HTML, CSS and JS
//!   shrink 3–5x, which keeps the first load far under 50 KB. It sits
//!   inside the security headers so 304s and errors get headers too, and
//!   outside the handlers so it sees the final body.
//! - `security_headers` — CSP (no inline script or style, no framing),
//!   nosniff, no referrer, permissions and opener policies on every page and
//!   asset response, errors included, set last so no handler can weaken it.
//!
//! The admin API (`/admin/*`) gets one more layer, inside the common ones and
//! around those routes only:
//!
//! - `admin_auth` — `Authorization: Bearer <admin token>` or 401/403 in the
//!   envelope, before any admin handler runs (after request id and tracing,
//!   so refused attempts are logged with their id, never with the token).

use std::any::Any;
use std::convert::Infallible;
use std::iter::once;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
use axum::response::IntoResponse;
use tower::{BoxError, Service, ServiceBuilder};
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::AppState;
use crate::error::HttpError;
use crate::layers::{
    admin_auth, api_auth, firewall, form_post, http_metrics, https_redirect, rate_limit, route,
    security_headers,
};
use orinari_api::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: random UUIDs without a system call each (`ids`).
#[derive(Debug, Clone, Copy)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = crate::ids::uuid().hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response<axum::body::Body> {
    tracing::error!("handler panicked");
    HttpError(ApiError::internal("Internal error.")).into_response()
}

fn span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The route is recorded once the router has matched one (`route` layer).
    tracing::info_span!("request", method = %req.method(), route = tracing::field::Empty, request_id = id)
}

/// The application: the routes inside the layer stack, as one service.
pub trait App:
    Service<
        Request<Body>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The response body type.
    type Body: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> App for S
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// Wrap the API routes, the admin API and the pages in the layer stack.
/// `secure`: the app serves the HTTPS listener (its responses carry HSTS).
///
/// The route groups' own layers are router layers (axum boxes each); the
/// common layers wrap the router from the outside with `ServiceBuilder`,
/// one concrete type with no per-request boxing, and learn the matched
/// route from the one layer inside the router (`route`).
pub fn wrap(
    v1: Router,
    api: Router,
    admin: Router,
    pages: Router,
    state: &AppState,
    secure: bool,
) -> impl App + use<> {
    let mut v1 = v1
        .layer(rate_limit::RateLimitLayer::new(state.clone()))
        .layer(api_auth::AuthLayer::new(state.clone()));
    if let Some(cors) = cors(&state.edge().config().connections.cors_allow_origins) {
        v1 = v1.layer(cors);
    }
    let pages = pages
        .layer(rate_limit::RateLimitLayer::posts_only(state.clone()))
        .layer(api_auth::AuthLayer::posts_only(state.clone()))
        .layer(form_post::FormPostLayer::new(
            state.clone(),
            crate::pages::chat::refused,
        ))
        .layer(CompressionLayer::new())
        .layer(security_headers::layer());
    let admin = admin.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        admin_auth::require_admin,
    ));
    let router = api
        .merge(v1)
        .merge(admin)
        .merge(pages)
        .layer(route::RouteLayer);
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeId))
        .layer(
            TraceLayer::new_for_http().make_span_with(span).on_response(
                DefaultOnResponse::new()
                    .level(Level::INFO)
                    .latency_unit(LatencyUnit::Micros),
            ),
        )
        .layer(http_metrics::HttpMetricsLayer::new(state.clone()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetSensitiveHeadersLayer::new(
            once(header::AUTHORIZATION).chain(once(header::COOKIE)),
        ))
        .layer(security_headers::baseline(secure))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(firewall::FirewallLayer::new(state.clone()))
        .layer(RequestBodyTimeoutLayer::new(
            state.edge().config().connections.body_read_timeout,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .service(router)
}

/// CORS for `/v1/*`: only the configured origins (none by default, which
/// sends no CORS headers, so browsers keep other sites out). Preflights are
/// answered here, before authentication, as browsers send them without
/// credentials.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    (!allowed.is_empty()).then(|| cors_for(allowed))
}

fn cors_for(allowed: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The plain listener's app when HTTPS is on: health checks and ACME
/// challenges answered, everything else redirected to `https_port`. Outside
/// the whole stack above, so a redirect costs nothing else.
pub fn redirect_to_https(app: impl App, https_port: u16) -> impl App {
    ServiceBuilder::new()
        .layer(axum::middleware::from_fn(move |req, next| {
            https_redirect::redirect(https_port, req, next)
        }))
        .service(app)
}
