//! `POST /v1/chat/completions`: the request, validated field by field, and
//! the response and stream-chunk shapes.
//!
//! Validation walks the JSON by hand rather than through serde derive so every
//! error names its field (`messages[2].content`, `stop[1]`) the way OpenAI does.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ApiError;
use crate::grounded::{Annotation, Grounding, RetrievalReport, SourceRef};
use crate::options::{Options, check_name};
use crate::tools::{ContentPart, ToolCall, ToolCallDelta};

/// Fields a client may send. Anything else is refused, as OpenAI does, so a
/// typo never silently changes behaviour.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "reasoning_effort",
    "prediction",
    "modalities",
    "audio",
    "web_search_options",
    "metadata",
    "store",
    "service_tier",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "orinari",
];

/// At most this many stop sequences (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// Limits applied while validating.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// Total characters across all message contents.
    pub max_input_chars: usize,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions (`system` or `developer`).
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering one of the model's calls.
    Tool,
}

impl Role {
    /// The name the chat template expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// One validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Its role.
    pub role: Role,
    /// Its text (text parts joined; empty for an assistant message that
    /// only calls tools).
    pub content: String,
    /// The content as parts, when it holds more than text (images), in
    /// the order given; empty otherwise.
    pub parts: Vec<ContentPart>,
    /// `name`, when given.
    pub name: Option<String>,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            parts: Vec::new(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model name asked for.
    pub model: String,
    /// The conversation, non-empty.
    pub messages: Vec<ChatMessage>,
    /// Stream with SSE.
    pub stream: bool,
    /// Send a final usage chunk when streaming.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u32>,
    /// 0..=2, default 1.
    pub temperature: f32,
    /// 0..=1, default 1.
    pub top_p: f32,
    /// Up to four stop strings.
    pub stop: Vec<String>,
    /// Same seed, same output.
    pub seed: Option<u64>,
    /// An end-user id for abuse tracking (never logged with content).
    pub user: Option<String>,
    /// Tools, response format and the rest beyond sampled text.
    pub options: Options,
    /// `orinari.sources`: the data sources a grounded model may search for
    /// this answer (`None`: all of the model's; empty: none).
    pub sources: Option<Vec<String>>,
    /// `orinari.cache`: `Some(false)` bypasses the exact response cache
    /// for this request; `None` or `Some(true)` follow the model's setting.
    pub cache: Option<bool>,
}

/// A request body parsed as JSON (400 `invalid_json` with the parser's reason).
pub(crate) fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_json(format!("The request body is not valid JSON: {e}.")))
}

/// A request body's object, every key one of `known`: 400 `invalid_json`
/// for anything but an object, 400 `unknown_parameter` naming the first
/// other key.
pub(crate) fn known_object<'a>(
    value: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, ApiError> {
    let Value::Object(o) = value else {
        return Err(ApiError::invalid_json(format!(
            "The request body must be a JSON object, not {}.",
            kind(value)
        )));
    };
    if let Some(key) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            key.clone(),
            format!("Unrecognized request argument supplied: {key}"),
        )
        .with_code("unknown_parameter"));
    }
    Ok(o)
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn expected(param: &str, what: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        param,
        format!("`{param}` must be {what}, not {}.", kind(got)),
    )
    .with_code("invalid_type")
}

pub(crate) fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(expected(key, "a boolean", v)),
    }
}

pub(crate) fn opt_number(
    o: &Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(min..=max).contains(&x) {
                return Err(ApiError::invalid(
                    key,
                    format!("`{key}` must be between {min} and {max}; got {n}."),
                ));
            }
            Ok(Some(x))
        }
        Some(v) => Err(expected(key, "a number", v)),
    }
}

pub(crate) fn opt_count(o: &Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if x >= 1 => Ok(Some(u32::try_from(x).unwrap_or(u32::MAX))),
            _ => Err(ApiError::invalid(
                key,
                format!("`{key}` must be a positive integer; got {n}."),
            )),
        },
        Some(v) => Err(expected(key, "an integer", v)),
    }
}

fn missing(param: String) -> ApiError {
    ApiError::invalid(param, "Missing required parameter.").with_code("missing_required_parameter")
}

