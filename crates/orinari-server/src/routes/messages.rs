//! `POST /v1/messages`: the Anthropic Messages API onto any configured
//! model, through the same chat pipeline (keys, limits, screening, queue,
//! metrics) as `/v1/chat/completions`; the wire conversion is
//! `orinari_api::messages`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use orinari_api::ApiError;
use orinari_api::messages::{self, StreamWriter};
use orinari_chat::Answer;
use orinari_limits::Caller;
use orinari_models::{Event, ModelError};

use crate::AppState;
use crate::error::{ChatFailure, HttpError, from_model};
use crate::http;

/// The handler: read and convert the body, ask the chat domain for the
/// answer, send it as a `message` or as Messages API stream events.
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
    let req = match messages::parse(&body, chat.limits()) {
        Ok(r) => r,
        Err(e) => return HttpError(e).into_response(),
    };
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
    let id = format!("msg_{}", crate::ids::uuid().simple());
    let mut res = if answer.stream() {
        stream_response(id, answer, state.aborted())
    } else {
        let model = answer.model().to_string();
        let prompt = answer.prompt_tokens();
        match answer.collect().await {
            Ok(a) => axum::Json(messages::message_json(
                &id,
                &model,
                &a.text,
                &a.tool_calls,
                a.finish_reason.as_str(),
                a.usage.prompt_tokens.max(prompt),
                a.usage.completion_tokens,
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
    answer: Answer,
    aborted: impl Future<Output = ()> + Send + 'static,
) -> Response {
    let body = Body::from_stream(Events {
        id,
        answer,
        aborted: Box::pin(aborted),
        writer: None,
        ended: false,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The SSE body; it owns the [`Answer`] (and with it the queue slot and
/// the token reservation), freed when the body ends or the client leaves.
struct Events {
    id: String,
    answer: Answer,
    aborted: Pin<Box<dyn Future<Output = ()> + Send>>,
    writer: Option<StreamWriter>,
    ended: bool,
}

impl Stream for Events {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        if this.writer.is_none() {
            let model = this.answer.model().to_string();
            let prompt = this.answer.prompt_tokens();
            this.writer = Some(StreamWriter::start(&mut out, &this.id, &model, prompt));
        }
        loop {
            let event = if this.aborted.as_mut().poll(cx).is_ready() {
                Some(Err(ModelError::ShuttingDown))
            } else {
                match this.answer.poll_event(cx) {
                    Poll::Ready(e) => e,
                    Poll::Pending => break,
                }
            };
            let Some(w) = this.writer.as_mut() else { break };
            match event {
                Some(Ok(Event::Delta(t))) => w.text(&mut out, &t),
                Some(Ok(Event::ToolCall(d))) => w.tool_call(&mut out, &d),
                Some(Ok(Event::Done {
                    finish_reason,
                    usage,
                })) => {
                    w.finish(&mut out, finish_reason.as_str(), usage.completion_tokens);
                    this.ended = true;
                    break;
                }
                Some(Err(e)) => {
                    StreamWriter::error(&mut out, &from_model(e));
                    this.ended = true;
                    break;
                }
                None => {
                    StreamWriter::error(
                        &mut out,
                        &ApiError::internal("The model stopped without finishing its answer."),
                    );
                    this.ended = true;
                    break;
                }
            }
            if out.len() > 16 * 1024 {
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
