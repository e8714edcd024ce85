//! `POST /v1/responses`: the OpenAI Responses API, onto any model.
//!
//! A request is validated by field and turned into the [`ChatRequest`]
//! every backend takes: `instructions` and `input` become the messages
//! (`input.rs`), function `tools`, `tool_choice` and `text.format` become
//! the chat options, and the rest is checked through the Chat Completions
//! rules (errors name the Responses field). The answer goes back as a
//! `response` object or as the stream's semantic events (`output.rs`).
//!
//! Nothing is retained: a response is never stored, so `store: true`,
//! `background: true` and everything that would read a stored response or
//! conversation (`previous_response_id`, `conversation`, `prompt`,
//! `item_reference` items) is refused, naming the field. An absent `store`
//! means false here (OpenAI's default is true): every response reports
//! `"store": false`.

mod input;
mod output;

use serde_json::{Map, Value, json};

pub use output::{ResponseHead, StreamWriter, response_json};

use crate::ApiError;
use crate::chat::{ChatRequest, Role, ValidationLimits, expected, kind, opt_bool, opt_count};

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
];

/// `include` values that ask for nothing this server could add: they name
/// outputs of built-in tools (refused in `tools`), reasoning items (never
/// produced) or input images (never echoed).
const INCLUDABLE: &[&str] = &[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
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

/// The fields that would need a stored response, conversation or file, or
/// a feature no backend here has: each refused by name.
fn refuse_unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
    if opt_bool(o, "store")? == Some(true) {
        return Err(unsupported(
            "store",
            "This server retains no conversation, so `store: true` is refused; omit `store` or send false (responses are never stored here).",
        ));
    }
    if opt_bool(o, "background")? == Some(true) {
        return Err(unsupported(
            "background",
            "Background responses would have to be stored to be fetched later, and this server stores none; omit `background` or send false.",
        ));
    }
    let refusals: [(&str, &str); 8] = [
        (
            "previous_response_id",
            "`previous_response_id` needs a stored response, and this server stores none (nothing is retained); send the whole conversation in `input`.",
        ),
        (
            "conversation",
            "Conversations need to be stored, and this server stores none (nothing is retained); send the whole conversation in `input`.",
        ),
        (
            "prompt",
            "Stored prompt templates are not supported; send the text in `instructions` and `input`.",
        ),
        (
            "background_options",
            "Background responses are not supported (nothing is stored to fetch later).",
        ),
        (
            "moderation",
            "Moderation of responses is not supported by this server.",
        ),
        (
            "access_programs",
            "`access_programs` is not supported by this server.",
        ),
        (
            "image",
            "Image generation options are not supported by this server.",
        ),
        (
            "context_management",
            "Server-side context management (compaction) is not supported: it would keep the conversation; send the context you want in `input`.",
        ),
    ];
    for (key, why) in refusals {
        match set(o.get(key)) {
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(_) => return Err(unsupported(key, why)),
            None => {}
        }
    }
    match set(o.get("top_logprobs")) {
        None => {}
        Some(v) if v.as_u64() == Some(0) => {}
        Some(_) => {
            return Err(unsupported(
                "top_logprobs",
                "Log probabilities are not returned by this server's Responses API.",
            ));
        }
    }
    match set(o.get("truncation")) {
        None => {}
        Some(Value::String(t)) if t == "disabled" => {}
        Some(Value::String(t)) if t == "auto" => {
            return Err(unsupported(
                "truncation",
                "`truncation: auto` is not supported: the input is never cut here, and one that does not fit fails with `context_length_exceeded`; send `disabled` or omit it.",
            ));
        }
        Some(v) => return Err(expected("truncation", "`auto` or `disabled`", v)),
    }
    match set(o.get("include")) {
        None => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v.as_str() {
                    Some("message.output_text.logprobs") => {
                        return Err(unsupported(
                            &format!("include[{i}]"),
                            "Log probabilities are not returned by this server's Responses API.",
                        ));
                    }
                    Some(s) if INCLUDABLE.contains(&s) => {}
                    _ => {
                        return Err(ApiError::invalid(
                            format!("include[{i}]"),
                            format!("Invalid `include` value {v}."),
                        ));
                    }
                }
            }
        }
        Some(v) => return Err(expected("include", "an array of strings", v)),
    }
    opt_count(o, "max_tool_calls")?;
    match set(o.get("prompt_cache_retention")) {
        None => {}
        Some(Value::String(r)) if r == "in_memory" || r == "24h" => {}
        Some(v) => {
            return Err(expected(
                "prompt_cache_retention",
                "`in_memory` or `24h`",
                v,
            ));
        }
    }
    match set(o.get("prompt_cache_options")) {
        None | Some(Value::Object(_)) => {}
        Some(v) => return Err(expected("prompt_cache_options", "an object", v)),
    }
    Ok(())
}