/// A message's content: its text, and its parts when any is not text.
/// `images`: whether image parts are allowed (user messages).
fn content(param: &str, v: &Value, images: bool) -> Result<(String, Vec<ContentPart>), ApiError> {
    let parts = match v {
        Value::String(s) => return Ok((s.clone(), Vec::new())),
        Value::Array(parts) => parts,
        other => {
            return Err(expected(
                param,
                "a string or an array of content parts",
                other,
            ));
        }
    };
    let mut text = String::new();
    let mut out = Vec::with_capacity(parts.len());
    let mut any_image = false;
    for (i, part) in parts.iter().enumerate() {
        let p = format!("{param}[{i}]");
        let Value::Object(obj) = part else {
            return Err(expected(&p, "an object", part));
        };
        match obj.get("type") {
            Some(Value::String(t)) if t == "text" => match obj.get("text") {
                Some(Value::String(t)) => {
                    text.push_str(t);
                    out.push(ContentPart::Text(t.clone()));
                }
                Some(other) => return Err(expected(&format!("{p}.text"), "a string", other)),
                None => return Err(missing(format!("{p}.text"))),
            },
            Some(Value::String(t)) if t == "image_url" && images => {
                let image = match obj.get("image_url") {
                    Some(Value::Object(o)) => o,
                    Some(other) => {
                        return Err(expected(&format!("{p}.image_url"), "an object", other));
                    }
                    None => return Err(missing(format!("{p}.image_url"))),
                };
                let url = match image.get("url") {
                    Some(Value::String(u))
                        if u.starts_with("https://")
                            || u.starts_with("http://")
                            || u.starts_with("data:image/") =>
                    {
                        u.clone()
                    }
                    Some(Value::String(_)) => {
                        return Err(ApiError::invalid(
                            format!("{p}.image_url.url"),
                            "An image URL must be `https://…`, `http://…` or a `data:image/…` URL.",
                        ));
                    }
                    Some(other) => {
                        return Err(expected(&format!("{p}.image_url.url"), "a string", other));
                    }
                    None => return Err(missing(format!("{p}.image_url.url"))),
                };
                let detail = match image.get("detail") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => {
                        Some(d.clone())
                    }
                    Some(_) => {
                        return Err(ApiError::invalid(
                            format!("{p}.image_url.detail"),
                            "`detail` must be `auto`, `low` or `high`.",
                        ));
                    }
                };
                any_image = true;
                out.push(ContentPart::Image { url, detail });
            }
            Some(Value::String(t)) if t == "refusal" => match obj.get("refusal") {
                Some(Value::String(r)) => {
                    text.push_str(r);
                    out.push(ContentPart::Text(r.clone()));
                }
                Some(other) => return Err(expected(&format!("{p}.refusal"), "a string", other)),
                None => return Err(missing(format!("{p}.refusal"))),
            },
            Some(Value::String(t)) => {
                let allowed = if images {
                    "`text` and `image_url` are"
                } else {
                    "only `text` is"
                };
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    format!("Content parts of type `{t}` are not supported here; {allowed}."),
                )
                .with_code("unsupported_parameter"));
            }
            Some(other) => return Err(expected(&format!("{p}.type"), "a string", other)),
            None => return Err(missing(format!("{p}.type"))),
        }
    }
    if !any_image {
        out.clear();
    }
    Ok((text, out))
}

fn tool_calls(param: &str, v: &Value) -> Result<Vec<ToolCall>, ApiError> {
    let Value::Array(a) = v else {
        return Err(expected(param, "an array", v));
    };
    let mut out = Vec::with_capacity(a.len());
    for (i, c) in a.iter().enumerate() {
        let p = format!("{param}[{i}]");
        let Value::Object(c) = c else {
            return Err(expected(&p, "an object", c));
        };
        let id = match c.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid(
                    format!("{p}.id"),
                    "`id` must not be empty.",
                ));
            }
            Some(other) => return Err(expected(&format!("{p}.id"), "a string", other)),
            None => return Err(missing(format!("{p}.id"))),
        };
        match c.get("type") {
            Some(Value::String(t)) if t == "function" => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    "Only tool calls of type `function` are supported.",
                ));
            }
            None => return Err(missing(format!("{p}.type"))),
        }
        let f = match c.get("function") {
            Some(Value::Object(f)) => f,
            Some(other) => return Err(expected(&format!("{p}.function"), "an object", other)),
            None => return Err(missing(format!("{p}.function"))),
        };
        let name = match f.get("name") {
            Some(Value::String(n)) => n.clone(),
            Some(other) => return Err(expected(&format!("{p}.function.name"), "a string", other)),
            None => return Err(missing(format!("{p}.function.name"))),
        };
        check_name(&format!("{p}.function.name"), &name)?;
        let arguments = match f.get("arguments") {
            Some(Value::String(a)) => a.clone(),
            Some(other) => {
                return Err(expected(
                    &format!("{p}.function.arguments"),
                    "a string",
                    other,
                ));
            }
            None => return Err(missing(format!("{p}.function.arguments"))),
        };
        out.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(out)
}

