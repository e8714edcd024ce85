//! `POST /v1/responses`: the OpenAI Responses API, onto any model.
//!
//! A request is validated by field and turned into the [`ChatRequest`]
//! every backend takes: `instructions` and `input` become the messages
//! (`input.rs`), function `tools`, `tool_choice`, `text` and `reasoning`
//! become the chat options (`fields.rs`), and the rest is checked through
//! the Chat Completions rules (errors name the Responses field). The answer
//! goes back as a `response` object or as the stream's semantic events
//! (`output.rs`).
//!
//! Nothing is retained: a response is never stored, so `store: true`,
//! `background: true` and everything that would read a stored response or
//! conversation (`previous_response_id`, `conversation`, `prompt`,
//! `item_reference` items) is refused, naming the field (`refuse.rs`). An absent `store`
//! means false here (OpenAI's default is true): every response reports
//! `"store": false`.

mod fields;
mod input;
mod output;
mod refuse;

use serde_json::{Map, Value, json};

pub use output::{ResponseHead, StreamWriter, response_json};

use crate::ApiError;
use crate::chat::{
    ChatRequest, Role, ValidationLimits, expected, json_body, known_object, opt_bool,
};

/// Fields a client may send: every field of the current OpenAI clients'
/// `responses.create`. Anything else is refused by name.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "stream_options",
    "max_output_tokens",
    "max_tool_calls",
    "temperature",
    "top_p",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "metadata",
    "user",
    "store",
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "previous_response_id",
    "conversation",
    "prompt",
    "background",
    "background_options",
    "context_management",
    "moderation",
    "access_programs",
    "image",
    // ORINARI's extension, as on Chat Completions: `{"sources": [...]}`
    // narrows a grounded model's retrieval, `{"cache": false}` bypasses the
    // exact response cache. Parsed once, by the chat rules.
    "orinari",
];

/// A validated Responses API request.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// The chat request every backend takes.
    pub chat: ChatRequest,
    /// The request fields a `response` object repeats, for [`ResponseHead`].
    pub echo: Map<String, Value>,
}

fn unsupported(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message).with_code("unsupported_parameter")
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(param, "Missing required parameter.").with_code("missing_required_parameter")
}

fn set(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// An error that names a field in Chat Completions terms (from the chat
/// rules, a backend's refusal or the chat domain), renamed to the
/// Responses field it came from (`response_format` → `text.format`,
/// `messages[…]` → `input`, …).
pub fn renamed(mut e: ApiError) -> ApiError {
    const NAMES: &[(&str, &str)] = &[
        ("response_format.json_schema.", "text.format."),
        ("response_format", "text.format"),
        ("max_completion_tokens", "max_output_tokens"),
        ("reasoning_effort", "reasoning.effort"),
        ("verbosity", "text.verbosity"),
        ("tool_choice.function.", "tool_choice."),
    ];
    for (from, to) in NAMES {
        e.message = e.message.replace(&format!("`{from}"), &format!("`{to}"));
    }
    if let Some(p) = &mut e.param {
        if let Some((from, to)) = NAMES.iter().find(|(from, _)| p.starts_with(from)) {
            *p = format!("{to}{}", &p[from.len()..]);
        } else if p.starts_with("messages") {
            // The conversation as the chat domain numbers it (with the
            // instructions first and calls joined), not as `input` does.
            *p = "input".into();
        } else if p.starts_with("tools[") {
            e.message = e.message.replace(".function.", ".");
            *p = p.replacen(".function.", ".", 1);
        }
    }
    e
}

/// The `response` object's copy of the request fields it repeats.
fn echo(o: &Map<String, Value>, chat: &ChatRequest) -> Map<String, Value> {
    let given = |k: &str, default: Value| set(o.get(k)).cloned().unwrap_or(default);
    let tools: Vec<Value> = chat
        .options
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                "parameters": t.parameters, "strict": t.strict})
        })
        .collect();
    let text = set(o.get("text"));
    let mut e = Map::new();
    e.insert("instructions".into(), given("instructions", Value::Null));
    e.insert(
        "max_output_tokens".into(),
        given("max_output_tokens", Value::Null),
    );
    e.insert("metadata".into(), given("metadata", json!({})));
    e.insert(
        "parallel_tool_calls".into(),
        given("parallel_tool_calls", json!(true)),
    );
    e.insert("previous_response_id".into(), Value::Null);
    e.insert(
        "reasoning".into(),
        json!({"effort": chat.options.reasoning_effort, "summary": null}),
    );
    e.insert("store".into(), json!(false));
    e.insert("background".into(), json!(false));
    e.insert("temperature".into(), given("temperature", json!(1.0)));
    e.insert("top_p".into(), given("top_p", json!(1.0)));
    e.insert(
        "text".into(),
        json!({
            "format": text.and_then(|t| set(t.get("format"))).cloned().unwrap_or(json!({"type": "text"})),
            "verbosity": text.and_then(|t| set(t.get("verbosity"))).cloned().unwrap_or(json!("medium")),
        }),
    );
    e.insert("tool_choice".into(), given("tool_choice", json!("auto")));
    e.insert("tools".into(), Value::Array(tools));
    e.insert("truncation".into(), json!("disabled"));
    e.insert("user".into(), given("user", Value::Null));
    if let Some(tier) = set(o.get("service_tier")) {
        e.insert("service_tier".into(), tier.clone());
    }
    e
}

