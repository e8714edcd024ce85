//! Security headers: the strict set for HTML pages and their assets
//! ([`layer`]), and a baseline for every other response, errors included
//! ([`baseline`]), with HSTS on responses of the HTTPS listener.
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

/// The response mapper behind [`baseline`].
pub type Baseline<B> = fn(Response<B>) -> Response<B>;

/// Every response gets these unless an inner layer set its own (pages set
/// the stricter page set); responses of the HTTPS listener (`secure`) also
/// get HSTS.
pub fn baseline<B>(secure: bool) -> MapResponseLayer<Baseline<B>> {
    MapResponseLayer::new(if secure {
        with_hsts::<B> as Baseline<B>
    } else {
        without_hsts::<B> as Baseline<B>
    })
}

fn with_hsts<B>(mut res: Response<B>) -> Response<B> {
    res.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    without_hsts(res)
}

fn without_hsts<B>(mut res: Response<B>) -> Response<B> {
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
    res
}
