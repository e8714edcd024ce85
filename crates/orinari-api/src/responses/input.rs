//! A Responses API `input` (a string, or a list of items) and its
//! `instructions` → the conversation every backend takes: messages of
//! every role, `function_call` items as the assistant's `tool_calls` (joined
//! onto the assistant turn before them), `function_call_output` items as
//! `tool` messages. Items that only mean something to a server that keeps
//! conversations or runs its own tools are refused by name.

use serde_json::{Map, Value};

use crate::ApiError;
use crate::chat::{ChatMessage, Role, expected};
use crate::options::check_name;
use crate::tools::{ContentPart, ToolCall};

fn missing(param: String) -> ApiError {
    ApiError::invalid(param, "Missing required parameter.").with_code("missing_required_parameter")
}

fn unknown(param: String, what: &str) -> ApiError {
    let key = param.rsplit('.').next().unwrap_or_default().to_string();
    ApiError::invalid(param, format!("Unrecognized {what} field `{key}`."))
        .with_code("unknown_parameter")
}

fn unsupported(param: String, message: String) -> ApiError {
    ApiError::invalid(param, message).with_code("unsupported_parameter")
}

fn check_keys(
    o: &Map<String, Value>,
    p: &str,
    allowed: &[&str],
    what: &str,
) -> Result<(), ApiError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown(format!("{p}.{k}"), what)),
        None => Ok(()),
    }
}

fn string(o: &Map<String, Value>, p: &str, key: &str) -> Result<String, ApiError> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(expected(&format!("{p}.{key}"), "a string", v)),
        None => Err(missing(format!("{p}.{key}"))),
    }
}

/// An `input_image` part → an image part (by URL; uploaded files need a
/// file store this server does not have).
fn image(o: &Map<String, Value>, p: &str) -> Result<ContentPart, ApiError> {
    check_keys(
        o,
        p,
        &[
            "type",
            "image_url",
            "file_id",
            "detail",
            "prompt_cache_breakpoint",
        ],
        "image part",
    )?;
    if o.get("file_id").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            format!("{p}.file_id"),
            "Uploaded files are not supported (this server keeps no files); send the image as `image_url` (https or a data: URL).".into(),
        ));
    }
    let url = match o.get("image_url") {
        Some(Value::String(u))
            if u.starts_with("https://")
                || u.starts_with("http://")
                || u.starts_with("data:image/") =>
        {
            u.clone()
        }
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(
                format!("{p}.image_url"),
                "An image URL must be `https://…`, `http://…` or a `data:image/…` URL.",
            ));
        }
        Some(v) => return Err(expected(&format!("{p}.image_url"), "a string", v)),
        None => return Err(missing(format!("{p}.image_url"))),
    };
    let detail = match o.get("detail") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => Some(d.clone()),
        Some(Value::String(d)) if d == "original" => Some("high".into()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{p}.detail"),
                "`detail` must be `auto`, `low`, `high` or `original`.",
            ));
        }
    };
    Ok(ContentPart::Image { url, detail })
}

/// A message's content: its text, and its parts when it holds an image.
fn content(v: &Value, p: &str, role: Role) -> Result<(String, Vec<ContentPart>), ApiError> {
    let parts = match v {
        Value::String(s) => return Ok((s.clone(), Vec::new())),
        Value::Array(parts) => parts,
        v => return Err(expected(p, "a string or an array of content parts", v)),
    };
    let mut text = String::new();
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{p}[{j}]");
        let Value::Object(o) = part else {
            return Err(expected(&pp, "an object", part));
        };
        let kind = match o.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(v) => return Err(expected(&format!("{pp}.type"), "a string", v)),
            None => return Err(missing(format!("{pp}.type"))),
        };
        match kind {
            "input_text" | "output_text" => {
                check_keys(
                    o,
                    &pp,
                    &[
                        "type",
                        "text",
                        "annotations",
                        "logprobs",
                        "prompt_cache_breakpoint",
                    ],
                    "text part",
                )?;
                let t = string(o, &pp, "text")?;
                text.push_str(&t);
                out.push(ContentPart::Text(t));
            }
            "refusal" if role == Role::Assistant => {
                check_keys(o, &pp, &["type", "refusal"], "refusal part")?;
                let t = string(o, &pp, "refusal")?;
                text.push_str(&t);
                out.push(ContentPart::Text(t));
            }
            "input_image" if role == Role::User => out.push(image(o, &pp)?),
            "input_file" | "input_audio" | "input_image" => {
                return Err(unsupported(
                    format!("{pp}.type"),
                    format!(
                        "Content parts of type `{kind}` are not supported in a `{}` message here; text{} is.",
                        role.as_str(),
                        if role == Role::User {
                            " and `input_image`"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{pp}.type"),
                    format!(
                        "Invalid content part type `{other}`; expected `input_text`, `output_text`, `refusal` or `input_image`."
                    ),
                ));
            }
        }
    }
    if !out.iter().any(|p| matches!(p, ContentPart::Image { .. })) {
        out.clear();
    }
    Ok((text, out))
}

