//! The one place errors become HTTP responses (OpenAI envelope).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orinari_api::ApiError;
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
        ModelError::Unavailable => {
            let mut e =
                ApiError::overloaded(format!("{e}; try again shortly."), OVERLOAD_RETRY_AFTER_S);
            e.code = Some("backend_unavailable");
            e
        }
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
