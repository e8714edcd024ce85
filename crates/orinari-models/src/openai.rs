//! `provider = "openai"`: any OpenAI-compatible Chat Completions server
//! (OpenAI, vLLM, Ollama, llama.cpp server, …).
//!
//! Streams are requested with `stream_options.include_usage` so token counts
//! are exact when the upstream supports it; otherwise completion tokens are
//! counted as content chunks.

use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use orinari_upstream::secret_header;
use serde::{Deserialize, Serialize};

use crate::sse::SseEvent;
use crate::upstream::{
    self, Flow, HttpBackend, Provider, Translate, UpstreamConfig, UpstreamSecret,
};
use crate::wire::{AnyError, Count, First, Messages, Text};
use crate::{Event, FinishReason, GenerateRequest, ModelError, Usage};

/// An OpenAI-compatible upstream.
pub type OpenAiBackend = HttpBackend<OpenAi>;

impl OpenAiBackend {
    /// A backend with its own connection pools.
    pub fn new(config: UpstreamConfig) -> Result<Self, ModelError> {
        upstream::build(config)
    }
}

/// The OpenAI Chat Completions API.
#[derive(Debug)]
pub struct OpenAi;

impl Provider for OpenAi {
    const PATH: &'static str = "chat/completions";
    const OWNED_BY: &'static str = "openai-compatible";
    type Translator = Chunks;

    fn headers(
        api_key: Option<&UpstreamSecret>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ModelError> {
        Ok(match api_key {
            Some(key) => vec![(AUTHORIZATION, secret_header("Bearer ", key)?)],
            None => Vec::new(),
        })
    }

    fn body(model: &str, request: &GenerateRequest) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&request_body(model, request))
    }
}

/// The upstream request body, written straight from the request.
#[derive(Serialize)]
pub struct RequestBody<'a> {
    model: &'a str,
    messages: Messages<'a>,
    stream: bool,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The upstream request body.
pub fn request_body<'a>(model: &'a str, r: &'a GenerateRequest) -> RequestBody<'a> {
    let s = &r.sampling;
    RequestBody {
        model,
        messages: Messages(&r.messages),
        stream: r.stream,
        temperature: s.temperature,
        stream_options: r.stream.then_some(StreamOptions {
            include_usage: true,
        }),
        top_p: (s.top_p > 0.0 && s.top_p < 1.0).then_some(s.top_p),
        max_tokens: s.max_tokens,
        seed: s.seed,
        stop: &s.stop,
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

/// A stream chunk or a whole answer, read without building a `Value`.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow)]
    choices: First<WireChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: AnyError<'a>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    /// Streams.
    #[serde(default, borrow)]
    delta: Option<WireText<'a>>,
    /// Whole answers.
    #[serde(default, borrow)]
    message: Option<WireText<'a>>,
    #[serde(default, borrow)]
    finish_reason: Text<'a>,
}

#[derive(Deserialize)]
struct WireText<'a> {
    #[serde(default, borrow)]
    content: Text<'a>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.tokens().unwrap_or(0),
            completion_tokens: self.completion_tokens.tokens().unwrap_or(0),
        }
    }
}

/// State of one streamed answer.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    deltas: u32,
}

impl Chunks {
    fn done(&self) -> Event {
        Event::Done {
            finish_reason: self.finish.unwrap_or(FinishReason::Stop),
            usage: self.usage.unwrap_or(Usage {
                prompt_tokens: 0,
                completion_tokens: self.deltas,
            }),
        }
    }
}

