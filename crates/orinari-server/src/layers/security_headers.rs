//! Security headers: the strict set for HTML pages and their assets
//! ([`layer`]), and a baseline for every other response, errors included
//! ([`baseline`]), with HSTS on responses sent over TLS.
//!
//! The policy allows scripts, styles, images and fetches from this origin
//! only: no inline script or style, no `eval`, no framing, no plugins, and
//! Trusted Types enforced so no code path can hand a string to an HTML sink
//! (the chat page builds every node with the DOM API). The other headers stop
//! MIME sniffing, referrer leaks, powerful browser features and cross-origin
//! window access.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response, header};
use axum::middleware::Next;
use tower::util::MapResponseLayer;

use crate::listener::Secure;

/// HSTS: one year, subdomains included.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The CSP for responses that are not pages (JSON, SSE, feeds): nothing may
/// load from them and nothing may frame them.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The Content-Security-Policy for pages.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
trusted-types 'none'";

const PERMISSIONS: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), \
magnetometer=(), microphone=(), payment=(), usb=()";

const HEADERS: [(HeaderName, &str); 7] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (HeaderName::from_static("permissions-policy"), PERMISSIONS),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

/// The response mapper behind [`layer`].
pub type SetHeaders = fn(Response<Body>) -> Response<Body>;

/// A layer that sets the security headers on every response it wraps
/// (overriding any a handler set).
pub fn layer() -> MapResponseLayer<SetHeaders> {
    MapResponseLayer::new(set as SetHeaders)
}

fn set(mut res: Response<Body>) -> Response<Body> {
    let headers = res.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// Every response gets these unless an inner layer set its own (pages set
/// the stricter page set); responses over TLS also get HSTS.
pub async fn baseline(req: Request, next: Next) -> Response<Body> {
    let secure = req.extensions().get::<Secure>().is_some();
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    // The page set, with the API's CSP and without the resource policy
    // (other origins may be allowed to read the API by CORS).
    for (name, value) in HEADERS {
        let value = match name {
            header::CONTENT_SECURITY_POLICY => API_CSP,
            n if n == "cross-origin-resource-policy" => continue,
            _ => value,
        };
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if secure {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    res
}
