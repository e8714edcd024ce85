//! `POST /v1/chat/completions`, streamed (SSE) or whole. A grounded
//! answer also carries `sources` and `retrieval` (whole: top level; stream:
//! the first chunk) and its markers' `annotations` (whole: on the message;
//! stream: one chunk before the finish chunk).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use orinari_api::chat::{ChatCompletion, ChunkBuilder, Usage};
use orinari_api::{ApiError, ChatRequest, sse};
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

/// The handler: read and validate the body, ask the chat domain for the
/// answer, then send it whole or as a stream.
pub async fn completions(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Body,
) -> Response {
    // One configuration for the whole request, even across a reload.
    let live = state.live();
    let chat = &live.chat;
    let body = match http::read_body(body, state.max_body_bytes()).await {
        Ok(b) => b,
        Err(e) => return HttpError(e).into_response(),
    };
    let req = match ChatRequest::parse(&body, chat.limits()) {
        Ok(r) => r,
        Err(e) => return HttpError(e).into_response(),
    };
    let include_usage = req.include_usage;
    let request = orinari_chat::ChatRequest::from_api(req, body.len());
    drop(body);
    let caller = caller.map_or_else(
        // `api_auth` always runs first; in-process uses without it are anonymous.
        || Caller::anonymous("ip:unknown".into(), &chat.edge().config().limits),
        |axum::Extension(c)| c,
    );
    let answer = match chat.answer(&caller, request).await {
        Ok(a) => a,
        Err(e) => return ChatFailure(e).into_response(),
    };
    let (tokens, flagged, hit) = (answer.tokens(), answer.guard_score(), answer.cache_hit());
    let id = format!("chatcmpl-{}", crate::ids::uuid().simple());
    let mut res = if answer.stream() {
        let chunks = ChunkBuilder::new(
            id,
            now(),
            answer.model().to_string(),
            state.fingerprint().to_string(),
            include_usage,
        );
        stream_response(chunks, answer, state.aborted())
    } else {
        match whole(id, &state, answer).await {
            Ok(json) => json.into_response(),
            Err(e) => {
                let mut res = e.into_response();
                http::set_token_headers(res.headers_mut(), &tokens);
                return res;
            }
        }
    };
    http::set_token_headers(res.headers_mut(), &tokens);
    if let Some(score) = flagged {
        http::mark_flagged_score(res.headers_mut(), score);
    }
    if hit {
        http::mark_cache_hit(res.headers_mut());
    }
    res
}