/// Fields each role's messages may carry.
fn message_fields(role: Role) -> &'static [&'static str] {
    match role {
        Role::System | Role::User => &["role", "content", "name"],
        Role::Assistant => &["role", "content", "name", "tool_calls", "refusal", "audio"],
        Role::Tool => &["role", "content", "tool_call_id", "name"],
    }
}

fn message(i: usize, v: &Value) -> Result<ChatMessage, ApiError> {
    let p = format!("messages[{i}]");
    let Value::Object(obj) = v else {
        return Err(expected(&p, "an object", v));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::invalid(
                    format!("{p}.role"),
                    format!(
                        "Invalid role `{other}`; expected one of `system`, `developer`, `user`, `assistant`, `tool`."
                    ),
                ));
            }
        },
        Some(other) => return Err(expected(&format!("{p}.role"), "a string", other)),
        None => return Err(missing(format!("{p}.role"))),
    };
    for key in obj.keys() {
        if !message_fields(role).contains(&key.as_str()) {
            return Err(ApiError::invalid(
                format!("{p}.{key}"),
                format!(
                    "Unrecognized field `{key}` in a `{}` message.",
                    role.as_str()
                ),
            )
            .with_code("unknown_parameter"));
        }
    }
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(other) => return Err(expected(&format!("{p}.name"), "a string", other)),
    };
    let calls = match obj.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => tool_calls(&format!("{p}.tool_calls"), v)?,
    };
    if let Some(a) = obj.get("audio").filter(|a| !a.is_null()) {
        return Err(ApiError::invalid(
            format!("{p}.audio"),
            format!(
                "Audio in the history is not supported (`audio` is {}).",
                kind(a)
            ),
        )
        .with_code("unsupported_parameter"));
    }
    let (content, parts) = match obj.get("content") {
        // An assistant message that only calls tools has no content.
        None | Some(Value::Null) if role == Role::Assistant && !calls.is_empty() => {
            (String::new(), Vec::new())
        }
        Some(v) => content(&format!("{p}.content"), v, role == Role::User)?,
        None => return Err(missing(format!("{p}.content"))),
    };
    let tool_call_id = match (role, obj.get("tool_call_id")) {
        (Role::Tool, Some(Value::String(id))) if !id.is_empty() => Some(id.clone()),
        (Role::Tool, Some(Value::String(_))) => {
            return Err(ApiError::invalid(
                format!("{p}.tool_call_id"),
                "`tool_call_id` must not be empty.",
            ));
        }
        (Role::Tool, Some(other)) => {
            return Err(expected(&format!("{p}.tool_call_id"), "a string", other));
        }
        (Role::Tool, None) => return Err(missing(format!("{p}.tool_call_id"))),
        _ => None,
    };
    Ok(ChatMessage {
        role,
        content,
        parts,
        name,
        tool_calls: calls,
        tool_call_id,
    })
}

impl ChatRequest {
    /// Parse and validate a request body.
    pub fn parse(body: &[u8], limits: ValidationLimits) -> Result<Self, ApiError> {
        Self::from_value(&json_body(body)?, limits)
    }

