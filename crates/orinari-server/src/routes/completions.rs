//! `POST /v1/completions`: legacy text completions onto any model,
//! through the same chat pipeline as `/v1/chat/completions`; the wire
//! conversion is `orinari_api::completions`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use orinari_api::chat::Usage;
use orinari_api::{ApiError, completions, sse};
use orinari_chat::Answer;
use orinari_limits::Caller;
use orinari_models::{Event, ModelError};

use crate::AppState;
use crate::error::{ChatFailure, HttpError, from_model};
use crate::http;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The handler: read and convert the body, ask the chat domain for the
/// answer, send it whole or as a stream of `text_completion` chunks.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Body,
) -> Response {
    let live = state.live();
    let chat = &live.chat;
    let body = match http::read_body(body, state.max_body_bytes()).await {
        Ok(b) => b,
        Err(e) => return HttpError(e).into_response(),
    };
    let req = match completions::parse(&body, chat.limits()) {
        Ok(r) => r,
        Err(e) => return HttpError(e).into_response(),
    };
    let include_usage = req.include_usage;
    let request = orinari_chat::ChatRequest::from_api(req, body.len());
    drop(body);
    let caller = caller.map_or_else(
        || Caller::anonymous("ip:unknown".into(), &chat.edge().config().limits),
        |axum::Extension(c)| c,
    );
    let answer = match chat.answer(&caller, request).await {
        Ok(a) => a,
        Err(e) => return ChatFailure(e).into_response(),
    };
    let (tokens, flagged) = (answer.tokens(), answer.flagged());
    let id = format!("cmpl-{}", crate::ids::uuid().simple());
    let mut res = if answer.stream() {
        stream_response(id, include_usage, answer, state.aborted())
    } else {
        let model = answer.model().to_string();
        match answer.collect().await {
            Ok(a) => axum::Json(completions::completion_json(
                &id,
                now(),
                &model,
                &a.text,
                a.finish_reason.as_str(),
                Usage::new(a.usage.prompt_tokens, a.usage.completion_tokens),
            ))
            .into_response(),
            Err(e) => {
                let mut res = HttpError(from_model(e)).into_response();
                http::set_token_headers(res.headers_mut(), &tokens);
                return res;
            }
        }
    };
    http::set_token_headers(res.headers_mut(), &tokens);
    if flagged {
        http::mark_flagged(res.headers_mut());
    }
    res
}

fn stream_response(
    id: String,
    include_usage: bool,
    answer: Answer,
    aborted: impl Future<Output = ()> + Send + 'static,
) -> Response {
    let body = Body::from_stream(Chunks {
        id,
        created: now(),
        include_usage,
        answer,
        aborted: Box::pin(aborted),
        ended: false,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The SSE body; it owns the [`Answer`] (the queue slot and the token
/// reservation), freed when the body ends or the client leaves.
struct Chunks {
    id: String,
    created: u64,
    include_usage: bool,
    answer: Answer,
    aborted: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl Stream for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let model = this.answer.model().to_string();
        let mut out = Vec::new();
        while out.len() < 16 * 1024 {
            let event = if this.aborted.as_mut().poll(cx).is_ready() {
                Some(Err(ModelError::ShuttingDown))
            } else {
                match this.answer.poll_event(cx) {
                    Poll::Ready(e) => e,
                    Poll::Pending => break,
                }
            };
            match event {
                Some(Ok(Event::Delta(t))) => sse::write_data(
                    &mut out,
                    &completions::chunk_json(&this.id, this.created, &model, &t, None),
                ),
                // No tools are offered here, so none are called.
                Some(Ok(Event::ToolCall(_))) => {}
                Some(Ok(Event::Done {
                    finish_reason,
                    usage,
                })) => {
                    sse::write_data(
                        &mut out,
                        &completions::chunk_json(
                            &this.id,
                            this.created,
                            &model,
                            "",
                            Some(finish_reason.as_str()),
                        ),
                    );
                    if this.include_usage {
                        sse::write_data(
                            &mut out,
                            &completions::usage_chunk_json(
                                &this.id,
                                this.created,
                                &model,
                                Usage::new(usage.prompt_tokens, usage.completion_tokens),
                            ),
                        );
                    }
                    out.extend_from_slice(sse::DONE.as_bytes());
                    this.ended = true;
                    break;
                }
                Some(Err(e)) => {
                    out.extend_from_slice(sse::error(&from_model(e)).as_bytes());
                    out.extend_from_slice(sse::DONE.as_bytes());
                    this.ended = true;
                    break;
                }
                None => {
                    let e = ApiError::internal("The model stopped without finishing its answer.");
                    out.extend_from_slice(sse::error(&e).as_bytes());
                    out.extend_from_slice(sse::DONE.as_bytes());
                    this.ended = true;
                    break;
                }
            }
        }
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Bytes::from(out))))
        }
    }
}
