//! `POST /v1/messages`: the Anthropic Messages API inbound, onto any model.
//!
//! A request is validated by field and turned into the OpenAI-shaped
//! [`ChatRequest`] every backend takes (system prompt first, `tool_use`
//! blocks as assistant `tool_calls`, `tool_result` blocks as `tool`
//! messages, images as image parts, tools and `tool_choice` mapped); the
//! answer goes back as a `message` or as the Messages API's stream events
//! ([`StreamWriter`]). Errors keep the OpenAI envelope, as on every `/v1`
//! route.

use serde_json::{Map, Value, json};

use crate::ApiError;
use crate::chat::{
    ChatMessage, ChatRequest, Role, ValidationLimits, expected, json_body, known_object,
};
use crate::options::{Options, check_name};
use crate::tools::{ContentPart, Tool, ToolCall, ToolCallDelta, ToolChoice};

const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    // ORINARI's extension, spelled as on Chat Completions: `{"sources":
    // [...]}` narrows a grounded model's retrieval, `{"cache": false}`
    // bypasses the exact response cache. Parsed once, by the chat rules.
    "orinari",
];

fn missing(param: impl Into<String>) -> ApiError {
    ApiError::invalid(param, "Missing required parameter.").with_code("missing_required_parameter")
}

fn text_of(param: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{param}[{i}]"),
                            "Only text blocks (`{\"type\": \"text\", \"text\": …}`) are allowed here.",
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(expected(
            param,
            "a string or an array of text blocks",
            other,
        )),
    }
}

/// One Messages API message → one or more of ours (a user turn's
/// `tool_result` blocks become `tool` messages).
fn message(i: usize, v: &Value, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
    let p = format!("messages[{i}]");
    let Value::Object(o) = v else {
        return Err(expected(&p, "an object", v));
    };
    for key in o.keys() {
        if key != "role" && key != "content" {
            return Err(ApiError::invalid(
                format!("{p}.{key}"),
                format!("Unrecognized message field `{key}`."),
            )
            .with_code("unknown_parameter"));
        }
    }
    let role = match o.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{p}.role"),
                format!("Invalid role `{other}`; expected `user` or `assistant`."),
            ));
        }
        None => return Err(missing(format!("{p}.role"))),
    };
    let blocks = match o.get("content") {
        Some(Value::String(s)) => {
            out.push(ChatMessage::text(role, s.clone()));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        Some(other) => {
            return Err(expected(
                &format!("{p}.content"),
                "a string or an array of content blocks",
                other,
            ));
        }
        None => return Err(missing(format!("{p}.content"))),
    };
    let mut msg = ChatMessage::text(role, String::new());
    let mut parts = Vec::new();
    let mut results = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{p}.content[{j}]");
        let Value::Object(b) = b else {
            return Err(expected(&bp, "an object", b));
        };
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{bp}.text")))?;
                msg.content.push_str(t);
                parts.push(ContentPart::Text(t.to_string()));
            }
            Some("image") if role == Role::User => {
                let src = b
                    .get("source")
                    .and_then(Value::as_object)
                    .ok_or_else(|| missing(format!("{bp}.source")))?;
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type")
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    Some("url") => src
                        .get("url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| missing(format!("{bp}.source.url")))?
                        .to_string(),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{bp}.source.type"),
                            "An image source must be `base64` or `url`.",
                        ));
                    }
                };
                parts.push(ContentPart::Image { url, detail: None });
            }
            Some("tool_use") if role == Role::Assistant => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{bp}.id")))?;
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{bp}.name")))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                msg.tool_calls.push(ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: input.to_string(),
                });
            }
            Some("tool_result") if role == Role::User => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing(format!("{bp}.tool_use_id")))?;
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(&format!("{bp}.content"), c)?,
                };
                let mut r = ChatMessage::text(Role::Tool, content);
                r.tool_call_id = Some(id.to_string());
                results.push(r);
            }
            Some(t) => {
                return Err(ApiError::invalid(
                    format!("{bp}.type"),
                    format!(
                        "Content blocks of type `{t}` are not supported in a `{}` message.",
                        role.as_str()
                    ),
                )
                .with_code("unsupported_parameter"));
            }
            None => return Err(missing(format!("{bp}.type"))),
        }
    }
    // Tool results answer the previous assistant turn: they come first.
    out.extend(results);
    if parts.iter().any(|p| matches!(p, ContentPart::Image { .. })) {
        msg.parts = parts;
    }
    if !msg.content.is_empty() || !msg.parts.is_empty() || !msg.tool_calls.is_empty() {
        out.push(msg);
    }
    Ok(())
}