/// Responses function tools → Chat Completions tools; built-in tools are
/// refused by type.
fn tools(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let a = match set(v) {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(expected("tools", "an array", v)),
    };
    let mut out = Vec::with_capacity(a.len());
    for (i, t) in a.iter().enumerate() {
        let p = format!("tools[{i}]");
        let Value::Object(t) = t else {
            return Err(expected(&p, "an object", t));
        };
        match t.get("type") {
            Some(Value::String(k)) if k == "function" => {}
            Some(Value::String(k)) => {
                return Err(unsupported(
                    &format!("{p}.type"),
                    format!(
                        "Built-in tools (`{k}`) are not supported: this server runs no tools of its own; define a `function` tool and run it in your application."
                    ),
                ));
            }
            Some(v) => return Err(expected(&format!("{p}.type"), "a string", v)),
            None => return Err(missing(&format!("{p}.type"))),
        }
        let mut function = Map::new();
        for (key, v) in t {
            match key.as_str() {
                "type" => {}
                "name" | "description" | "parameters" | "strict" => {
                    if !v.is_null() {
                        function.insert(key.clone(), v.clone());
                    }
                }
                // What the function returns, for OpenAI's models; it does
                // not change the call, so it is not passed on.
                "output_schema" => {}
                "defer_loading" if v.as_bool() != Some(true) => {}
                "allowed_callers"
                    if v.is_null()
                        || v.as_array()
                            .is_some_and(|a| a.iter().all(|c| c.as_str() == Some("direct"))) => {}
                "defer_loading" | "allowed_callers" => {
                    return Err(unsupported(
                        &format!("{p}.{key}"),
                        format!(
                            "`{key}` needs built-in tool search or programmatic calling, which this server does not run."
                        ),
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("{p}.{key}"),
                        format!("Unrecognized tool field `{key}`."),
                    )
                    .with_code("unknown_parameter"));
                }
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// The chat `tool_choice` for a Responses one; `allowed_tools` narrows
/// `tools` to the ones it names.
fn tool_choice(v: Option<&Value>, tools: &mut Vec<Value>) -> Result<Option<Value>, ApiError> {
    let o = match set(v) {
        None => return Ok(None),
        Some(s @ Value::String(_)) => return Ok(Some(s.clone())),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(expected("tool_choice", "a string or an object", v)),
    };
    match o.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = match o.get("name") {
                Some(Value::String(n)) => n,
                Some(v) => return Err(expected("tool_choice.name", "a string", v)),
                None => return Err(missing("tool_choice.name")),
            };
            Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            ))
        }
        Some("allowed_tools") => {
            let mode = match o.get("mode").and_then(Value::as_str) {
                Some(m @ ("auto" | "required")) => m,
                _ => {
                    return Err(ApiError::invalid(
                        "tool_choice.mode",
                        "`tool_choice.mode` must be `auto` or `required`.",
                    ));
                }
            };
            let Some(Value::Array(allowed)) = o.get("tools") else {
                return Err(missing("tool_choice.tools"));
            };
            let mut names = Vec::with_capacity(allowed.len());
            for (j, t) in allowed.iter().enumerate() {
                let p = format!("tool_choice.tools[{j}]");
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(unsupported(
                        &format!("{p}.type"),
                        "Only `function` tools can be allowed here.",
                    ));
                }
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    return Err(missing(&format!("{p}.name")));
                };
                if !tools.iter().any(|t| t["function"]["name"] == name) {
                    return Err(ApiError::invalid(
                        format!("{p}.name"),
                        format!("`{name}` is not among `tools`."),
                    ));
                }
                names.push(name.to_string());
            }
            tools.retain(|t| names.iter().any(|n| t["function"]["name"] == n.as_str()));
            Ok(Some(json!(mode)))
        }
        Some(other) => Err(unsupported(
            "tool_choice.type",
            format!(
                "`tool_choice` of type `{other}` is not supported: this server runs no built-in tools; choose `auto`, `none`, `required`, a function or `allowed_tools`."
            ),
        )),
        None => Err(missing("tool_choice.type")),
    }
}

