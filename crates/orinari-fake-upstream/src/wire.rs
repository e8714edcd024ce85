//! The bytes the fake upstream sends, in the OpenAI or the Anthropic dialect.

use axum::body::Bytes;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// Token `i` of every answer: "tok0 ", "tok1 ", …
pub fn token(i: usize) -> String {
    format!("tok{i} ")
}

/// The whole answer text for `n` tokens.
pub fn text(n: usize) -> String {
    (0..n).map(token).collect()
}

/// A non-streamed answer.
pub fn whole(d: Dialect, n: usize) -> String {
    let text = serde_json::Value::String(text(n));
    match d {
        Dialect::OpenAi => format!(
            r#"{{"id":"chatcmpl-fake","object":"chat.completion","created":0,"model":"fake","choices":[{{"index":0,"message":{{"role":"assistant","content":{text}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":{n},"total_tokens":{}}}}}"#,
            n + 5
        ),
        Dialect::Anthropic => format!(
            r#"{{"id":"msg_fake","type":"message","role":"assistant","model":"fake","content":[{{"type":"text","text":{text}}}],"stop_reason":"end_turn","usage":{{"input_tokens":5,"output_tokens":{n}}}}}"#
        ),
    }
}

/// What a stream starts with.
pub fn stream_head(d: Dialect) -> Bytes {
    match d {
        Dialect::OpenAi => Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ),
        Dialect::Anthropic => Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"fake\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
    }
}

/// One token as a stream event.
pub fn stream_token(d: Dialect, i: usize) -> Bytes {
    let t = token(i);
    Bytes::from(match d {
        Dialect::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n"
        ),
        Dialect::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n"
        ),
    })
}

/// What a stream ends with: finish reason, usage, terminator.
pub fn stream_tail(d: Dialect, n: usize) -> Bytes {
    Bytes::from(match d {
        Dialect::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            n + 5
        ),
        Dialect::Anthropic => format!(
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{n}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        ),
    })
}

/// A whole stream in one buffer.
pub fn stream_all(d: Dialect, n: usize) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&stream_head(d));
    for i in 0..n {
        out.extend_from_slice(&stream_token(d, i));
    }
    out.extend_from_slice(&stream_tail(d, n));
    Bytes::from(out)
}

/// What the fake answers a request with, decided from the request alone
/// (deterministic: same request, same answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `n` tokens of text ("tok0 tok1 …").
    Text(usize),
    /// This JSON text (`response_format` `json_object` or `json_schema`,
    /// or an Anthropic request whose system prompt asks for JSON).
    Json(String),
    /// `n` tokens of text with their log probabilities (an OpenAI request
    /// with `logprobs: true`): token `i` has log probability `-0.1 × (i +
    /// 1)`, with `top_logprobs` alternatives.
    Scored(usize, usize),
    /// Calls to the request's tools.
    Calls(Vec<Call>),
}

/// One tool call the fake makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `call_fake_N` (OpenAI) or `toolu_fake_N` (Anthropic).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments built from the tool's schema ([`sample`]), as JSON text.
    pub arguments: String,
}

