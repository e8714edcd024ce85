//! The one place errors become HTTP responses (OpenAI envelope).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orinari_api::ApiError;
use orinari_chat::ChatError;
use orinari_limits::queue::Refused;
use orinari_limits::{AuthError, LimitKind, Policy, retry_after_secs};
use orinari_models::ModelError;

/// Seconds a client should wait after an overload.
const OVERLOAD_RETRY_AFTER_S: u64 = 1;

/// The envelope's `code` of an error response, carried as a response
/// extension so error tracking can group by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind(pub &'static str);

/// The envelope's `message` of an error response, carried as a response
/// extension so a layer can show it another way (the no-JS chat form turns
/// an edge refusal into its page) without parsing the body back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage(pub String);

/// An error on its way to the client.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// Seconds a client should wait when the store cannot take writes.
const STORAGE_RETRY_AFTER_S: u64 = 5;

/// Classify a store error once: when the environment is the cause (a full
/// disk, a read-only data directory, a database that does not answer), a
/// 503 `storage_unavailable` that says so, with `Retry-After`; otherwise a
/// 500 with `fallback` (the details go to the log, never to the client).
pub fn from_store(e: &orinari_store::StoreError, fallback: &str) -> ApiError {
    match e.unavailable() {
        Some(why) => {
            tracing::warn!(error = %e, "storage unavailable");
            ApiError::overloaded(
                format!("Storage is unavailable: {why}. Nothing was changed; try again later."),
                STORAGE_RETRY_AFTER_S,
            )
            .with_code("storage_unavailable")
        }
        None => {
            tracing::error!(error = %e, "storage operation failed");
            ApiError::internal(fallback.to_string())
        }
    }
}

/// Classify a model error once.
pub fn from_model(e: ModelError) -> ApiError {
    match e {
        ModelError::ContextOverflow { .. } => {
            ApiError::invalid("messages", format!("{e}.")).with_code("context_length_exceeded")
        }
        ModelError::Overloaded => ApiError::overloaded(format!("{e}."), OVERLOAD_RETRY_AFTER_S),
        ModelError::ShuttingDown => ApiError::overloaded(format!("{e}."), OVERLOAD_RETRY_AFTER_S),
        ModelError::Internal(_) => {
            tracing::error!(error = %e, "model failure");
            ApiError::internal("The model failed to produce an answer.")
        }
        // Upstream details (status, transport) go to the log, not the client.
        ModelError::Upstream(_) => {
            tracing::warn!(error = %e, "upstream failure");
            ApiError::upstream_failed("The upstream model provider failed to produce an answer.")
        }
        ModelError::Timeout(_) => {
            tracing::warn!(error = %e, "upstream timeout");
            ApiError::upstream_timeout("The upstream model provider did not answer in time.")
        }
        ModelError::Rejected(_) => {
            ApiError::invalid("messages", format!("{e}.")).with_code("upstream_rejected")
        }
        ModelError::Unsupported { param, backend } => ApiError::invalid(
            param.clone(),
            format!(
                "`{param}` is not supported by {backend}, which serves this model; omit it or choose another model."
            ),
        )
        .with_code("unsupported_parameter"),
        ModelError::Invalid { param, message } => {
            ApiError::invalid(param.clone(), format!("`{param}` {message}."))
        }
        ModelError::Unavailable => {
            let mut e =
                ApiError::overloaded(format!("{e}; try again shortly."), OVERLOAD_RETRY_AFTER_S);
            e.code = Some("backend_unavailable");
            e
        }
    }
}

/// Classify a chat refusal once.
pub fn from_chat(e: ChatError) -> ApiError {
    match e {
        ChatError::Refused(e) => e,
        ChatError::Tokens {
            estimate,
            policy,
            retry_after,
            ..
        } => rate_limited(LimitKind::Tokens, retry_after, estimate, policy),
        ChatError::Queue { refused, .. } => {
            let mut e = ApiError::overloaded(
                match refused {
                    Refused::Full => {
                        "The server is at capacity and its queue is full; retry shortly."
                    }
                    Refused::Timeout => {
                        "The request waited too long for a free slot; retry shortly."
                    }
                },
                OVERLOAD_RETRY_AFTER_S,
            );
            e.code = Some(match refused {
                Refused::Full => "queue_full",
                Refused::Timeout => "queue_timeout",
            });
            e
        }
        ChatError::Model { error, .. } => from_model(error),
    }
}

