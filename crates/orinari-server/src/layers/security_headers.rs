//! Security headers for HTML pages and their assets.
//!
//! The policy allows scripts, styles, images and fetches from this origin
//! only: no inline script or style, no `eval`, no framing, no plugins, and
//! Trusted Types enforced so no code path can hand a string to an HTML sink
//! (the chat page builds every node with the DOM API). The other headers stop
//! MIME sniffing, referrer leaks, powerful browser features and cross-origin
//! window access.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, header};
use tower::util::MapResponseLayer;

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