/// `text.format` → the chat `response_format`; `text.verbosity` → the
/// chat hint of the same name.
fn text(o: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
    let t = match set(o.get("text")) {
        None => return Ok(()),
        Some(Value::Object(t)) => t,
        Some(v) => return Err(expected("text", "an object", v)),
    };
    if let Some(k) = t.keys().find(|k| *k != "format" && *k != "verbosity") {
        return Err(ApiError::invalid(
            format!("text.{k}"),
            format!("Unrecognized field `text.{k}`."),
        )
        .with_code("unknown_parameter"));
    }
    if let Some(v) = set(t.get("verbosity")) {
        chat.insert("verbosity".into(), v.clone());
    }
    let f = match set(t.get("format")) {
        None => return Ok(()),
        Some(Value::Object(f)) => f,
        Some(v) => return Err(expected("text.format", "an object", v)),
    };
    let kind = f.get("type").and_then(Value::as_str);
    let allowed: &[&str] = match kind {
        Some("json_schema") => &["type", "name", "schema", "description", "strict"],
        _ => &["type"],
    };
    if let Some(k) = f.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            format!("text.format.{k}"),
            format!("Unrecognized field `text.format.{k}`."),
        )
        .with_code("unknown_parameter"));
    }
    let format = match kind {
        Some("json_schema") => {
            if set(f.get("schema")).is_none() {
                return Err(missing("text.format.schema"));
            }
            let mut schema = f.clone();
            schema.remove("type");
            json!({"type": "json_schema", "json_schema": schema})
        }
        // `text`, `json_object`, or a wrong one (named by the chat rules).
        _ => Value::Object(f.clone()),
    };
    chat.insert("response_format".into(), format);
    Ok(())
}

/// `reasoning.effort` → `reasoning_effort`; summaries are refused.
fn reasoning(o: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
    let r = match set(o.get("reasoning")) {
        None => return Ok(()),
        Some(Value::Object(r)) => r,
        Some(v) => return Err(expected("reasoning", "an object", v)),
    };
    for (key, v) in r {
        match key.as_str() {
            "effort" => {
                if !v.is_null() {
                    chat.insert("reasoning_effort".into(), v.clone());
                }
            }
            "summary" | "generate_summary" | "context" if !v.is_null() => {
                return Err(unsupported(
                    &format!("reasoning.{key}"),
                    format!(
                        "`reasoning.{key}` is not supported: this server returns no reasoning items."
                    ),
                ));
            }
            "mode" if !v.is_null() && v.as_str() != Some("standard") => {
                return Err(unsupported(
                    "reasoning.mode",
                    "Only the `standard` reasoning mode is supported.",
                ));
            }
            "summary" | "generate_summary" | "context" | "mode" => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("reasoning.{key}"),
                    format!("Unrecognized field `reasoning.{key}`."),
                )
                .with_code("unknown_parameter"));
            }
        }
    }
    Ok(())
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
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_json(format!("The request body is not valid JSON: {e}.")))?;
    let Value::Object(o) = &value else {
        return Err(ApiError::invalid_json(format!(
            "The request body must be a JSON object, not {}.",
            kind(&value)
        )));
    };
    if let Some(key) = o.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            key.clone(),
            format!("Unrecognized request argument supplied: {key}"),
        )
        .with_code("unknown_parameter"));
    }
    refuse_unsupported(o)?;
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
    let mut tools = tools(o.get("tools"))?;
    let choice = tool_choice(o.get("tool_choice"), &mut tools)?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        chat.insert("tool_choice".into(), c);
    }
    text(o, &mut chat)?;
    reasoning(o, &mut chat)?;
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