/// A rate-limit refusal (429): by the request rate, or by the token budget
/// for a request of about `estimate` tokens.
pub fn rate_limited(
    kind: LimitKind,
    retry_after: std::time::Duration,
    estimate: u32,
    policy: Policy,
) -> ApiError {
    let wait = retry_after_secs(retry_after);
    match kind {
        LimitKind::Requests => ApiError::rate_limited(
            format!(
                "Rate limit reached: {} requests per minute. Retry after {wait} s.",
                policy.requests_per_minute
            ),
            "rate_limit_exceeded",
            wait,
        ),
        LimitKind::Tokens if estimate > policy.tokens_per_minute => ApiError::rate_limited(
            format!(
                "This request needs about {estimate} tokens, more than the limit of {} tokens per minute; lower max_tokens or shorten the messages.",
                policy.tokens_per_minute
            ),
            "tokens_exceeded",
            wait,
        ),
        LimitKind::Tokens => ApiError::rate_limited(
            format!(
                "Token limit reached: {} tokens per minute. Retry after {wait} s.",
                policy.tokens_per_minute
            ),
            "tokens_exceeded",
            wait,
        ),
    }
}

/// Classify an authentication failure once (the response adds
/// `WWW-Authenticate` to a 401).
pub fn from_auth(e: AuthError) -> ApiError {
    match e {
        AuthError::Missing => ApiError::unauthorized(
            "An API key is required: send `Authorization: Bearer <key>` (create one with `orinari keys create`).",
            "missing_api_key",
        ),
        AuthError::Invalid => ApiError::unauthorized(
            "The API key is not valid (unknown or revoked).",
            "invalid_api_key",
        ),
        AuthError::Unavailable => ApiError::overloaded("API keys cannot be checked right now.", 1),
    }
}

/// A chat request that got no answer, on its way to the client: the
/// refusal, with the token headers once a reservation was tried.
#[derive(Debug)]
pub struct ChatFailure(pub ChatError);

impl IntoResponse for ChatFailure {
    fn into_response(self) -> Response {
        let window = self.0.tokens();
        let mut res = HttpError(from_chat(self.0)).into_response();
        if let Some(w) = window {
            crate::http::set_token_headers(res.headers_mut(), &w);
        }
        res
    }
}

/// Classify an admin error of the balancer once.
pub fn from_balance(e: orinari_balance::BalanceError) -> HttpError {
    use orinari_balance::BalanceError as B;
    let mut api = match &e {
        B::UnknownModel(m) => return HttpError(ApiError::model_not_found(m)),
        B::NotAPool(_) => ApiError::invalid("model", format!("{e}.")).with_code("not_a_pool"),
        B::UnknownBackend { .. } => {
            let mut a =
                ApiError::invalid("backend", format!("{e}.")).with_code("backend_not_found");
            a.status = 404;
            a
        }
        B::Invalid { field, .. } => ApiError::invalid(*field, format!("{e}.")),
        B::Internal => ApiError::internal("The balancer failed."),
    };
    if api.param.as_deref() == Some("rollback") {
        api = api.with_code("nothing_to_roll_back");
        api.status = 409;
    }
    HttpError(api)
}

impl From<ModelError> for HttpError {
    fn from(e: ModelError) -> Self {
        Self(from_model(e))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = e.status, code = e.code, "request failed");
        }
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            e.to_json(),
        )
            .into_response();
        // For error tracking (`layers/http_metrics.rs`): the kind, not the message.
        if let Some(code) = e.code {
            res.extensions_mut().insert(ErrorKind(code));
        }
        res.extensions_mut().insert(ErrorMessage(e.message));
        if let Some(secs) = e.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
