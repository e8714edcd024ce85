//! `POST /v1/completions`: legacy text completions onto any model,
//! through the same chat pipeline as `/v1/chat/completions`; the wire
//! conversion is `orinari_api::completions`.

use std::convert::identity;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use orinari_api::chat::Usage;
use orinari_api::{ApiError, ToolCallDelta, completions, sse};
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
/// answer, send it whole or as a stream of `text_completion` chunks.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Body,
) -> Response {
    let started = surface::start(&state, caller, body, identity, |body, limits| {
        completions::parse(body, limits).map(|r| {
            let include_usage = r.include_usage;
            (r, include_usage)
        })
    })
    .await;
    let Started {
        answer,
        extra: include_usage,
    } = match started {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (tokens, flagged, hit) = (answer.tokens(), answer.guard_score(), answer.cache_hit());
    let id = format!("cmpl-{}", crate::ids::uuid().simple());
    let res = if answer.stream() {
        let chunks = Chunks {
            id,
            created: now(),
            model: String::new(),
            include_usage,
        };
        surface::stream(&state, answer, chunks)
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
            Err(e) => HttpError(from_model(e)).into_response(),
        }
    };
    surface::headed(res, &tokens, flagged, hit)
}

/// The stream's `text_completion` chunks.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Sink for Chunks {
    fn start(&mut self, _: &mut Vec<u8>, answer: &Answer) {
        self.model = answer.model().to_string();
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        let chunk = completions::chunk_json(&self.id, self.created, &self.model, text, None);
        sse::write_data(out, &chunk);
    }

    // No tools are offered here, so none are called.
    fn tool_call(&mut self, _: &mut Vec<u8>, _: &ToolCallDelta) {}

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str, input: u32, output: u32) {
        let (id, created, model) = (&self.id, self.created, &self.model);
        let last = completions::chunk_json(id, created, model, "", Some(reason));
        sse::write_data(out, &last);
        if self.include_usage {
            let usage = Usage::new(input, output);
            sse::write_data(
                out,
                &completions::usage_chunk_json(id, created, model, usage),
            );
        }
        out.extend_from_slice(sse::DONE.as_bytes());
    }

    fn fail(&mut self, out: &mut Vec<u8>, e: &ApiError) {
        out.extend_from_slice(sse::error(e).as_bytes());
        out.extend_from_slice(sse::DONE.as_bytes());
    }
}