async fn whole(
    id: String,
    state: &AppState,
    answer: Answer,
) -> Result<axum::Json<ChatCompletion>, HttpError> {
    let model = answer.model().to_string();
    let collected = answer.collect_grounded().await?;
    let answer = collected.answer;
    let completion = ChatCompletion::new(
        id,
        now(),
        model,
        state.fingerprint().to_string(),
        answer.text,
        answer.finish_reason.as_str(),
        Usage::new(answer.usage.prompt_tokens, answer.usage.completion_tokens),
    )
    .with_tool_calls(answer.tool_calls)
    .with_logprobs(answer.logprobs);
    Ok(axum::Json(match collected.grounding {
        Some((grounding, annotations)) => completion.with_grounding(grounding, annotations),
        None => completion,
    }))
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
    answer: Answer,
    aborted: impl Future<Output = ()> + Send + 'static,
) -> Response {
    let body = Body::from_stream(SseEvents {
        chunks,
        answer,
        aborted: Box::pin(aborted),
        phase: Phase::Start,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Ready events are gathered into one body frame up to about this size.
const MAX_BATCH: usize = 16 * 1024;

/// The SSE body. Every event that is ready when it is polled leaves in one
/// piece (an upstream read often carries several tokens: one body frame and
/// one write instead of one each). It owns the [`Answer`], and with it the
/// queue slot and the token reservation: dropping it (the body ended, or
/// the client went away) frees them and cancels the work in the backend.
struct SseEvents {
    chunks: ChunkBuilder,
    answer: Answer,
    aborted: Pin<Box<dyn Future<Output = ()> + Send>>,
    phase: Phase,
}

impl Stream for SseEvents {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut out = Vec::new();
        while out.len() < MAX_BATCH {
            match std::mem::replace(&mut this.phase, Phase::End) {
                Phase::Start => {
                    match this.answer.grounding() {
                        Some(g) => sse::write_data(&mut out, &this.chunks.grounded_start(g)),
                        None => {
                            sse::write_data(&mut out, &this.chunks.delta(true, String::new(), None))
                        }
                    }
                    this.phase = Phase::Tokens;
                }
                Phase::Tokens => {
                    let event = if this.aborted.as_mut().poll(cx).is_ready() {
                        Some(Err(ModelError::ShuttingDown))
                    } else {
                        match this.answer.poll_event(cx) {
                            Poll::Ready(event) => event,
                            Poll::Pending => {
                                this.phase = Phase::Tokens;
                                break;
                            }
                        }
                    };
                    if matches!(event, Some(Ok(Event::Done { .. })))
                        && this.answer.grounding().is_some()
                    {
                        let annotations = this.answer.annotations().to_vec();
                        sse::write_data(&mut out, &this.chunks.annotations(annotations));
                    }
                    this.phase = token_event(&this.chunks, event, &mut out);
                }
                Phase::Usage(u) => {
                    sse::write_data(&mut out, &this.chunks.usage(u));
                    this.phase = Phase::Done;
                }
                Phase::Done => {
                    out.extend_from_slice(sse::DONE.as_bytes());
                    this.phase = Phase::End;
                }
                Phase::End => break,
            }
        }
        if !out.is_empty() {
            Poll::Ready(Some(Ok(Bytes::from(out))))
        } else if matches!(this.phase, Phase::End) {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// One backend event as an SSE event appended to `out`, and what comes
/// after it.
fn token_event(
    chunks: &ChunkBuilder,
    event: Option<Result<Event, ModelError>>,
    out: &mut Vec<u8>,
) -> Phase {
    let error = match event {
        // The hot path: only the text is encoded per token.
        Some(Ok(Event::Delta(t))) => {
            chunks.write_content_sse(out, &t);
            return Phase::Tokens;
        }
        Some(Ok(Event::Logprobs(l))) => {
            sse::write_data(out, &chunks.logprobs(l));
            return Phase::Tokens;
        }
        // Relayed exactly, one chunk per piece.
        Some(Ok(Event::ToolCall(call))) => {
            sse::write_data(out, &chunks.tool_call(call));
            return Phase::Tokens;
        }
        Some(Ok(Event::Done {
            finish_reason,
            usage,
        })) => {
            sse::write_data(out, &chunks.finish(finish_reason.as_str()));
            let usage = Usage::new(usage.prompt_tokens, usage.completion_tokens);
            return if chunks.include_usage {
                Phase::Usage(usage)
            } else {
                Phase::Done
            };
        }
        Some(Err(e)) => from_model(e),
        None => stopped_early(),
    };
    out.extend_from_slice(sse::error(&error).as_bytes());
    Phase::Done
}

fn stopped_early() -> ApiError {
    ApiError::internal("The model stopped without finishing its answer.")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use futures::StreamExt;
    use orinari_models::{Events, FinishReason, Generation};

    use super::*;

    fn events(tokens: &[&str]) -> SseEvents {
        let mut list: Vec<orinari_models::EventResult> = tokens
            .iter()
            .map(|t| Ok(Event::Delta((*t).to_string())))
            .collect();
        list.push(Ok(Event::Done {
            finish_reason: FinishReason::Stop,
            usage: orinari_models::Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
        }));
        SseEvents {
            chunks: ChunkBuilder::new("chatcmpl-t".into(), 0, "m".into(), "fp".into(), true),
            answer: Answer::unadmitted(
                Generation {
                    prompt_tokens: 3,
                    events: Events::ready(list),
                },
                "m".into(),
                true,
            ),
            aborted: Box::pin(std::future::pending()),
            phase: Phase::Start,
        }
    }

    #[tokio::test]
    async fn events_that_are_ready_together_leave_in_one_frame() {
        let mut s = events(&["Hel", "lo"]);
        let frame = s.next().await.unwrap().unwrap();
        assert!(
            s.next().await.is_none(),
            "everything was in the first frame"
        );
        let text = std::str::from_utf8(&frame).unwrap();
        // role, two tokens, finish, usage, [DONE]: each a whole SSE event.
        assert_eq!(text.matches("data: ").count(), 6, "{text}");
        assert!(text.contains(r#""content":"Hel""#) && text.contains(r#""content":"lo""#));
        assert!(text.contains(r#""total_tokens":5"#));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn a_long_burst_is_cut_into_bounded_frames() {
        let token = "x".repeat(500);
        let tokens: Vec<&str> = std::iter::repeat_n(token.as_str(), 200).collect();
        let frames: Vec<Bytes> = events(&tokens).map(Result::unwrap).collect().await;
        assert!(frames.len() > 1);
        // A frame stops growing at the first event past the cap.
        assert!(frames.iter().all(|f| f.len() < MAX_BATCH + 2048));
        let all: Vec<u8> = frames.concat();
        let text = std::str::from_utf8(&all).unwrap();
        assert_eq!(text.matches(token.as_str()).count(), 200);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