impl Translate for Chunks {
    fn event(&mut self, ev: SseEvent, out: &mut Vec<Event>) -> Result<Flow, ModelError> {
        if ev.data == "[DONE]" {
            out.push(self.done());
            return Ok(Flow::Finished);
        }
        let v: Wire<'_> = serde_json::from_str(&ev.data)
            .map_err(|_| ModelError::Upstream("a stream chunk is not JSON".into()))?;
        if let Some(e) = v.error.to_model_error() {
            return Err(e);
        }
        if let Some(u) = &v.usage {
            self.usage = Some(u.usage());
        }
        if let Some(choice) = &v.choices.0 {
            if let Some(t) = choice
                .delta
                .as_ref()
                .and_then(|d| d.content.as_str())
                .filter(|t| !t.is_empty())
            {
                self.deltas += 1;
                out.push(Event::Delta(t.to_string()));
            }
            if let Some(r) = choice.finish_reason.as_str() {
                self.finish = Some(finish_reason(r));
            }
        }
        Ok(Flow::Continue)
    }

    fn end(&mut self) -> Result<Event, ModelError> {
        // Some servers omit `[DONE]`; a finish reason is enough.
        if self.finish.is_some() {
            Ok(self.done())
        } else {
            Err(ModelError::Upstream(
                "the stream ended before the answer finished".into(),
            ))
        }
    }

    fn whole(&mut self, body: &[u8]) -> Result<Vec<Event>, ModelError> {
        let v: Wire<'_> = serde_json::from_slice(body)
            .map_err(|_| ModelError::Upstream("the answer is not JSON".into()))?;
        if let Some(e) = v.error.to_model_error() {
            return Err(e);
        }
        let choice = v
            .choices
            .0
            .as_ref()
            .ok_or_else(|| ModelError::Upstream("the answer has no choices".into()))?;
        let text = choice
            .message
            .as_ref()
            .and_then(|m| m.content.as_str())
            .unwrap_or("");
        self.finish = Some(finish_reason(
            choice.finish_reason.as_str().unwrap_or("stop"),
        ));
        self.usage = v.usage.as_ref().map(WireUsage::usage);
        self.deltas = u32::from(!text.is_empty());
        let mut out = Vec::with_capacity(2);
        if !text.is_empty() {
            out.push(Event::Delta(text.to_string()));
        }
        out.push(self.done());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use crate::{Message, Sampling};

    fn sse(data: &str) -> SseEvent {
        SseEvent {
            event: String::new(),
            data: data.into(),
        }
    }

    #[test]
    fn request_carries_every_sampling_option() {
        let r = GenerateRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            sampling: Sampling {
                temperature: 0.5,
                top_p: 0.9,
                seed: Some(7),
                max_tokens: Some(12),
                stop: vec!["\n".into()],
            },
            stream: true,
        };
        let b = serde_json::to_value(request_body("m", &r)).unwrap();
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_tokens"], 12);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["stop"][0], "\n");
        assert!((b["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    }

    #[test]
    fn stream_chunks_become_events() {
        let mut c = Chunks::default();
        let mut out = Vec::new();
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let text = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        let fin = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        for d in [role, text, fin, usage] {
            assert_eq!(c.event(sse(d), &mut out).unwrap(), Flow::Continue);
        }
        assert_eq!(c.event(sse("[DONE]"), &mut out).unwrap(), Flow::Finished);
        assert_eq!(
            out,
            vec![
                Event::Delta("Hi".into()),
                Event::Done {
                    finish_reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 5,
                        completion_tokens: 1
                    }
                }
            ]
        );
    }

    #[test]
    fn a_cut_stream_or_error_chunk_is_an_error() {
        let mut c = Chunks::default();
        let mut out = Vec::new();
        c.event(sse(r#"{"choices":[{"delta":{"content":"a"}}]}"#), &mut out)
            .unwrap();
        assert!(matches!(c.end(), Err(ModelError::Upstream(_))));
        let err = c.event(sse(r#"{"error":{"message":"boom"}}"#), &mut out);
        assert_eq!(err, Err(ModelError::Upstream("boom".into())));
    }

    #[test]
    fn whole_answers_translate() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let ev = Chunks::default().whole(body).unwrap();
        assert_eq!(ev[0], Event::Delta("Hello".into()));
        assert!(matches!(
            ev[1],
            Event::Done {
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2
                }
            }
        ));
    }
}
