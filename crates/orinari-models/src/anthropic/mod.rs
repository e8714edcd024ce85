//! `provider = "anthropic"`: the Messages API, translated to and from the
//! OpenAI shape: the request in [`request`] (system messages lifted out,
//! turns merged, tools, tool results and images as blocks, `max_tokens`
//! always set); answers and stream events here (text deltas, `tool_use`
//! blocks and their `input_json_delta` pieces as tool-call events).

mod request;

pub use request::{RequestBody, request_body};

use http::header::{HeaderName, HeaderValue};
use orinari_upstream::secret_header;
use serde::Deserialize;

use crate::sse::SseEvent;
use crate::upstream::{
    self, Flow, HttpBackend, Provider, Translate, UpstreamConfig, UpstreamSecret,
};
use crate::wire::{AnyError, Count, Text};
use crate::{Event, FinishReason, GenerateRequest, ModelError, ToolCallDelta, Usage};

/// The API version header every request carries.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` sent when the client gives none (the Messages API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic Messages API upstream.
pub type AnthropicBackend = HttpBackend<Anthropic>;

impl AnthropicBackend {
    /// A backend with its own connection pools.
    pub fn new(config: UpstreamConfig) -> Result<Self, ModelError> {
        upstream::build(config)
    }
}

/// The Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic;

impl Provider for Anthropic {
    const PATH: &'static str = "messages";
    const OWNED_BY: &'static str = "anthropic";
    type Translator = Messages;

    fn headers(
        api_key: Option<&UpstreamSecret>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ModelError> {
        let mut headers = vec![(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        )];
        if let Some(key) = api_key {
            headers.push((
                HeaderName::from_static("x-api-key"),
                secret_header("", key)?,
            ));
        }
        Ok(headers)
    }

    fn body(model: &str, request: &GenerateRequest) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&request_body(model, request))
    }

    fn check(request: &GenerateRequest) -> Result<(), ModelError> {
        match request::unsupported(request) {
            Some(param) => Err(ModelError::Unsupported {
                param: param.into(),
                backend: "the Anthropic Messages API".into(),
            }),
            None => Ok(()),
        }
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A stream event or a whole answer, read without building a `Value`.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Text<'a>,
    /// `message_start`.
    #[serde(default)]
    message: Option<WireMessage>,
    /// `content_block_delta`, `message_delta`.
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    /// `message_delta`, whole answers.
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: AnyError<'a>,
    /// Whole answers.
    #[serde(default, borrow)]
    content: Option<Vec<WireBlock<'a>>>,
    #[serde(default, borrow)]
    stop_reason: Text<'a>,
    /// `content_block_start`, `content_block_delta`.
    #[serde(default)]
    index: Count,
    /// `content_block_start`.
    #[serde(default, borrow)]
    content_block: Option<WireBlock<'a>>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(default, borrow)]
    text: Text<'a>,
    #[serde(default, borrow)]
    partial_json: Text<'a>,
    #[serde(default, borrow)]
    stop_reason: Text<'a>,
}

#[derive(Deserialize)]
struct WireBlock<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(default, borrow)]
    text: Text<'a>,
    /// `tool_use`.
    #[serde(default, borrow)]
    id: Text<'a>,
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
}

/// State of one streamed answer.
#[derive(Debug, Default)]
pub(crate) struct Messages {
    finish: Option<FinishReason>,
    usage: Usage,
    /// The block index of each `tool_use` block so far: a call's place
    /// here is its OpenAI `index`.
    tool_blocks: Vec<u64>,
}

impl Messages {
    fn done(&self) -> Event {
        Event::Done {
            finish_reason: self.finish.unwrap_or(FinishReason::Stop),
            usage: self.usage,
        }
    }
}

