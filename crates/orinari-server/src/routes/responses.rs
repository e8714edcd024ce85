//! `POST /v1/responses`: the OpenAI Responses API onto any configured
//! model, through the same chat pipeline (keys, limits, screening, queue,
//! metrics) as `/v1/chat/completions`; the wire conversion is
//! `orinari_api::responses`. Nothing is stored: each response lives only as
//! long as its request.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use orinari_api::responses::{self, ResponseHead, StreamWriter, renamed};
use orinari_api::{ApiError, ToolCallDelta};
use orinari_chat::Answer;
use orinari_limits::Caller;

use super::surface::{self, Sink, Started};
use crate::AppState;
use crate::error::{HttpError, from_model};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The handler: read and convert the body, ask the chat domain for the
/// answer, send it as a `response` object or as the stream's events.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Body,
) -> Response {
    let started = surface::start(&state, caller, body, renamed, |body, limits| {
        responses::parse(body, limits).map(|r| (r.chat, r.echo))
    })
    .await;
    let Started {
        answer,
        extra: echo,
    } = match started {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (tokens, flagged, hit) = (answer.tokens(), answer.guard_score(), answer.cache_hit());
    let head = ResponseHead::new(
        format!("resp_{}", crate::ids::uuid().simple()),
        now(),
        answer.model().to_string(),
        echo,
    );
    let res = if answer.stream() {
        surface::stream(&state, answer, StreamWriter::new(head))
    } else {
        let prompt = answer.prompt_tokens();
        match answer.collect().await {
            Ok(a) => axum::Json(responses::response_json(
                &head,
                &a.text,
                &a.tool_calls,
                a.finish_reason.as_str(),
                a.usage.prompt_tokens.max(prompt),
                a.usage.completion_tokens,
            ))
            .into_response(),
            Err(e) => HttpError(renamed(from_model(e))).into_response(),
        }
    };
    surface::headed(res, &tokens, flagged, hit)
}

impl Sink for StreamWriter {
    fn start(&mut self, out: &mut Vec<u8>, _: &Answer) {
        StreamWriter::start(self, out);
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        StreamWriter::text(self, out, text);
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &ToolCallDelta) {
        StreamWriter::tool_call(self, out, call);
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str, input: u32, output: u32) {
        StreamWriter::finish(self, out, reason, input, output);
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: &ApiError) {
        StreamWriter::fail(self, out, &renamed(e.clone()));
    }
}
