//! `POST /v1/messages`: the Anthropic Messages API onto any configured
//! model, through the same chat pipeline (keys, limits, screening, queue,
//! metrics) as `/v1/chat/completions`; the wire conversion is
//! `orinari_api::messages`.

use std::convert::identity;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use orinari_api::messages::{self, StreamWriter};
use orinari_api::{ApiError, ToolCallDelta};
use orinari_chat::Answer;
use orinari_limits::Caller;

use super::surface::{self, Sink, Started};
use crate::AppState;
use crate::error::{HttpError, from_model};

/// The handler: read and convert the body, ask the chat domain for the
/// answer, send it as a `message` or as Messages API stream events.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Body,
) -> Response {
    let started = surface::start(&state, caller, body, identity, |body, limits| {
        messages::parse(body, limits).map(|r| (r, ()))
    })
    .await;
    let Started { answer, .. } = match started {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (tokens, flagged, hit) = (answer.tokens(), answer.guard_score(), answer.cache_hit());
    let id = format!("msg_{}", crate::ids::uuid().simple());
    let res = if answer.stream() {
        surface::stream(&state, answer, Events { id, writer: None })
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
            Err(e) => HttpError(from_model(e)).into_response(),
        }
    };
    surface::headed(res, &tokens, flagged, hit)
}

/// The Messages API's stream events, from `message_start` on.
struct Events {
    id: String,
    writer: Option<StreamWriter>,
}

impl Sink for Events {
    fn start(&mut self, out: &mut Vec<u8>, answer: &Answer) {
        let (model, prompt) = (answer.model(), answer.prompt_tokens());
        self.writer = Some(StreamWriter::start(out, &self.id, model, prompt));
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if let Some(w) = &mut self.writer {
            w.text(out, text);
        }
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &ToolCallDelta) {
        if let Some(w) = &mut self.writer {
            w.tool_call(out, call);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str, _: u32, output: u32) {
        if let Some(w) = &mut self.writer {
            w.finish(out, reason, output);
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: &ApiError) {
        StreamWriter::error(out, e);
    }
}
