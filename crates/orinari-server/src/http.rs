//! Small HTTP helpers that routes, pages and layers all share, so none of
//! them imports another of those kinds: the client's address, the bearer
//! token, reading a body within its limits, the `x-ratelimit-*` headers and
//! the screening mark.

use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use orinari_api::{ApiError, ErrorType};
use orinari_config::admission::{ConnectionConfig, canonical};
use orinari_limits::{Window, reset_text};

pub use orinari_limits::hash_token;

/// The response header set on answers to flagged requests.
pub const GUARD_HEADER: &str = "x-orinari-guard";

/// The peer address of a request that came over a network connection
/// (in-process tests have none).
pub fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// The client's address: the peer, or — when the peer is a trusted
/// proxy — the nearest untrusted address in `X-Forwarded-For`.
pub fn client_ip(
    connections: &ConnectionConfig,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer = canonical(peer(extensions)?.ip());
    let trusted = |ip: &IpAddr| connections.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect::<Vec<_>>();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer),
    )
}

/// The token in `Authorization: Bearer <token>`, if any (not empty).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A request body, whole, within `limit` bytes (413) and the body timeout
/// of the stack (408).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::body_too_large(limit)
        } else {
            ApiError {
                status: 408,
                message: "The request body did not arrive in time.".into(),
                kind: ErrorType::InvalidRequestError,
                param: None,
                code: Some("request_timeout"),
                retry_after: None,
            }
        }
    })
}

fn put(h: &mut HeaderMap, name: &'static str, v: String) {
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(name, v);
    }
}

/// `x-ratelimit-{limit,remaining,reset}-requests`.
pub fn set_request_headers(h: &mut HeaderMap, w: &Window) {
    put(h, "x-ratelimit-limit-requests", w.limit.to_string());
    put(h, "x-ratelimit-remaining-requests", w.remaining.to_string());
    put(h, "x-ratelimit-reset-requests", reset_text(w.reset));
}

/// `x-ratelimit-{limit,remaining,reset}-tokens`.
pub fn set_token_headers(h: &mut HeaderMap, w: &Window) {
    put(h, "x-ratelimit-limit-tokens", w.limit.to_string());
    put(h, "x-ratelimit-remaining-tokens", w.remaining.to_string());
    put(h, "x-ratelimit-reset-tokens", reset_text(w.reset));
}

/// Whether the token headers are set already (by the chat answer, which
/// knows the reservation; the rate-limit layer then leaves them).
pub fn has_token_headers(h: &HeaderMap) -> bool {
    h.contains_key("x-ratelimit-limit-tokens")
}

/// Mark an answer to a flagged request (`x-orinari-guard: flagged`).
pub fn mark_flagged(h: &mut HeaderMap) {
    h.insert(GUARD_HEADER, HeaderValue::from_static("flagged"));
}

/// The response header set on answers replayed from the response cache.
pub const CACHE_HEADER: &str = "x-orinari-cache";

/// Mark an answer replayed from the response cache (`x-orinari-cache: hit`).
pub fn mark_cache_hit(h: &mut HeaderMap) {
    h.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
}

/// The response header with the guard's score of a flagged request.
pub const GUARD_SCORE_HEADER: &str = "x-orinari-guard-score";

/// Mark an answer to a flagged request and give the guard's score
/// (`x-orinari-guard-score: 0.973`, the attack probability).
pub fn mark_flagged_score(h: &mut HeaderMap, score: f32) {
    mark_flagged(h);
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", score.clamp(0.0, 1.0))) {
        h.insert(GUARD_SCORE_HEADER, v);
    }
}