    /// Validate an already parsed JSON value.
    pub fn from_value(value: &Value, limits: ValidationLimits) -> Result<Self, ApiError> {
        let o = known_object(value, KNOWN_FIELDS)?;
        let model = match o.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid("model", "`model` must not be empty."));
            }
            Some(v) => return Err(expected("model", "a string", v)),
            None => {
                return Err(
                    ApiError::invalid("model", "Missing required parameter: 'model'.")
                        .with_code("missing_required_parameter"),
                );
            }
        };
        let messages = match o.get("messages") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, m)| message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "messages",
                    "`messages` must contain at least one message.",
                ));
            }
            Some(v) => return Err(expected("messages", "an array", v)),
            None => {
                return Err(ApiError::invalid(
                    "messages",
                    "Missing required parameter: 'messages'.",
                )
                .with_code("missing_required_parameter"));
            }
        };
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
        if !messages.iter().any(|m| m.role == Role::User) {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must include a `user` message.",
            ));
        }

        let stream = opt_bool(o, "stream")?.unwrap_or(false);
        let include_usage = match o.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(so)) => {
                if !stream {
                    return Err(ApiError::invalid(
                        "stream_options",
                        "`stream_options` is only allowed when `stream` is true.",
                    ));
                }
                for key in so.keys() {
                    if key != "include_usage" && key != "include_obfuscation" {
                        return Err(ApiError::invalid(
                            format!("stream_options.{key}"),
                            format!("Unrecognized stream option `{key}`."),
                        )
                        .with_code("unknown_parameter"));
                    }
                }
                match so.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(expected("stream_options.include_usage", "a boolean", v));
                    }
                }
            }
            Some(v) => return Err(expected("stream_options", "an object", v)),
        };

        let max_completion = opt_count(o, "max_completion_tokens")?;
        let max_tokens = max_completion.or(opt_count(o, "max_tokens")?);
        let temperature = opt_number(o, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32;
        let top_p = opt_number(o, "top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32;
        if let Some(n) = opt_count(o, "n")?
            && n != 1
        {
            return Err(ApiError::invalid(
                "n",
                "`n` greater than 1 is not supported by any backend of this server yet; ask once per answer.",
            )
            .with_code("unsupported_parameter"));
        }
        if opt_bool(o, "store")? == Some(true) {
            return Err(ApiError::invalid(
                "store",
                "This server retains no conversation, so `store: true` is refused; omit it or send false.",
            )
            .with_code("unsupported_parameter"));
        }
        match o.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !v.is_string() {
                        return Err(expected(&format!("metadata.{k}"), "a string", v));
                    }
                }
            }
            Some(v) => return Err(expected("metadata", "an object", v)),
        }
        let options = Options::parse(o)?;
        check_tool_history(&messages)?;
        let stop = match o.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => {
                if a.len() > MAX_STOP {
                    return Err(ApiError::invalid(
                        "stop",
                        format!(
                            "At most {MAX_STOP} stop sequences are allowed; got {}.",
                            a.len()
                        ),
                    ));
                }
                a.iter()
                    .enumerate()
                    .map(|(i, s)| match s {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(expected(&format!("stop[{i}]"), "a string", other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(v) => return Err(expected("stop", "a string or an array of strings", v)),
        };
        if let Some(i) = stop.iter().position(String::is_empty) {
            return Err(ApiError::invalid(
                if matches!(o.get("stop"), Some(Value::Array(_))) {
                    format!("stop[{i}]")
                } else {
                    "stop".into()
                },
                "Stop sequences must not be empty.",
            ));
        }
        let seed = match o.get("seed") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Some(u),
                // Negative seeds are valid for OpenAI; map them bijectively.
                (None, Some(i)) => Some(i as u64),
                _ => {
                    return Err(ApiError::invalid(
                        "seed",
                        format!("`seed` must be an integer; got {n}."),
                    ));
                }
            },
            Some(v) => return Err(expected("seed", "an integer", v)),
        };
        let user = match o.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.clone()),
            Some(v) => return Err(expected("user", "a string", v)),
        };
        let extension = crate::grounded::parse_extension(o.get("orinari"))?;
        Ok(Self {
            model,
            messages,
            stream,
            include_usage,
            max_tokens,
            temperature,
            top_p,
            stop,
            seed,
            user,
            options,
            sources: extension.sources,
            cache: extension.cache,
        })
    }
}

/// Every `tool` message answers a call that an earlier assistant message made.
pub(crate) fn check_tool_history(messages: &[ChatMessage]) -> Result<(), ApiError> {
    for (i, m) in messages.iter().enumerate() {
        let Some(id) = &m.tool_call_id else { continue };
        let called = messages[..i]
            .iter()
            .any(|earlier| earlier.tool_calls.iter().any(|c| &c.id == id));
        if !called {
            return Err(ApiError::invalid(
                format!("messages[{i}].tool_call_id"),
                format!(
                    "The `tool` message answers `{id}`, which no earlier assistant message's `tool_calls` made."
                ),
            ));
        }
    }
    Ok(())
}

/// Token counts in OpenAI's shape.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Build with the total filled in.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The assistant's message in a complete response.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The answer; null when the model only called tools.
    pub content: Option<String>,
    /// Always null.
    pub refusal: Option<String>,
    /// The model's tool calls, when it made any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// `url_citation`s of a grounded answer's `[n]` markers (absent from
    /// answers that are not grounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Annotation>>,
}