impl Translate for Messages {
    fn event(&mut self, ev: SseEvent, out: &mut Vec<Event>) -> Result<Flow, ModelError> {
        let v: Wire<'_> = serde_json::from_str(&ev.data)
            .map_err(|_| ModelError::Upstream("a stream event is not JSON".into()))?;
        let kind = v.kind.as_str().unwrap_or(&ev.event);
        match kind {
            "message_start" => {
                let usage = v.message.as_ref().and_then(|m| m.usage.as_ref());
                if let Some(n) = usage.and_then(|u| u.input_tokens.tokens()) {
                    self.usage.prompt_tokens = n;
                }
            }
            "content_block_start" => {
                if let Some(b) = v
                    .content_block
                    .as_ref()
                    .filter(|b| b.kind.as_str() == Some("tool_use"))
                {
                    self.tool_blocks.push(v.index.0.unwrap_or(0));
                    out.push(Event::ToolCall(ToolCallDelta {
                        index: (self.tool_blocks.len() - 1) as u32,
                        id: Some(b.id.as_str().unwrap_or_default().to_string()),
                        name: Some(b.name.as_str().unwrap_or_default().to_string()),
                        arguments: String::new(),
                    }));
                }
            }
            "content_block_delta" => match v.delta.as_ref() {
                Some(d) if d.kind.as_str() == Some("text_delta") => {
                    if let Some(t) = d.text.as_str().filter(|t| !t.is_empty()) {
                        out.push(Event::Delta(t.to_string()));
                    }
                }
                Some(d) if d.kind.as_str() == Some("input_json_delta") => {
                    let block = v.index.0.unwrap_or(0);
                    let call = self.tool_blocks.iter().position(|b| *b == block);
                    if let (Some(call), Some(json)) = (call, d.partial_json.as_str())
                        && !json.is_empty()
                    {
                        out.push(Event::ToolCall(ToolCallDelta {
                            index: call as u32,
                            id: None,
                            name: None,
                            arguments: json.to_string(),
                        }));
                    }
                }
                _ => {}
            },
            "message_delta" => {
                if let Some(r) = v.delta.as_ref().and_then(|d| d.stop_reason.as_str()) {
                    self.finish = Some(finish_reason(r));
                }
                if let Some(n) = v.usage.as_ref().and_then(|u| u.output_tokens.tokens()) {
                    self.usage.completion_tokens = n;
                }
            }
            "message_stop" => {
                out.push(self.done());
                return Ok(Flow::Finished);
            }
            "error" => {
                return Err(v
                    .error
                    .to_model_error()
                    .unwrap_or(ModelError::Upstream("error".into())));
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn end(&mut self) -> Result<Event, ModelError> {
        Err(ModelError::Upstream(
            "the stream ended before the answer finished".into(),
        ))
    }

    fn whole(&mut self, body: &[u8]) -> Result<Vec<Event>, ModelError> {
        let v: Wire<'_> = serde_json::from_slice(body)
            .map_err(|_| ModelError::Upstream("the answer is not JSON".into()))?;
        if let Some(e) = v.error.to_model_error() {
            return Err(e);
        }
        let text: String = v
            .content
            .iter()
            .flatten()
            .filter(|b| b.kind.as_str() == Some("text"))
            .filter_map(|b| b.text.as_str())
            .collect();
        let calls: Vec<Event> = v
            .content
            .iter()
            .flatten()
            .filter(|b| b.kind.as_str() == Some("tool_use"))
            .enumerate()
            .map(|(i, b)| {
                Event::ToolCall(ToolCallDelta {
                    index: i as u32,
                    id: Some(b.id.as_str().unwrap_or_default().to_string()),
                    name: Some(b.name.as_str().unwrap_or_default().to_string()),
                    arguments: b
                        .input
                        .as_ref()
                        .map_or_else(|| "{}".to_string(), serde_json::Value::to_string),
                })
            })
            .collect();
        self.finish = v.stop_reason.as_str().map(finish_reason);
        let usage = v.usage.as_ref();
        self.usage = Usage {
            prompt_tokens: usage.and_then(|u| u.input_tokens.tokens()).unwrap_or(0),
            completion_tokens: usage.and_then(|u| u.output_tokens.tokens()).unwrap_or(0),
        };
        let mut out = Vec::with_capacity(2 + calls.len());
        if !text.is_empty() {
            out.push(Event::Delta(text));
        }
        out.extend(calls);
        out.push(self.done());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use crate::sse::Parser;
    use crate::{Message, Sampling};

    fn msg(role: &str, content: &str) -> Message {
        Message::text(role, content)
    }

    #[test]
    fn openai_messages_become_a_messages_request() {
        let r = GenerateRequest {
            messages: vec![
                msg("system", "be brief"),
                msg("assistant", "hello"),
                msg("user", "a"),
                msg("user", "b"),
            ],
            sampling: Sampling {
                temperature: 1.7,
                stop: vec!["END".into()],
                ..Sampling::default()
            },
            stream: true,
            ..GenerateRequest::default()
        };
        let b = serde_json::to_value(request_body("claude", &r)).unwrap();
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["temperature"], 1.0);
        assert_eq!(b["stop_sequences"][0], "END");
        assert_eq!(
            b["messages"],
            serde_json::json!([
                {"role": "user", "content": ""},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "a\n\nb"},
            ])
        );
    }

    #[test]
    fn tools_calls_and_results_map_both_ways() {
        use crate::{Options, Tool, ToolCall, ToolChoice};
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        };
        let r = GenerateRequest {
            messages: vec![
                msg("user", "weather?"),
                Message {
                    tool_calls: vec![call],
                    ..msg("assistant", "")
                },
                Message {
                    tool_call_id: Some("call_1".into()),
                    ..msg("tool", "sunny")
                },
            ],
            options: Options {
                tools: vec![Tool {
                    name: "get_weather".into(),
                    description: Some("Weather by city".into()),
                    parameters: Some(serde_json::json!({"type": "object"})),
                    strict: None,
                }],
                tool_choice: Some(ToolChoice::Required),
                parallel_tool_calls: Some(false),
                response_format: Some(crate::ResponseFormat::JsonObject),
                ..Options::default()
            },
            ..GenerateRequest::default()
        };
        let b = serde_json::to_value(request_body("claude", &r)).unwrap();
        assert_eq!(
            b["tools"],
            serde_json::json!([{"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object"}}])
        );
        assert_eq!(
            b["tool_choice"],
            serde_json::json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert!(b["system"].as_str().unwrap().contains("JSON object"));
        assert_eq!(
            b["messages"],
            serde_json::json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]},
            ])
        );
    }

    #[test]
    fn streamed_tool_use_blocks_become_tool_call_pieces() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut p = Parser::default();
        let mut raw = Vec::new();
        p.push(stream.as_bytes(), &mut raw).unwrap();
        let mut t = Messages::default();
        let mut out = Vec::new();
        for e in raw {
            t.event(e, &mut out).unwrap();
        }
        let mut answer = crate::Collector::default();
        let done = out.into_iter().find_map(|e| answer.push(e)).unwrap();
        assert_eq!(done.text, "Let me check.");
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            done.tool_calls,
            vec![crate::ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into()
            }]
        );
        let whole = br#"{"content":[{"type":"tool_use","id":"toolu_2","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":2}}"#;
        let ev = Messages::default().whole(whole).unwrap();
        assert_eq!(
            ev[0],
            Event::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("toolu_2".into()),
                name: Some("f".into()),
                arguments: r#"{"a":1}"#.into()
            })
        );
    }

    #[test]
    fn a_recorded_stream_translates() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut p = Parser::default();
        let mut raw = Vec::new();
        p.push(stream.as_bytes(), &mut raw).unwrap();
        let mut t = Messages::default();
        let mut out = Vec::new();
        let flows: Vec<Flow> = raw
            .into_iter()
            .map(|e| t.event(e, &mut out).unwrap())
            .collect();
        assert_eq!(flows.last(), Some(&Flow::Finished));
        assert_eq!(
            out,
            vec![
                Event::Delta("Hi".into()),
                Event::Done {
                    finish_reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 9,
                        completion_tokens: 4
                    }
                }
            ]
        );
    }

    #[test]
    fn error_events_and_cut_streams_fail() {
        let mut t = Messages::default();
        let ev = SseEvent {
            event: "error".into(),
            data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .into(),
        };
        assert_eq!(
            t.event(ev, &mut Vec::new()),
            Err(ModelError::Upstream("Overloaded".into()))
        );
        assert!(t.end().is_err());
    }

    #[test]
    fn whole_answers_translate() {
        let body = br#"{"content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
        let ev = Messages::default().whole(body).unwrap();
        assert_eq!(ev[0], Event::Delta("Hello".into()));
        assert_eq!(
            ev[1],
            Event::Done {
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2
                }
            }
        );
    }
}