fn tools(v: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let a = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(expected("tools", "an array", v)),
    };
    a.iter()
        .enumerate()
        .map(|(i, t)| {
            let p = format!("tools[{i}]");
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| missing(format!("{p}.name")))?;
            check_name(&format!("{p}.name"), name)?;
            if let Some(kind) = t.get("type").and_then(Value::as_str)
                && kind != "custom"
            {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    format!("Server tools (`{kind}`) are not supported; only client tools are."),
                )
                .with_code("unsupported_parameter"));
            }
            Ok(Tool {
                name: name.to_string(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                parameters: Some(
                    t.get("input_schema")
                        .cloned()
                        .ok_or_else(|| missing(format!("{p}.input_schema")))?,
                ),
                strict: None,
            })
        })
        .collect()
}

/// Parse a Messages API request into the chat request every backend takes.
pub fn parse(body: &[u8], limits: ValidationLimits) -> Result<ChatRequest, ApiError> {
    let value = json_body(body)?;
    let o = known_object(&value, KNOWN_FIELDS)?;
    for key in ["top_k", "thinking"] {
        if o.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                key,
                format!("`{key}` is not supported by this server; omit it."),
            )
            .with_code("unsupported_parameter"));
        }
    }
    let mut messages = Vec::new();
    match o.get("system") {
        None | Some(Value::Null) => {}
        Some(v) => messages.push(ChatMessage::text(Role::System, text_of("system", v)?)),
    }
    match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => {
            for (i, m) in a.iter().enumerate() {
                message(i, m, &mut messages)?;
            }
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must contain at least one message.",
            ));
        }
        Some(v) => return Err(expected("messages", "an array", v)),
        None => return Err(missing("messages")),
    }
    // Re-validate through the Chat Completions rules (roles, limits, tool
    // history, sampling ranges) by building that request.
    let mut chat = Map::new();
    chat.insert(
        "model".into(),
        o.get("model").cloned().unwrap_or(Value::Null),
    );
    if o.get("model").is_none() {
        return Err(missing("model"));
    }
    chat.insert("messages".into(), json!([{"role": "user", "content": "-"}]));
    match o.get("max_tokens") {
        Some(v @ Value::Number(_)) => {
            chat.insert("max_tokens".into(), v.clone());
        }
        Some(v) => return Err(expected("max_tokens", "an integer", v)),
        None => return Err(missing("max_tokens")),
    }
    for (from, to) in [
        ("stop_sequences", "stop"),
        ("stream", "stream"),
        ("top_p", "top_p"),
        ("service_tier", "service_tier"),
        ("orinari", "orinari"),
    ] {
        if let Some(v) = o.get(from) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(t) = o.get("temperature") {
        match t.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => {
                chat.insert("temperature".into(), t.clone());
            }
            _ => {
                return Err(ApiError::invalid(
                    "temperature",
                    "`temperature` must be a number from 0 to 1.",
                ));
            }
        }
    }
    if let Some(u) = o
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.insert("user".into(), json!(u));
    }
    let mut request = ChatRequest::from_value(&Value::Object(chat), limits)?;
    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must include a `user` message.",
        ));
    }
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if chars > limits.max_input_chars {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "The messages total {chars} characters, over the limit of {}.",
                limits.max_input_chars
            ),
        )
        .with_code("input_too_long"));
    }
    crate::chat::check_tool_history(&messages)?;
    request.messages = messages;
    let tools = tools(o.get("tools"))?;
    let (tool_choice, parallel) = match o.get("tool_choice") {
        None | Some(Value::Null) => (None, None),
        Some(c) => {
            let parallel = c
                .get("disable_parallel_tool_use")
                .and_then(Value::as_bool)
                .map(|d| !d);
            let choice = match c.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| missing("tool_choice.name"))?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(ApiError::invalid(
                            "tool_choice.name",
                            format!("`tool_choice` names `{name}`, which is not among `tools`."),
                        ));
                    }
                    ToolChoice::Function(name.to_string())
                }
                _ => {
                    return Err(ApiError::invalid(
                        "tool_choice.type",
                        "`tool_choice.type` must be `auto`, `any`, `tool` or `none`.",
                    ));
                }
            };
            (Some(choice), parallel)
        }
    };
    request.options = Options {
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        hints: std::mem::take(&mut request.options.hints),
        ..Options::default()
    };
    Ok(request)
}

/// The Messages API's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A whole answer as a Messages API `message`.
pub fn message_json(
    id: &str,
    model: &str,
    text: &str,
    calls: &[ToolCall],
    finish_reason: &str,
    input_tokens: u32,
    output_tokens: u32,
) -> Value {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason(finish_reason), "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })
}