/// One choice of a complete response.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// The output tokens' log probabilities when asked for, else null.
    pub logprobs: Option<crate::ChoiceLogprobs>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: &'static str,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model name as asked.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
    /// Identifies the serving configuration.
    pub system_fingerprint: String,
    /// ORINARI extension: the numbered passages of a grounded answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceRef>>,
    /// ORINARI extension: each asked source's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<Vec<RetrievalReport>>,
}

impl ChatCompletion {
    /// A complete response with one answer.
    pub fn new(
        id: String,
        created: u64,
        model: String,
        fingerprint: String,
        content: String,
        finish_reason: &'static str,
        usage: Usage,
    ) -> Self {
        Self {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant",
                    content: Some(content),
                    refusal: None,
                    tool_calls: Vec::new(),
                    annotations: None,
                },
                logprobs: None,
                finish_reason,
            }],
            usage,
            system_fingerprint: fingerprint,
            sources: None,
            retrieval: None,
        }
    }

    /// The output tokens' log probabilities (`None`: not asked for).
    pub fn with_logprobs(mut self, logprobs: Option<Vec<crate::TokenLogprob>>) -> Self {
        if let (Some(choice), Some(l)) = (self.choices.first_mut(), logprobs) {
            choice.logprobs = Some(crate::ChoiceLogprobs::of(l));
        }
        self
    }

    /// The same as a grounded answer: its sources and retrieval outcomes,
    /// and the annotations of its markers.
    pub fn with_grounding(mut self, grounding: Grounding, annotations: Vec<Annotation>) -> Self {
        if let Some(choice) = self.choices.first_mut() {
            choice.message.annotations = Some(annotations);
        }
        self.sources = Some(grounding.sources);
        self.retrieval = Some(grounding.retrieval);
        self
    }

    /// The same with the model's tool calls (the content becomes null when
    /// it is empty, as OpenAI writes it).
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        if let Some(choice) = self.choices.first_mut()
            && !calls.is_empty()
        {
            if choice.message.content.as_deref() == Some("") {
                choice.message.content = None;
            }
            choice.message.tool_calls = calls;
        }
        self
    }
}

/// The incremental part of a chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A piece of a tool call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDelta; 1]>,
    /// A grounded answer's `url_citation`s, in one chunk before the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Annotation>>,
}

/// One choice of a chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What changed.
    pub delta: Delta,
    /// Log probabilities of this chunk's tokens, when asked for.
    pub logprobs: Option<crate::ChoiceLogprobs>,
    /// Set in the last content chunk.
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    /// Same id for every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds, same for every chunk.
    pub created: u64,
    /// The model name as asked.
    pub model: String,
    /// Identifies the serving configuration.
    pub system_fingerprint: String,
    /// Empty in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// With `include_usage`: null on every chunk but the last.
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    pub usage: UsageField,
    /// ORINARI extension, first chunk of a grounded answer: its passages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceRef>>,
    /// ORINARI extension, first chunk of a grounded answer: each source's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<Vec<RetrievalReport>>,
}

/// The `usage` key of a chunk: absent, `null`, or counts.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum UsageField {
    /// Not requested: the key is omitted.
    #[serde(skip)]
    Absent,
    /// Requested, not yet known: `null`.
    Null(Option<()>),
    /// The final counts.
    Counts(Usage),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

/// Builds the chunks of one stream with shared id, time and model.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    /// Stream id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// System fingerprint.
    pub fingerprint: String,
    /// Whether usage was requested.
    pub include_usage: bool,
    /// `data: {"id":…,"system_fingerprint":…,"choices":[{"index":0,"delta":{"content":`,
    /// encoded once per stream: every content chunk starts with it.
    content_head: Vec<u8>,
}

/// The fields every chunk of a stream shares, in the order a
/// [`ChatCompletionChunk`] writes them.
#[derive(Serialize)]
struct ChunkHead<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'a str,
}

