//! `POST /v1/chat/completions`, streamed (SSE) or whole.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use orinari_api::chat::{ChatCompletion, ChunkBuilder, Usage};
use orinari_api::{ApiError, ChatRequest, sse};
use orinari_models::{Event, GenerateRequest, Generation, Message, ModelError, Sampling};

use crate::AppState;
use crate::error::{HttpError, from_model};
use crate::layers::rate_limit::Spent;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The handler: validate, admit, then answer whole or as a stream.
pub async fn completions(
    State(state): State<AppState>,
    spent: Option<axum::Extension<Spent>>,
    caller: Option<axum::Extension<crate::edge::Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(state.max_body_bytes())
        } else {
            ApiError::invalid_json("The request body could not be read.")
        }
    })?;
    // One configuration for the whole request, even across a reload.
    let live = state.live();
    let req = ChatRequest::parse(&body, live.limits)?;
    let policy = caller.and_then(|axum::Extension(c)| c.prompt_injection);
    let screened = crate::guard::screen(&state, policy, crate::guard::user_messages(&req))?;
    let model = live
        .model(&req.model)
        .ok_or_else(|| ApiError::model_not_found(&req.model))?;
    let generation = model.backend.start(generate_request(&req)).await?;
    // Real usage settles the caller's token reservation when the answer ends.
    let spent = spent.map(|axum::Extension(s)| s).unwrap_or_default();
    let id = format!("chatcmpl-{}", crate::ids::uuid().simple());
    if req.stream {
        let chunks = ChunkBuilder::new(
            id,
            now(),
            req.model,
            state.fingerprint().to_string(),
            req.include_usage,
        );
        Ok(screened.mark(stream_response(chunks, generation, state.aborted(), spent)))
    } else {
        whole(id, &state, req.model, generation, &spent)
            .await
            .map(|r| screened.mark(r.into_response()))
    }
}

fn generate_request(req: &ChatRequest) -> GenerateRequest {
    GenerateRequest {
        messages: req
            .messages
            .iter()
            .map(|m| Message {
                role: m.role.as_str().to_string(),
                content: m.content.clone(),
            })
            .collect(),
        sampling: Sampling {
            // top_p = 0 keeps only the most likely token: greedy.
            temperature: if req.top_p <= 0.0 {
                0.0
            } else {
                req.temperature
            },
            top_p: req.top_p,
            seed: req.seed,
            max_tokens: req.max_tokens,
            stop: req.stop.clone(),
        },
        stream: req.stream,
    }
}

async fn whole(
    id: String,
    state: &AppState,
    model: String,
    generation: Generation,
    spent: &Spent,
) -> Result<axum::Json<ChatCompletion>, HttpError> {
    let answer = generation.collect().await?;
    spent.record(answer.usage.prompt_tokens, answer.usage.completion_tokens);
    Ok(axum::Json(ChatCompletion::new(
        id,
        now(),
        model,
        state.fingerprint().to_string(),
        answer.text,
        answer.finish_reason.as_str(),
        Usage::new(answer.usage.prompt_tokens, answer.usage.completion_tokens),
    )))
}

/// Where a stream is in its life.
enum Phase {
    Start,
    Tokens,
    Usage(Usage),
    Done,
    End,
}

fn stream_response(
    chunks: ChunkBuilder,
    generation: Generation,
    aborted: impl Future<Output = ()> + Send + 'static,
    spent: Spent,
) -> Response {
    let body = Body::from_stream(sse_events(chunks, generation, Box::pin(aborted), spent));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The SSE body. Dropping it (client gone) drops the generation, which
/// cancels the work in the backend.
fn sse_events(
    chunks: ChunkBuilder,
    generation: Generation,
    aborted: Pin<Box<dyn Future<Output = ()> + Send>>,
    spent: Spent,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let start = (Phase::Start, chunks, generation, aborted, spent);
    stream::unfold(
        start,
        |(phase, chunks, mut g, mut aborted, spent)| async move {
            let (out, next) = match phase {
                Phase::Start => (
                    Bytes::from(sse::data(&chunks.delta(true, String::new(), None))),
                    Phase::Tokens,
                ),
                Phase::Tokens => {
                    let event = tokio::select! {
                        ev = g.events.recv() => ev,
                        () = &mut aborted => Some(Err(ModelError::ShuttingDown)),
                    };
                    if let Some(Ok(Event::Done { usage, .. })) = &event {
                        spent.record(usage.prompt_tokens, usage.completion_tokens);
                    }
                    token_event(&chunks, event)
                }
                Phase::Usage(u) => (Bytes::from(sse::data(&chunks.usage(u))), Phase::Done),
                Phase::Done => (Bytes::from_static(sse::DONE.as_bytes()), Phase::End),
                Phase::End => return None,
            };
            Some((Ok(out), (next, chunks, g, aborted, spent)))
        },
    )
}

/// One backend event as an SSE event, and what comes after it.
fn token_event(chunks: &ChunkBuilder, event: Option<Result<Event, ModelError>>) -> (Bytes, Phase) {
    let (text, next) = match event {
        // The hot path: only the text is encoded per token.
        Some(Ok(Event::Delta(t))) => return (Bytes::from(chunks.content_sse(&t)), Phase::Tokens),
        Some(Ok(Event::Done {
            finish_reason,
            usage,
        })) => {
            let usage = Usage::new(usage.prompt_tokens, usage.completion_tokens);
            let next = if chunks.include_usage {
                Phase::Usage(usage)
            } else {
                Phase::Done
            };
            (sse::data(&chunks.finish(finish_reason.as_str())), next)
        }
        Some(Err(e)) => (sse::error(&from_model(e)), Phase::Done),
        None => (sse::error(&stopped_early()), Phase::Done),
    };
    (Bytes::from(text), next)
}

fn stopped_early() -> ApiError {
    ApiError::internal("The model stopped without finishing its answer.")
}
