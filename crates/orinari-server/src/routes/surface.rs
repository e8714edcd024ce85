//! What the answer surfaces other than Chat Completions share
//! (`/v1/messages`, `/v1/completions`, `/v1/responses`): read the body,
//! convert it with the surface's parser (`orinari-api`), ask the chat
//! domain for the answer as the caller, and send it with the reservation's
//! `x-ratelimit-*-tokens` headers — a whole JSON body, or an SSE stream
//! written by the surface's [`Sink`] from the answer's events.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use orinari_api::{ApiError, ChatRequest, ToolCallDelta, ValidationLimits};
use orinari_chat::Answer;
use orinari_limits::{Caller, Window};
use orinari_models::{Event, ModelError};

use crate::AppState;
use crate::error::{HttpError, from_chat, from_model};
use crate::http;

/// Bytes a stream gathers from ready events into one body frame, about.
const MAX_BATCH: usize = 16 * 1024;

/// An answer started for a surface's request.
pub(super) struct Started<T> {
    /// The running answer.
    pub answer: Answer,
    /// What the surface's parser kept beside the chat request.
    pub extra: T,
}

/// Read and convert the body, then ask the chat domain for the answer.
/// `rename`: how the surface names a field that a refusal names in Chat
/// Completions terms (a backend's or the domain's). A refusal comes back
/// as its response.
pub(super) async fn start<T>(
    state: &AppState,
    caller: Option<Extension<Caller>>,
    body: Body,
    rename: fn(ApiError) -> ApiError,
    parse: impl FnOnce(&[u8], ValidationLimits) -> Result<(ChatRequest, T), ApiError>,
) -> Result<Started<T>, Response> {
    // One configuration for the whole request, even across a reload.
    let live = state.live();
    let chat = &live.chat;
    let body = http::read_body(body, state.max_body_bytes())
        .await
        .map_err(|e| HttpError(e).into_response())?;
    let (req, extra) = parse(&body, chat.limits()).map_err(|e| HttpError(e).into_response())?;
    let request = orinari_chat::ChatRequest::from_api(req, body.len());
    drop(body);
    let caller = caller_of(chat, caller);
    match chat.answer(&caller, request).await {
        Ok(answer) => Ok(Started { answer, extra }),
        Err(e) => Err(refused(e, rename)),
    }
}

/// The caller `api_auth` resolved (it always runs first); in-process uses
/// without it are anonymous.
pub(super) fn caller_of(chat: &orinari_chat::Chat, caller: Option<Extension<Caller>>) -> Caller {
    caller.map_or_else(
        || Caller::anonymous("ip:unknown".into(), &chat.edge().config().limits),
        |Extension(c)| c,
    )
}

/// A refusal of the chat domain as its response (`rename`: the surface's
/// name for a field), with the token headers once a reservation was tried.
pub(super) fn refused(e: orinari_chat::ChatError, rename: fn(ApiError) -> ApiError) -> Response {
    let window = e.tokens();
    let mut res = HttpError(rename(from_chat(e))).into_response();
    if let Some(w) = window {
        http::set_token_headers(res.headers_mut(), &w);
    }
    res
}

/// How a surface writes an answer's events in its own stream format.
pub(super) trait Sink: Send + 'static {
    /// The stream's opening events (before any token).
    fn start(&mut self, out: &mut Vec<u8>, answer: &Answer);
    /// More text.
    fn text(&mut self, out: &mut Vec<u8>, text: &str);
    /// A piece of a tool call.
    fn tool_call(&mut self, out: &mut Vec<u8>, call: &ToolCallDelta);
    /// The end of a finished answer (`input_tokens` exact).
    fn finish(
        &mut self,
        out: &mut Vec<u8>,
        finish_reason: &str,
        input_tokens: u32,
        output_tokens: u32,
    );
    /// A failure after the stream started; the stream ends after it.
    fn fail(&mut self, out: &mut Vec<u8>, e: &ApiError);
}

/// The answer as an SSE response written by `sink`. The body owns the
/// [`Answer`], and with it the queue slot and the token reservation:
/// dropping it (the body ended, or the client went away) frees them and
/// cancels the work in the backend.
pub(super) fn stream(state: &AppState, answer: Answer, sink: impl Sink + Unpin) -> Response {
    event_stream(Body::from_stream(Events {
        sink,
        answer,
        aborted: Box::pin(state.aborted()),
        started: false,
        ended: false,
    }))
}

struct Events<S> {
    sink: S,
    answer: Answer,
    aborted: Pin<Box<dyn Future<Output = ()> + Send>>,
    started: bool,
    ended: bool,
}

impl<S: Sink + Unpin> Stream for Events<S> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        if !this.started {
            this.started = true;
            this.sink.start(&mut out, &this.answer);
        }
        // Every event that is ready leaves in one frame, up to about MAX_BATCH.
        while out.len() < MAX_BATCH {
            let event = if this.aborted.as_mut().poll(cx).is_ready() {
                Some(Err(ModelError::ShuttingDown))
            } else {
                match this.answer.poll_event(cx) {
                    Poll::Ready(e) => e,
                    Poll::Pending => break,
                }
            };
            match event {
                Some(Ok(Event::Delta(t))) => this.sink.text(&mut out, &t),
                Some(Ok(Event::ToolCall(d))) => this.sink.tool_call(&mut out, &d),
                // No surface but Chat Completions asks for them.
                Some(Ok(Event::Logprobs(_))) => {}
                Some(Ok(Event::Done {
                    finish_reason,
                    usage,
                })) => {
                    let input = usage.prompt_tokens.max(this.answer.prompt_tokens());
                    let reason = finish_reason.as_str();
                    this.sink
                        .finish(&mut out, reason, input, usage.completion_tokens);
                    this.ended = true;
                }
                Some(Err(e)) => {
                    this.sink.fail(&mut out, &from_model(e));
                    this.ended = true;
                }
                None => {
                    let e = ApiError::internal("The model stopped without finishing its answer.");
                    this.sink.fail(&mut out, &e);
                    this.ended = true;
                }
            }
            if this.ended {
                break;
            }
        }
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Bytes::from(out))))
        }
    }
}

/// An SSE response around `body`.
fn event_stream(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The answer's headers: the token reservation, the screening mark with
/// the guard's score, and `x-orinari-cache: hit` on a replayed answer.
pub(super) fn headed(
    mut res: Response,
    tokens: &Window,
    flagged: Option<f32>,
    hit: bool,
) -> Response {
    http::set_token_headers(res.headers_mut(), tokens);
    if let Some(score) = flagged {
        http::mark_flagged_score(res.headers_mut(), score);
    }
    if hit {
        http::mark_cache_hit(res.headers_mut());
    }
    res
}
