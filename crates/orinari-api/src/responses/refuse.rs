//! What a Responses request may not ask for here, refused by name: what
//! would need a stored response, conversation or file (nothing is
//! retained), and what no backend of this server has.

use serde_json::{Map, Value};

use super::{set, unsupported};
use crate::ApiError;
use crate::chat::{expected, opt_bool, opt_count};

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

/// The fields that would need a stored response, conversation or file, or
/// a feature no backend here has: each refused by name.
pub(super) fn refuse_unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
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
