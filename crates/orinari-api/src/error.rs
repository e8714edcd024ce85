//! The OpenAI error envelope.

use serde::Serialize;

/// OpenAI's `error.type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is malformed or names something that does not exist.
    InvalidRequestError,
    /// Missing or wrong credentials.
    AuthenticationError,
    /// Credentials are valid but not allowed.
    PermissionError,
    /// Too many requests or tokens.
    RateLimitError,
    /// Something failed on our side or upstream.
    ServerError,
}

/// An error as clients see it: status plus envelope fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong and why; never contains paths, traces or secrets.
    pub message: String,
    /// `error.type`.
    pub kind: ErrorType,
    /// The request field at fault, e.g. `messages[0].content`.
    pub param: Option<String>,
    /// A stable machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: ErrorType,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: u16, kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a bad field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequestError, message)
            .with_param(param)
            .with_code("invalid_value")
    }

    /// 400 for a body that is not the JSON we expect.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequestError, message).with_code("invalid_json")
    }

    /// 401: no API key, or one that is unknown or revoked.
    pub fn unauthorized(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(401, ErrorType::AuthenticationError, message).with_code(code)
    }

    /// 403: the caller may not do this (model not allowed, address refused).
    pub fn forbidden(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(403, ErrorType::PermissionError, message).with_code(code)
    }

    /// 429: a rate limit refused the request; retry after `retry_after` s.
    pub fn rate_limited(message: impl Into<String>, code: &'static str, retry_after: u64) -> Self {
        let mut e = Self::new(429, ErrorType::RateLimitError, message).with_code(code);
        e.retry_after = Some(retry_after);
        e
    }

    /// 404 for an unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            ErrorType::InvalidRequestError,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for an unknown route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            404,
            ErrorType::InvalidRequestError,
            format!("Unknown request URL: {method} {path}."),
        )
        .with_code("unknown_url")
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            ErrorType::InvalidRequestError,
            format!("Method {method} is not allowed for {path}."),
        )
        .with_code("method_not_allowed")
    }

    /// 413 for a body over the limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            ErrorType::InvalidRequestError,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    }

    /// 415 for a body that is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            ErrorType::InvalidRequestError,
            "The request body must be JSON (Content-Type: application/json).",
        )
        .with_code("unsupported_media_type")
    }

    /// 503 with `Retry-After`.
    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(503, ErrorType::ServerError, message).with_code("overloaded");
        e.retry_after = Some(retry_after);
        e
    }

    /// 502: an upstream model provider failed.
    pub fn upstream_failed(message: impl Into<String>) -> Self {
        Self::new(502, ErrorType::ServerError, message).with_code("upstream_error")
    }

    /// 504: an upstream model provider did not answer in time.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(504, ErrorType::ServerError, message).with_code("upstream_timeout")
    }

    /// 500 with a message safe to show.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, ErrorType::ServerError, message).with_code("internal_error")
    }

    /// Set `param`.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Set `code`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON envelope `{"error": {...}}`.
    pub fn to_json(&self) -> String {
        let env = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_string(&env).unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.into()
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_openai_shape() {
        let e = ApiError::invalid("messages[0].role", "bad role");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad role", "type": "invalid_request_error",
                "param": "messages[0].role", "code": "invalid_value"}})
        );
    }
}
