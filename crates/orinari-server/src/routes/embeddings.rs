//! `POST /v1/embeddings`: read the body, validate it
//! (`orinari_api::embeddings`), ask the chat domain for the vectors as the
//! caller (`Chat::embed`: the embedded `orinari-embed` or an upstream that
//! embeds), and answer with OpenAI's `list` of embeddings and the
//! reservation's `x-ratelimit-*-tokens` headers.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orinari_api::embeddings::EmbeddingsRequest;
use orinari_limits::Caller;

use super::surface;
use crate::AppState;
use crate::error::HttpError;
use crate::http;

/// The handler.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Body,
) -> Response {
    // One configuration for the whole request, even across a reload.
    let live = state.live();
    let chat = &live.chat;
    let body = match http::read_body(body, state.max_body_bytes()).await {
        Ok(b) => b,
        Err(e) => return HttpError(e).into_response(),
    };
    let request = match EmbeddingsRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return HttpError(e).into_response(),
    };
    let size = body.len();
    drop(body);
    let caller = surface::caller_of(chat, caller);
    let model = request.model.clone();
    match chat.embed(&caller, request, size).await {
        Ok(v) => {
            let mut res = (
                [(header::CONTENT_TYPE, "application/json")],
                v.embeddings.to_json(&model),
            )
                .into_response();
            http::set_token_headers(res.headers_mut(), &v.tokens);
            res
        }
        Err(e) => surface::refused(e, std::convert::identity),
    }
}
