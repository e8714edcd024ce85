//! The transport's one error type, classified once: whether the upstream
//! refused the request itself (the client's to fix), failed, timed out, or
//! the backend is misconfigured. Messages name what failed, never a URL
//! (which could carry credentials) or a header.

use http::Response;
use http_body_util::{BodyExt, Limited};

use crate::Body;

/// Upstream error text shown to clients is cut to this many characters.
pub const MAX_REASON_CHARS: usize = 300;
/// At most this much of an error answer's body is read for its reason.
pub(crate) const REASON_BODY_BYTES: usize = 64 << 10;

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The upstream could not be reached, broke off, or answered with a
    /// status that is this backend's fault (401/403 of a misconfigured key,
    /// 404, 408, 429, 5xx).
    #[error("{0}")]
    Failed(String),
    /// Connecting took longer than the connect timeout.
    #[error("{0}")]
    Timeout(String),
    /// The upstream refused the request itself (400, 413, 422): another
    /// backend would refuse it too.
    #[error("{0}")]
    Rejected(String),
    /// The backend's settings cannot work (a bad URL, an unusable key, no
    /// TLS roots).
    #[error("{0}")]
    Config(String),
}

/// A transport error, classified. The message names what failed, never a URL
/// (which could carry credentials) or a header.
pub(crate) fn transport(e: &hyper_util::client::legacy::Error) -> Error {
    if e.is_connect() {
        crate::connect::connect_error(e)
    } else {
        Error::Failed("the request failed".into())
    }
}

/// A non-2xx answer, classified: a refusal of the request itself (400, 413,
/// 422) is the client's to fix and is not retried; anything else (401/403 of
/// a misconfigured backend, 404, 408, 429, 5xx) is this backend's fault.
pub(crate) async fn status_error(response: Response<Body>) -> Error {
    let status = response.status().as_u16();
    match status {
        400 | 413 | 422 => {
            let body = Limited::new(response.into_body(), REASON_BODY_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Error::Rejected(reason(&body).unwrap_or_else(|| format!("HTTP {status}")))
        }
        _ => Error::Failed(format!("HTTP {status}")),
    }
}

/// `error.message` of an OpenAI or Anthropic error body, cut short.
pub fn reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?.get("message")?.as_str()?;
    Some(m.chars().take(MAX_REASON_CHARS).collect())
}