fn message(o: &Map<String, Value>, p: &str) -> Result<ChatMessage, ApiError> {
    check_keys(
        o,
        p,
        &["type", "role", "content", "status", "id", "phase"],
        "message",
    )?;
    let role = match o.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" | "developer" => Role::System,
            other => {
                return Err(ApiError::invalid(
                    format!("{p}.role"),
                    format!(
                        "Invalid role `{other}`; expected `user`, `assistant`, `system` or `developer`."
                    ),
                ));
            }
        },
        Some(v) => return Err(expected(&format!("{p}.role"), "a string", v)),
        None => return Err(missing(format!("{p}.role"))),
    };
    let (text, parts) = match o.get("content") {
        Some(v) => content(v, &format!("{p}.content"), role)?,
        None => return Err(missing(format!("{p}.content"))),
    };
    let mut m = ChatMessage::text(role, text);
    m.parts = parts;
    Ok(m)
}

fn function_call(o: &Map<String, Value>, p: &str) -> Result<ToolCall, ApiError> {
    check_keys(
        o,
        p,
        &[
            "type",
            "call_id",
            "name",
            "arguments",
            "id",
            "status",
            "namespace",
            "caller",
        ],
        "function_call",
    )?;
    let call = ToolCall {
        id: string(o, p, "call_id")?,
        name: string(o, p, "name")?,
        arguments: string(o, p, "arguments")?,
    };
    if call.id.is_empty() {
        return Err(ApiError::invalid(
            format!("{p}.call_id"),
            "`call_id` must not be empty.",
        ));
    }
    check_name(&format!("{p}.name"), &call.name)?;
    Ok(call)
}

/// A `function_call_output`'s text (a string, or text parts).
fn output_text(o: &Map<String, Value>, p: &str) -> Result<String, ApiError> {
    check_keys(
        o,
        p,
        &[
            "type",
            "call_id",
            "output",
            "id",
            "status",
            "name",
            "namespace",
            "caller",
        ],
        "function_call_output",
    )?;
    let parts = match o.get("output") {
        Some(Value::String(s)) => return Ok(s.clone()),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(expected(
                &format!("{p}.output"),
                "a string or an array of content parts",
                v,
            ));
        }
        None => return Err(missing(format!("{p}.output"))),
    };
    // Only user messages hold images: a tool's output is text here.
    let (text, _) = content(
        &Value::Array(parts.clone()),
        &format!("{p}.output"),
        Role::Tool,
    )?;
    Ok(text)
}

/// The conversation: `instructions` first (a system message), then `input`.
pub(super) fn messages(
    instructions: Option<&str>,
    input: &Value,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out = Vec::new();
    if let Some(i) = instructions {
        out.push(ChatMessage::text(Role::System, i));
    }
    let items = match input {
        Value::String(s) => {
            out.push(ChatMessage::text(Role::User, s.clone()));
            return Ok(out);
        }
        Value::Array(a) if !a.is_empty() => a,
        Value::Array(_) => {
            return Err(ApiError::invalid(
                "input",
                "`input` must contain at least one item.",
            ));
        }
        v => return Err(expected("input", "a string or an array of input items", v)),
    };
    let mut called: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("input[{i}]");
        let Value::Object(o) = item else {
            return Err(expected(&p, "an object", item));
        };
        match o.get("type") {
            None | Some(Value::Null) => out.push(message(o, &p)?),
            Some(Value::String(t)) => match t.as_str() {
                "message" => out.push(message(o, &p)?),
                "function_call" => {
                    let call = function_call(o, &p)?;
                    called.push(call.id.clone());
                    // Calls join the assistant turn right before them, as
                    // Chat Completions writes a turn that calls tools.
                    match out.last_mut() {
                        Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                        _ => {
                            let mut m = ChatMessage::text(Role::Assistant, String::new());
                            m.tool_calls.push(call);
                            out.push(m);
                        }
                    }
                }
                "function_call_output" => {
                    let id = string(o, &p, "call_id")?;
                    if !called.contains(&id) {
                        return Err(ApiError::invalid(
                            format!("{p}.call_id"),
                            format!(
                                "No earlier `function_call` item in `input` has the `call_id` `{id}`; send the call with its output (this server keeps no earlier responses)."
                            ),
                        ));
                    }
                    let mut m = ChatMessage::text(Role::Tool, output_text(o, &p)?);
                    m.tool_call_id = Some(id);
                    out.push(m);
                }
                "item_reference" => {
                    return Err(unsupported(
                        format!("{p}.type"),
                        "`item_reference` needs stored items, and this server stores none (nothing is retained); send the item itself.".into(),
                    ));
                }
                "reasoning" => {
                    return Err(unsupported(
                        format!("{p}.type"),
                        "`reasoning` items are not supported; this server returns none, so leave them out of `input`.".into(),
                    ));
                }
                other => {
                    return Err(unsupported(
                        format!("{p}.type"),
                        format!(
                            "Input items of type `{other}` are not supported: this server runs no built-in tools; use `function` tools (`function_call` / `function_call_output`)."
                        ),
                    ));
                }
            },
            Some(v) => return Err(expected(&format!("{p}.type"), "a string", v)),
        }
    }
    Ok(out)
}
