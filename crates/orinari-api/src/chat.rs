//! `POST /v1/chat/completions`: the request, validated field by field, and
//! the response and stream-chunk shapes.
//!
//! Validation walks the JSON by hand rather than through serde derive so every
//! error names its field (`messages[2].content`, `stop[1]`) the way OpenAI does.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ApiError;

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
    "response_format",
    "metadata",
    "store",
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
}

impl Role {
    /// The name the chat template expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Its role.
    pub role: Role,
    /// Plain text (content parts are joined).
    pub content: String,
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
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(param: &str, what: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        param,
        format!("`{param}` must be {what}, not {}.", kind(got)),
    )
    .with_code("invalid_type")
}

fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(expected(key, "a boolean", v)),
    }
}

fn opt_number(
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

fn opt_count(o: &Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
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

fn text_content(param: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, part) in parts.iter().enumerate() {
                let p = format!("{param}[{i}]");
                let Value::Object(obj) = part else {
                    return Err(expected(&p, "an object", part));
                };
                match obj.get("type") {
                    Some(Value::String(t)) if t == "text" => {}
                    Some(Value::String(t)) => {
                        return Err(ApiError::invalid(
                            format!("{p}.type"),
                            format!(
                                "Content parts of type `{t}` are not supported; only `text` is."
                            ),
                        ));
                    }
                    Some(other) => return Err(expected(&format!("{p}.type"), "a string", other)),
                    None => {
                        return Err(ApiError::invalid(
                            format!("{p}.type"),
                            "Missing required parameter.",
                        ))
                        .map_err(|e| e.with_code("missing_required_parameter"));
                    }
                }
                match obj.get("text") {
                    Some(Value::String(t)) => out.push_str(t),
                    Some(other) => return Err(expected(&format!("{p}.text"), "a string", other)),
                    None => {
                        return Err(ApiError::invalid(
                            format!("{p}.text"),
                            "Missing required parameter.",
                        )
                        .with_code("missing_required_parameter"));
                    }
                }
            }
            Ok(out)
        }
        other => Err(expected(param, "a string or an array of text parts", other)),
    }
}

fn message(i: usize, v: &Value) -> Result<ChatMessage, ApiError> {
    let p = format!("messages[{i}]");
    let Value::Object(obj) = v else {
        return Err(expected(&p, "an object", v));
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "role" | "content" | "name") {
            return Err(ApiError::invalid(
                format!("{p}.{key}"),
                format!("Unrecognized message field `{key}`; tool calls are not supported."),
            )
            .with_code("unknown_parameter"));
        }
    }
    let role = match obj.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    format!("{p}.role"),
                    format!(
                        "Invalid role `{other}`; expected one of `system`, `developer`, `user`, `assistant`."
                    ),
                ));
            }
        },
        Some(other) => return Err(expected(&format!("{p}.role"), "a string", other)),
        None => {
            return Err(
                ApiError::invalid(format!("{p}.role"), "Missing required parameter.")
                    .with_code("missing_required_parameter"),
            );
        }
    };
    if let Some(name) = obj.get("name")
        && !name.is_string()
    {
        return Err(expected(&format!("{p}.name"), "a string", name));
    }
    let content = match obj.get("content") {
        Some(v) => text_content(&format!("{p}.content"), v)?,
        None => {
            return Err(
                ApiError::invalid(format!("{p}.content"), "Missing required parameter.")
                    .with_code("missing_required_parameter"),
            );
        }
    };
    Ok(ChatMessage { role, content })
}

impl ChatRequest {
    /// Parse and validate a request body.
    pub fn parse(body: &[u8], limits: ValidationLimits) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid_json(format!("The request body is not valid JSON: {e}."))
        })?;
        Self::from_value(&value, limits)
    }

    /// Validate an already parsed JSON value.
    pub fn from_value(value: &Value, limits: ValidationLimits) -> Result<Self, ApiError> {
        let Value::Object(o) = value else {
            return Err(ApiError::invalid_json(format!(
                "The request body must be a JSON object, not {}.",
                kind(value)
            )));
        };
        for key in o.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                return Err(ApiError::invalid(
                    key.clone(),
                    format!("Unrecognized request argument supplied: {key}"),
                )
                .with_code("unknown_parameter"));
            }
        }
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
        for key in ["frequency_penalty", "presence_penalty"] {
            if let Some(x) = opt_number(o, key, -2.0, 2.0)?
                && x != 0.0
            {
                return Err(ApiError::invalid(
                    key,
                    format!("`{key}` is not supported by this server; omit it or send 0."),
                )
                .with_code("unsupported_parameter"));
            }
        }
        if let Some(n) = opt_count(o, "n")?
            && n != 1
        {
            return Err(ApiError::invalid("n", "Only `n` = 1 is supported.")
                .with_code("unsupported_parameter"));
        }
        if opt_bool(o, "logprobs")? == Some(true) {
            return Err(ApiError::invalid(
                "logprobs",
                "`logprobs` is not supported by this server.",
            )
            .with_code("unsupported_parameter"));
        }
        opt_bool(o, "store")?;
        match o.get("metadata") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(v) => return Err(expected("metadata", "an object", v)),
        }
        match o.get("response_format") {
            None | Some(Value::Null) => {}
            Some(Value::Object(rf)) => match rf.get("type") {
                Some(Value::String(t)) if t == "text" => {}
                _ => {
                    return Err(ApiError::invalid(
                        "response_format.type",
                        "Only `{\"type\": \"text\"}` is supported.",
                    )
                    .with_code("unsupported_parameter"));
                }
            },
            Some(v) => return Err(expected("response_format", "an object", v)),
        }
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
        })
    }
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
    /// The answer.
    pub content: String,
    /// Always null.
    pub refusal: Option<String>,
}

/// One choice of a complete response.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
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
                    content,
                    refusal: None,
                },
                logprobs: None,
                finish_reason,
            }],
            usage,
            system_fingerprint: fingerprint,
        }
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
}

/// One choice of a chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What changed.
    pub delta: Delta,
    /// Always null.
    pub logprobs: Option<()>,
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