/// Parse a Responses API request into the chat request every backend takes.
pub fn parse(body: &[u8], limits: ValidationLimits) -> Result<ResponsesRequest, ApiError> {
    let value = json_body(body)?;
    let o = known_object(&value, KNOWN_FIELDS)?;
    refuse::refuse_unsupported(o)?;
    let instructions = match set(o.get("instructions")) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(v) => return Err(expected("instructions", "a string", v)),
    };
    let messages = match set(o.get("input")) {
        Some(v) => input::messages(instructions, v)?,
        None => return Err(missing("input")),
    };

    // Everything else is checked by the Chat Completions rules, on the
    // request this one becomes (with a stand-in conversation).
    let mut chat = Map::new();
    for key in [
        "model",
        "stream",
        "temperature",
        "top_p",
        "user",
        "metadata",
        "parallel_tool_calls",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "orinari",
    ] {
        if let Some(v) = o.get(key) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = o.get("max_output_tokens") {
        chat.insert("max_completion_tokens".into(), v.clone());
    }
    match set(o.get("stream_options")) {
        None => {}
        Some(Value::Object(so)) => {
            if opt_bool(o, "stream")? != Some(true) {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true.",
                ));
            }
            if let Some(k) = so.keys().find(|k| *k != "include_obfuscation") {
                return Err(ApiError::invalid(
                    format!("stream_options.{k}"),
                    format!("Unrecognized stream option `{k}`."),
                )
                .with_code("unknown_parameter"));
            }
        }
        Some(v) => return Err(expected("stream_options", "an object", v)),
    }
    let mut tools = fields::tools(o.get("tools"))?;
    let choice = fields::tool_choice(o.get("tool_choice"), &mut tools)?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        chat.insert("tool_choice".into(), c);
    }
    fields::text(o, &mut chat)?;
    fields::reasoning(o, &mut chat)?;
    chat.insert("messages".into(), json!([{"role": "user", "content": "-"}]));
    let mut request = ChatRequest::from_value(&Value::Object(chat), limits).map_err(renamed)?;

    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(ApiError::invalid(
            "input",
            "`input` must include a `user` message.",
        ));
    }
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if chars > limits.max_input_chars {
        return Err(ApiError::invalid(
            "input",
            format!(
                "The input totals {chars} characters, over the limit of {}.",
                limits.max_input_chars
            ),
        )
        .with_code("input_too_long"));
    }
    request.messages = messages;
    let echo = echo(o, &request);
    Ok(ResponsesRequest {
        chat: request,
        echo,
    })
}

#[cfg(test)]
mod tests;
