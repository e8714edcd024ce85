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
use crate::{
    Event, FinishReason, GenerateRequest, ModelError, ResponseFormat, TokenLogprob, Tool,
    ToolCallDelta, ToolChoice, Usage,
};

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
    const EMBEDDINGS_PATH: Option<&'static str> = Some("embeddings");
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

    fn check(_: &GenerateRequest) -> Result<(), ModelError> {
        // Everything passes through.
        Ok(())
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
    #[serde(skip_serializing_if = "<[Tool]>::is_empty")]
    tools: &'a [Tool],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    logprobs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logit_bias: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<&'a serde_json::Value>,
    #[serde(flatten)]
    hints: Hints<'a>,
}

/// Provider hints, written as top-level fields.
struct Hints<'a>(&'a [(String, serde_json::Value)]);

impl Serialize for Hints<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The upstream request body.
pub fn request_body<'a>(model: &'a str, r: &'a GenerateRequest) -> RequestBody<'a> {
    let s = &r.sampling;
    let o = &r.options;
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
        tools: &o.tools,
        tool_choice: o.tool_choice.as_ref(),
        parallel_tool_calls: o.parallel_tool_calls,
        response_format: o.response_format.as_ref(),
        logprobs: o.logprobs,
        top_logprobs: o.top_logprobs,
        frequency_penalty: o.frequency_penalty,
        presence_penalty: o.presence_penalty,
        logit_bias: o.logit_bias.as_ref(),
        reasoning_effort: o.reasoning_effort.as_deref(),
        prediction: o.prediction.as_ref(),
        hints: Hints(&o.hints),
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
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
    /// With `logprobs: true`: the tokens' log probabilities.
    #[serde(default)]
    logprobs: Option<WireLogprobs>,
}

#[derive(Deserialize)]
struct WireLogprobs {
    #[serde(default)]
    content: Option<Vec<TokenLogprob>>,
}

impl WireChoice<'_> {
    /// The log probabilities it carries, if any.
    fn logprobs(&self) -> Option<Event> {
        let content = self.logprobs.as_ref()?.content.as_ref()?;
        (!content.is_empty()).then(|| Event::Logprobs(content.clone()))
    }
}

#[derive(Deserialize)]
struct WireText<'a> {
    #[serde(default, borrow)]
    content: Text<'a>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

/// A tool call, or a piece of one in a stream.
#[derive(Deserialize)]
struct WireToolCall<'a> {
    #[serde(default)]
    index: Count,
    #[serde(default, borrow)]
    id: Text<'a>,
    #[serde(default, borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Deserialize)]
struct WireFunction<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    arguments: Text<'a>,
}

impl WireToolCall<'_> {
    /// As our event; `position` is its place in a whole answer's list
    /// (streams carry `index`).
    fn delta(&self, position: usize) -> ToolCallDelta {
        let f = self.function.as_ref();
        ToolCallDelta {
            index: self
                .index
                .0
                .map_or(position as u32, |i| u32::try_from(i).unwrap_or(u32::MAX)),
            id: self.id.as_str().map(str::to_string),
            name: f.and_then(|f| f.name.as_str()).map(str::to_string),
            arguments: f
                .and_then(|f| f.arguments.as_str())
                .unwrap_or("")
                .to_string(),
        }
    }
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
            out.extend(choice.logprobs());
            if let Some(t) = choice
                .delta
                .as_ref()
                .and_then(|d| d.content.as_str())
                .filter(|t| !t.is_empty())
            {
                self.deltas += 1;
                out.push(Event::Delta(t.to_string()));
            }
            // Tool-call pieces go on exactly as they came, one event each.
            for (i, call) in choice
                .delta
                .as_ref()
                .and_then(|d| d.tool_calls.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
            {
                self.deltas += 1;
                out.push(Event::ToolCall(call.delta(i)));
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
        let message = choice.message.as_ref();
        let text = message.and_then(|m| m.content.as_str()).unwrap_or("");
        let calls = message.and_then(|m| m.tool_calls.as_ref());
        self.finish = Some(finish_reason(
            choice.finish_reason.as_str().unwrap_or("stop"),
        ));
        self.usage = v.usage.as_ref().map(WireUsage::usage);
        self.deltas = u32::from(!text.is_empty());
        let mut out = Vec::with_capacity(2);
        out.extend(choice.logprobs());
        if !text.is_empty() {
            out.push(Event::Delta(text.to_string()));
        }
        for (i, call) in calls.into_iter().flatten().enumerate() {
            out.push(Event::ToolCall(call.delta(i)));
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
            messages: vec![Message::text("user", "hi")],
            sampling: Sampling {
                temperature: 0.5,
                top_p: 0.9,
                seed: Some(7),
                max_tokens: Some(12),
                stop: vec!["\n".into()],
            },
            stream: true,
            ..GenerateRequest::default()
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
    fn tools_and_options_pass_through_unchanged() {
        let body = serde_json::json!({
            "model": "m", "stream": true,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://x/i.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}},
            "frequency_penalty": 0.5,
            "reasoning_effort": "low",
            "service_tier": "auto",
        });
        let api = orinari_api::ChatRequest::parse(
            body.to_string().as_bytes(),
            orinari_api::ValidationLimits {
                max_input_chars: 1000,
            },
        )
        .unwrap();
        let r = GenerateRequest {
            messages: api
                .messages
                .into_iter()
                .map(|m| Message {
                    role: m.role.as_str().into(),
                    content: m.content,
                    parts: m.parts,
                    name: m.name,
                    tool_calls: m.tool_calls,
                    tool_call_id: m.tool_call_id,
                })
                .collect(),
            stream: true,
            options: api.options,
            ..GenerateRequest::default()
        };
        let b = serde_json::to_value(request_body("m", &r)).unwrap();
        for key in [
            "messages",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "reasoning_effort",
            "service_tier",
        ] {
            assert_eq!(b[key], body[key], "{key}");
        }
        assert_eq!(b["frequency_penalty"], 0.5);
    }

    #[test]
    fn streamed_tool_call_pieces_are_relayed_one_by_one() {
        let mut c = Chunks::default();
        let mut out = Vec::new();
        for d in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            c.event(sse(d), &mut out).unwrap();
        }
        c.event(sse("[DONE]"), &mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[0],
            Event::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("f".into()),
                arguments: String::new()
            })
        );
        assert_eq!(
            out[2],
            Event::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: ":1}".into()
            })
        );
        assert!(matches!(
            out[3],
            Event::Done {
                finish_reason: FinishReason::ToolCalls,
                ..
            }
        ));
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