impl ChunkBuilder {
    /// A builder for one stream.
    pub fn new(
        id: String,
        created: u64,
        model: String,
        fingerprint: String,
        include_usage: bool,
    ) -> Self {
        let mut content_head = b"data: ".to_vec();
        let head = ChunkHead {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &model,
            system_fingerprint: &fingerprint,
        };
        // Plain strings and a number always encode; the fallback (an empty
        // head) is caught by `content_sse`.
        if serde_json::to_writer(&mut content_head, &head).is_ok() {
            content_head.pop(); // the closing brace
            content_head.extend_from_slice(br#","choices":[{"index":0,"delta":{"content":"#);
        } else {
            content_head.clear();
        }
        Self {
            id,
            created,
            model,
            fingerprint,
            include_usage,
            content_head,
        }
    }

    /// A content chunk (not the first) as a whole SSE event, byte for byte
    /// what `sse::data(&self.delta(false, content, None))` writes, without
    /// building the chunk: only the text is encoded per token.
    pub fn content_sse(&self, content: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.content_head.len() + content.len() + 64);
        self.write_content_sse(&mut out, content);
        out
    }

    /// [`content_sse`](Self::content_sse), appended to `out` (several
    /// events that are ready together leave in one buffer).
    pub fn write_content_sse(&self, out: &mut Vec<u8>, content: &str) {
        let start = out.len();
        if !content.is_empty() && !self.content_head.is_empty() {
            let tail: &[u8] = if self.include_usage {
                br#"},"logprobs":null,"finish_reason":null}],"usage":null}"#
            } else {
                br#"},"logprobs":null,"finish_reason":null}]}"#
            };
            out.extend_from_slice(&self.content_head);
            if serde_json::to_writer(&mut *out, content).is_ok() {
                out.extend_from_slice(tail);
                out.extend_from_slice(b"\n\n");
                return;
            }
            out.truncate(start);
        }
        crate::sse::write_data(out, &self.delta(false, content.to_string(), None));
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: UsageField) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
            sources: None,
            retrieval: None,
        }
    }

    fn pending_usage(&self) -> UsageField {
        if self.include_usage {
            UsageField::Null(None)
        } else {
            UsageField::Absent
        }
    }

    /// A content chunk; the first one carries the role.
    pub fn delta(
        &self,
        role: bool,
        content: String,
        finish_reason: Option<&'static str>,
    ) -> ChatCompletionChunk {
        let delta = Delta {
            role: role.then_some("assistant"),
            content: (!content.is_empty() || role).then_some(content),
            ..Delta::default()
        };
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            self.pending_usage(),
        )
    }

    /// The first chunk of a grounded answer: the role, its sources and
    /// each source's outcome.
    pub fn grounded_start(&self, grounding: &Grounding) -> ChatCompletionChunk {
        let mut chunk = self.delta(true, String::new(), None);
        chunk.sources = Some(grounding.sources.clone());
        chunk.retrieval = Some(grounding.retrieval.clone());
        chunk
    }

    /// A grounded answer's annotations (sent before its finish chunk).
    pub fn annotations(&self, annotations: Vec<Annotation>) -> ChatCompletionChunk {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    annotations: Some(annotations),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            }],
            self.pending_usage(),
        )
    }

    /// A piece of a tool call.
    pub fn tool_call(&self, call: ToolCallDelta) -> ChatCompletionChunk {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    tool_calls: Some([call]),
                    ..Delta::default()
                },
                logprobs: None,
                finish_reason: None,
            }],
            self.pending_usage(),
        )
    }

    /// Log probabilities of the tokens whose text comes next (empty delta).
    pub fn logprobs(&self, content: Vec<crate::TokenLogprob>) -> ChatCompletionChunk {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta: Delta::default(),
                logprobs: Some(crate::ChoiceLogprobs::of(content)),
                finish_reason: None,
            }],
            self.pending_usage(),
        )
    }

    /// The last content chunk: empty delta and the finish reason.
    pub fn finish(&self, finish_reason: &'static str) -> ChatCompletionChunk {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(finish_reason),
            }],
            self.pending_usage(),
        )
    }

    /// The usage chunk (only with `include_usage`): no choices.
    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk(Vec::new(), UsageField::Counts(usage))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn content_chunks_encode_exactly_like_the_chunk_struct() {
        for usage in [false, true] {
            let b = ChunkBuilder::new(
                "chatcmpl-1".into(),
                1_700_000_000,
                "m\"odel".into(),
                "fp_1".into(),
                usage,
            );
            for text in [
                "Hi",
                " there",
                "quote \" and \\ and \n",
                "é 日本 🎉",
                "\u{1}",
            ] {
                let want = crate::sse::data(&b.delta(false, text.to_string(), None));
                assert_eq!(String::from_utf8(b.content_sse(text)).unwrap(), want);
            }
            let empty = crate::sse::data(&b.delta(false, String::new(), None));
            assert_eq!(String::from_utf8(b.content_sse("")).unwrap(), empty);
        }
    }
}
