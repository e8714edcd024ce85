//! The Responses fields that have a Chat Completions counterpart under
//! another shape: function `tools`, `tool_choice`, `text` (`format`,
//! `verbosity`) and `reasoning` (`effort`), written as the chat request's
//! fields for the Chat Completions rules to check.

use serde_json::{Map, Value, json};

use super::{missing, set, unsupported};
use crate::ApiError;
use crate::chat::expected;

/// Responses function tools → Chat Completions tools; built-in tools are
/// refused by type.
pub(super) fn tools(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
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
pub(super) fn tool_choice(
    v: Option<&Value>,
    tools: &mut Vec<Value>,
) -> Result<Option<Value>, ApiError> {
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
pub(super) fn text(o: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
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
pub(super) fn reasoning(
    o: &Map<String, Value>,
    chat: &mut Map<String, Value>,
) -> Result<(), ApiError> {
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