/// Writes a stream's events in the Messages API's order: `message_start`,
/// then per content block `content_block_start`, its deltas and
/// `content_block_stop`, then `message_delta` and `message_stop`.
#[derive(Debug)]
pub struct StreamWriter {
    /// Index of the open block, if one is open.
    open: Option<(u32, bool)>,
    /// Next block index.
    next: u32,
    /// Block index of each tool call (by its OpenAI index).
    calls: Vec<u32>,
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
}

impl StreamWriter {
    /// `message_start` for a new stream.
    pub fn start(out: &mut Vec<u8>, id: &str, model: &str, input_tokens: u32) -> Self {
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {"id": id, "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 0}}}),
        );
        Self {
            open: None,
            next: 0,
            calls: Vec::new(),
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// More text.
    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if !matches!(self.open, Some((_, true))) {
            self.close(out);
            let index = self.next;
            self.next += 1;
            self.open = Some((index, true));
            event(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}),
            );
        }
        let index = self.open.map_or(0, |(i, _)| i);
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
        );
    }

    /// A piece of a tool call.
    pub fn tool_call(&mut self, out: &mut Vec<u8>, d: &ToolCallDelta) {
        let known = self.calls.get(d.index as usize).copied();
        let index = match known {
            Some(index) => index,
            None => {
                self.close(out);
                let index = self.next;
                self.next += 1;
                self.calls.push(index);
                self.open = Some((index, false));
                event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": d.id.clone().unwrap_or_default(),
                            "name": d.name.clone().unwrap_or_default(), "input": {}}}),
                );
                index
            }
        };
        if !d.arguments.is_empty() {
            event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": d.arguments}}),
            );
        }
    }

    /// The end: `message_delta` with the stop reason and usage, `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>, finish_reason: &str, output_tokens: u32) {
        self.close(out);
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(finish_reason),
                "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// A failure after the stream started: an `error` event (the stream
    /// ends after it).
    pub fn error(out: &mut Vec<u8>, e: &ApiError) {
        let kind = serde_json::to_value(e.kind).unwrap_or(Value::Null);
        event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": e.message}}),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn limits() -> ValidationLimits {
        ValidationLimits {
            max_input_chars: 1000,
        }
    }

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let body = json!({
        "model": "m", "max_tokens": 20, "system": "be brief", "stream": true,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                {"type": "text", "text": "thanks"}]},
        ]});
        let r = parse(body.to_string().as_bytes(), limits()).unwrap();
        assert_eq!(r.max_tokens, Some(20));
        assert!(r.stream);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(r.messages[2].tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(r.options.tool_choice, Some(ToolChoice::Required));
        assert_eq!(r.options.parallel_tool_calls, Some(false));
        for (bad, param) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "top_k": 3, "messages": [{"role": "user", "content": "x"}]}),
                "top_k",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "bogus": 1, "messages": [{"role": "user", "content": "x"}]}),
                "bogus",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
        ] {
            assert_eq!(
                parse(bad.to_string().as_bytes(), limits())
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some(param)
            );
        }
    }

    #[test]
    fn the_orinari_extension_is_read_as_on_chat_completions() {
        let body = |ext: Value| {
            json!({"model": "m", "max_tokens": 5, "orinari": ext,
                "messages": [{"role": "user", "content": "x"}]})
            .to_string()
        };
        let r = parse(
            body(json!({"cache": false, "sources": ["a"]})).as_bytes(),
            limits(),
        )
        .unwrap();
        assert_eq!(r.cache, Some(false));
        assert_eq!(r.sources, Some(vec!["a".to_string()]));
        let plain =
            br#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}"#;
        assert_eq!(parse(plain, limits()).unwrap().cache, None);
        for (ext, param) in [
            (json!({"cache": "no"}), "orinari.cache"),
            (json!({"cahce": false}), "orinari.cahce"),
            (json!(true), "orinari"),
        ] {
            let e = parse(body(ext).as_bytes(), limits()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn stream_events_come_in_the_messages_api_order() {
        let mut out = Vec::new();
        let mut w = StreamWriter::start(&mut out, "msg_1", "m", 5);
        w.text(&mut out, "Hi");
        w.tool_call(
            &mut out,
            &ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("f".into()),
                arguments: String::new(),
            },
        );
        w.tool_call(
            &mut out,
            &ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
                ..ToolCallDelta::default()
            },
        );
        w.finish(&mut out, "tool_calls", 3);
        let text = String::from_utf8(out).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""stop_reason":"tool_use""#));
    }
}
