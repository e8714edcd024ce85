//! `provider = "anthropic"`: the Messages API, translated to and from the
//! OpenAI shape (system messages lifted out, consecutive turns of one role
//! merged, `max_tokens` always set, stream events mapped to deltas).

use http::header::{HeaderName, HeaderValue};
use orinari_upstream::secret_header;
use serde::{Deserialize, Serialize};

use crate::sse::SseEvent;
use crate::upstream::{
    self, Flow, HttpBackend, Provider, Translate, UpstreamConfig, UpstreamSecret,
};
use crate::wire::{AnyError, Count, Text, Turn};
use crate::{Event, FinishReason, GenerateRequest, ModelError, Usage};

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
}

/// The Messages API request body, written straight from the request.
#[derive(Serialize)]
pub struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<Turn<'a>>,
    max_tokens: u32,
    stream: bool,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

/// The Messages API request body for an OpenAI-shaped request.
pub fn request_body<'a>(model: &'a str, r: &'a GenerateRequest) -> RequestBody<'a> {
    let mut system: Vec<&str> = Vec::new();
    // Consecutive turns of one role merge; most requests have no such pair,
    // so a turn borrows its text until a merge needs a new string.
    let mut turns: Vec<(&str, std::borrow::Cow<'a, str>)> = Vec::new();
    for m in &r.messages {
        if m.role == "system" || m.role == "developer" {
            system.push(m.content.as_str());
            continue;
        }
        let role = if m.role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        match turns.last_mut() {
            Some((last, text)) if *last == role => {
                let text = text.to_mut();
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turns.push((role, std::borrow::Cow::Borrowed(&m.content))),
        }
    }
    // The Messages API starts with a user turn.
    if turns.first().is_some_and(|(role, _)| *role == "assistant") {
        turns.insert(0, ("user", std::borrow::Cow::Borrowed("")));
    }
    RequestBody {
        model,
        messages: turns.into_iter().map(owned_turn).collect(),
        max_tokens: r.sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        stream: r.stream,
        // OpenAI allows temperatures up to 2, Anthropic up to 1.
        temperature: r.sampling.temperature.clamp(0.0, 1.0),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        top_p: (r.sampling.top_p > 0.0 && r.sampling.top_p < 1.0).then_some(r.sampling.top_p),
        stop_sequences: &r.sampling.stop,
    }
}

fn owned_turn<'a>((role, content): (&'a str, std::borrow::Cow<'a, str>)) -> Turn<'a> {
    Turn { role, content }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" => FinishReason::Length,
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
    stop_reason: Text<'a>,
}

#[derive(Deserialize)]
struct WireBlock<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(default, borrow)]
    text: Text<'a>,
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
            "content_block_delta" => {
                if let Some(t) = v
                    .delta
                    .as_ref()
                    .filter(|d| d.kind.as_str() == Some("text_delta"))
                    .and_then(|d| d.text.as_str())
                    .filter(|t| !t.is_empty())
                {
                    out.push(Event::Delta(t.to_string()));
                }
            }
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
        self.finish = v.stop_reason.as_str().map(finish_reason);
        let usage = v.usage.as_ref();
        self.usage = Usage {
            prompt_tokens: usage.and_then(|u| u.input_tokens.tokens()).unwrap_or(0),
            completion_tokens: usage.and_then(|u| u.output_tokens.tokens()).unwrap_or(0),
        };
        let mut out = Vec::with_capacity(2);
        if !text.is_empty() {
            out.push(Event::Delta(text));
        }
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
        Message {
            role: role.into(),
            content: content.into(),
        }
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
