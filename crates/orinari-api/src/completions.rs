//! `POST /v1/completions`: OpenAI's legacy text completions, onto any
//! model. The prompt becomes the one user message of a chat request (as
//! other gateways do for chat models); the answer goes back as a
//! `text_completion`, whole or streamed. What only a raw-text model could
//! do (`echo`, `suffix`, `best_of`, token-id prompts, several prompts at
//! once) is refused by name.

use serde_json::{Map, Value, json};

use crate::ApiError;
use crate::chat::{ChatRequest, ValidationLimits, expected, json_body, known_object};

const KNOWN_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
    "echo",
    "logprobs",
    "suffix",
    "best_of",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    // ORINARI's extension, as on Chat Completions (`sources`, `cache`),
    // passed on to the chat rules with the rest.
    "orinari",
];

/// `max_tokens` when the request gives none (OpenAI's default here).
pub const DEFAULT_MAX_TOKENS: u64 = 16;

fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::invalid(param, why.to_string()).with_code("unsupported_parameter")
}

/// Parse a legacy completions request into the chat request every backend takes.
pub fn parse(body: &[u8], limits: ValidationLimits) -> Result<ChatRequest, ApiError> {
    let value = json_body(body)?;
    let o = known_object(&value, KNOWN_FIELDS)?;
    if o.get("echo").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "echo",
            "`echo` is not supported; the prompt is not repeated.",
        ));
    }
    if o.get("suffix").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "suffix",
            "`suffix` (insertion) is not supported.",
        ));
    }
    if o.get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|b| b > 1)
    {
        return Err(unsupported(
            "best_of",
            "`best_of` greater than 1 is not supported.",
        ));
    }
    if o.get("logprobs").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "logprobs",
            "`logprobs` is not supported by this server's completions yet.",
        ));
    }
    let prompt = match o.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            return Err(unsupported(
                "prompt",
                "Several prompts in one request are not supported; send one per request.",
            ));
        }
        Some(Value::Array(_)) => {
            return Err(unsupported(
                "prompt",
                "Token-id prompts are not supported; send the prompt as text.",
            ));
        }
        Some(v) => return Err(expected("prompt", "a string", v)),
        None => {
            return Err(
                ApiError::invalid("prompt", "Missing required parameter: 'prompt'.")
                    .with_code("missing_required_parameter"),
            );
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
    }
    let mut chat = Map::new();
    for (k, v) in o {
        if !matches!(
            k.as_str(),
            "prompt" | "echo" | "suffix" | "best_of" | "logprobs"
        ) {
            chat.insert(k.clone(), v.clone());
        }
    }
    chat.entry("max_tokens")
        .or_insert_with(|| json!(DEFAULT_MAX_TOKENS));
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    ChatRequest::from_value(&Value::Object(chat), limits)
}

/// A whole answer as a `text_completion`.
pub fn completion_json(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    finish_reason: &str,
    usage: crate::chat::Usage,
) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage,
    })
}

/// One streamed `text_completion` chunk (`finish_reason` on the last).
pub fn chunk_json(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    finish_reason: Option<&str>,
) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
    })
}

/// The usage chunk of a stream (with `stream_options.include_usage`).
pub fn usage_chunk_json(id: &str, created: u64, model: &str, usage: crate::chat::Usage) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [], "usage": usage,
    })
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
    fn a_prompt_becomes_one_user_message() {
        let r = parse(
            br#"{"model": "m", "prompt": ["Once upon"], "stop": "\n"}"#,
            limits(),
        )
        .unwrap();
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].content, "Once upon");
        assert_eq!(r.max_tokens, Some(16));
        assert_eq!(r.stop, vec!["\n".to_string()]);
        for (body, param) in [
            (r#"{"model": "m", "prompt": "x", "echo": true}"#, "echo"),
            (r#"{"model": "m", "prompt": [1, 2]}"#, "prompt"),
            (r#"{"model": "m", "prompt": ["a", "b"]}"#, "prompt"),
            (r#"{"model": "m", "prompt": "x", "bogus": 1}"#, "bogus"),
            (r#"{"model": "m"}"#, "prompt"),
        ] {
            let e = parse(body.as_bytes(), limits()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn the_orinari_extension_is_read_as_on_chat_completions() {
        let r = parse(
            br#"{"model": "m", "prompt": "x", "orinari": {"cache": false}}"#,
            limits(),
        )
        .unwrap();
        assert_eq!(r.cache, Some(false));
        let r = parse(br#"{"model": "m", "prompt": "x"}"#, limits()).unwrap();
        assert_eq!(r.cache, None);
        for (body, param) in [
            (
                r#"{"model": "m", "prompt": "x", "orinari": {"cache": 0}}"#,
                "orinari.cache",
            ),
            (
                r#"{"model": "m", "prompt": "x", "orinari": {"sources": "a"}}"#,
                "orinari.sources",
            ),
        ] {
            let e = parse(body.as_bytes(), limits()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }
}