/// The reply for a request body:
/// - tools offered, a choice other than `none`, and the conversation not
///   ending with a tool's result: a call to the named tool, else the first
///   (to every tool when several are required and parallel calls are not
///   turned off), with arguments sampled from its schema;
/// - `response_format` `json_object` / `json_schema`: JSON (a sample of the
///   schema, or `{"answer": …}`);
/// - otherwise `tokens` tokens of text.
pub fn plan(d: Dialect, request: &serde_json::Value, tokens: usize) -> Reply {
    use serde_json::Value;
    let tools: Vec<(String, Value)> = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| match d {
            Dialect::OpenAi => {
                let f = t.get("function")?;
                Some((
                    f.get("name")?.as_str()?.to_string(),
                    f.get("parameters").cloned().unwrap_or(Value::Null),
                ))
            }
            Dialect::Anthropic => Some((
                t.get("name")?.as_str()?.to_string(),
                t.get("input_schema").cloned().unwrap_or(Value::Null),
            )),
        })
        .collect();
    let choice = request.get("tool_choice");
    let (none, named, required) = match (d, choice) {
        (_, None | Some(Value::Null)) => (false, None, false),
        (Dialect::OpenAi, Some(Value::String(s))) => (s == "none", None, s == "required"),
        (Dialect::OpenAi, Some(c)) => (
            false,
            c.pointer("/function/name").and_then(Value::as_str),
            true,
        ),
        (Dialect::Anthropic, Some(c)) => match c.get("type").and_then(Value::as_str) {
            Some("none") => (true, None, false),
            Some("any") => (false, None, true),
            Some("tool") => (false, c.get("name").and_then(Value::as_str), true),
            _ => (false, None, false),
        },
    };
    let parallel = match d {
        Dialect::OpenAi => request.get("parallel_tool_calls") != Some(&Value::Bool(false)),
        Dialect::Anthropic => {
            choice.and_then(|c| c.get("disable_parallel_tool_use")) != Some(&Value::Bool(true))
        }
    };
    if !tools.is_empty() && !none && !ends_with_tool_result(d, request) {
        let picked: Vec<&(String, Value)> = match named {
            Some(n) => tools.iter().filter(|(name, _)| name == n).collect(),
            None if required && parallel => tools.iter().collect(),
            None => tools.iter().take(1).collect(),
        };
        if !picked.is_empty() {
            let prefix = match d {
                Dialect::OpenAi => "call_fake_",
                Dialect::Anthropic => "toolu_fake_",
            };
            return Reply::Calls(
                picked
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, schema))| Call {
                        id: format!("{prefix}{i}"),
                        name: name.clone(),
                        arguments: sample(schema, 0).to_string(),
                    })
                    .collect(),
            );
        }
    }
    let format = request.get("response_format");
    let kind = format.and_then(|f| f.get("type")).and_then(Value::as_str);
    let wants_json = match d {
        Dialect::OpenAi => matches!(kind, Some("json_object" | "json_schema")),
        // The adapter asks for JSON in the system prompt.
        Dialect::Anthropic => request
            .get("system")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("JSON")),
    };
    if wants_json {
        let schema = format
            .and_then(|f| f.pointer("/json_schema/schema"))
            .filter(|_| kind == Some("json_schema"));
        let json = match schema {
            Some(s) => sample(s, 0),
            None => serde_json::json!({ "answer": text(tokens).trim_end() }),
        };
        return Reply::Json(json.to_string());
    }
    Reply::Text(tokens)
}

fn ends_with_tool_result(d: Dialect, request: &serde_json::Value) -> bool {
    use serde_json::Value;
    let last = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last());
    match d {
        Dialect::OpenAi => last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool"),
        Dialect::Anthropic => last
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
            }),
    }
}

/// A value that follows a JSON Schema (the subset tools and structured
/// outputs use: objects with properties, arrays, enums, scalars; `anyOf`
/// and `$ref` take the first choice / an empty object).
pub fn sample(schema: &serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    if depth > 8 {
        return Value::Null;
    }
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return sample(first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match kind {
        "string" => json!("fake"),
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => {
            let item = schema
                .get("items")
                .map_or(json!("fake"), |i| sample(i, depth + 1));
            json!([item])
        }
        _ => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), sample(v, depth + 1));
                }
            }
            Value::Object(out)
        }
    }
}

/// Pieces of `s` about `n` characters long (a streamed JSON text).
fn pieces(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in s.char_indices() {
        if count == n {
            out.push(&s[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Token `i`'s log probability entry, with `top` alternatives (itself
/// first, then "alt1 ", "alt2 ", … less likely).
fn scored(i: usize, top: usize) -> serde_json::Value {
    let t = token(i);
    let lp = -0.1 * (i as f64 + 1.0);
    let alts: Vec<serde_json::Value> = (0..top)
        .map(|k| {
            let (tok, p) = if k == 0 {
                (t.clone(), lp)
            } else {
                (format!("alt{k} "), lp - k as f64)
            };
            serde_json::json!({"token": tok, "logprob": p, "bytes": tok.as_bytes()})
        })
        .collect();
    serde_json::json!({"token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": alts})
}

/// Characters per streamed piece of JSON or tool arguments.
const PIECE: usize = 4;

/// A whole (non-streamed) answer for a reply.
pub fn whole_reply(d: Dialect, reply: &Reply) -> String {
    use serde_json::json;
    let (text, calls) = match reply {
        Reply::Text(n) => return whole(d, *n),
        Reply::Json(j) => (Some(j.clone()), &[][..]),
        Reply::Scored(n, top) => {
            return json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text(*n)},
                    "logprobs": {"content": (0..*n).map(|i| scored(i, *top)).collect::<Vec<_>>(), "refusal": null},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": n + 5}
            })
            .to_string();
        }
        Reply::Calls(c) => (None, c.as_slice()),
    };
    let out = count_out(reply);
    match d {
        Dialect::OpenAi => {
            let calls: Vec<serde_json::Value> = calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
            let mut message = json!({"role": "assistant", "content": text, "refusal": null});
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }}],
                "usage": {"prompt_tokens": 5, "completion_tokens": out, "total_tokens": out + 5}
            })
            .to_string()
        }
        Dialect::Anthropic => {
            let mut content: Vec<serde_json::Value> = Vec::new();
            if let Some(t) = text {
                content.push(json!({"type": "text", "text": t}));
            }
            for c in calls {
                let input: serde_json::Value =
                    serde_json::from_str(&c.arguments).unwrap_or(json!({}));
                content
                    .push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
            }
            json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": "fake",
                "content": content,
                "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
                "usage": {"input_tokens": 5, "output_tokens": out}
            })
            .to_string()
        }
    }
}

/// Completion tokens reported for a reply (one per streamed piece).
fn count_out(reply: &Reply) -> usize {
    match reply {
        Reply::Text(n) => *n,
        Reply::Json(j) => pieces(j, PIECE).len(),
        Reply::Scored(n, _) => *n,
        Reply::Calls(c) => c
            .iter()
            .map(|c| 1 + pieces(&c.arguments, PIECE).len())
            .sum(),
    }
}

/// A JSON or tool-call reply streamed: its events after the head, the
/// tail included, in order.
pub fn stream_reply(d: Dialect, reply: &Reply) -> Vec<Bytes> {
    use serde_json::json;
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        Bytes::from(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        ))
    };
    let event = |name: &str, data: serde_json::Value| {
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let out = count_out(reply);
    let mut events = Vec::new();
    match (d, reply) {
        (_, Reply::Text(n)) => {
            events.extend((0..*n).map(|i| stream_token(d, i)));
            events.push(stream_tail(d, *n));
        }
        (_, Reply::Scored(n, top)) => {
            for i in 0..*n {
                events.push(Bytes::from(format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                        "choices": [{"index": 0, "delta": {"content": token(i)},
                            "logprobs": {"content": [scored(i, *top)], "refusal": null}, "finish_reason": null}]})
                )));
            }
            events.push(stream_tail(d, out));
        }
        (Dialect::OpenAi, Reply::Json(j)) => {
            for p in pieces(j, PIECE) {
                events.push(chunk(json!({"content": p}), serde_json::Value::Null));
            }
            events.push(stream_tail(d, out));
        }
        (Dialect::OpenAi, Reply::Calls(calls)) => {
            for (i, c) in calls.iter().enumerate() {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": ""}}]}),
                    serde_json::Value::Null,
                ));
                for p in pieces(&c.arguments, PIECE) {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
                        serde_json::Value::Null,
                    ));
                }
            }
            events.push(chunk(json!({}), json!("tool_calls")));
            events.push(Bytes::from(format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                    "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": out, "total_tokens": out + 5}})
            )));
        }
        (Dialect::Anthropic, Reply::Json(j)) => {
            for p in pieces(j, PIECE) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
                ));
            }
            events.push(stream_tail(d, out));
        }
        (Dialect::Anthropic, Reply::Calls(calls)) => {
            // Block 0 (text, opened by the head) closes first.
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            for (i, c) in calls.iter().enumerate() {
                let index = i + 1;
                events.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
                ));
                for p in pieces(&c.arguments, PIECE) {
                    events.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": p}}),
                    ));
                }
                events.push(event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
            }
            events.push(event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": out}}),
            ));
            events.push(event("message_stop", json!({"type": "message_stop"})));
        }
    }
    events
}
