//! What a Chat Completions request asks for beyond plain sampled text —
//! tools, a response format, log probabilities, penalties, reasoning effort,
//! a predicted output — validated field by field into [`Options`].
//!
//! Every backend reads the same [`Options`]: an OpenAI-compatible upstream
//! gets them passed through, the Anthropic adapter maps what it can, and a
//! backend that cannot honour one refuses the request naming the field.

use serde_json::{Map, Value};

use crate::ApiError;
use crate::chat::{expected, opt_bool, opt_number};
use crate::tools::{JsonSchema, ResponseFormat, Tool, ToolChoice};

/// At most this many tools (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// `top_logprobs` is at most this (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// Request options beyond sampling, as validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    /// Functions the model may call.
    pub tools: Vec<Tool>,
    /// Whether and which tool must be called.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several calls may come in one answer.
    pub parallel_tool_calls: Option<bool>,
    /// Text, a JSON object, or JSON following a schema.
    pub response_format: Option<ResponseFormat>,
    /// Return the log probability of each output token.
    pub logprobs: bool,
    /// With `logprobs`: this many alternatives per token.
    pub top_logprobs: Option<u32>,
    /// -2..=2; 0 (or absent) leaves sampling unchanged.
    pub frequency_penalty: Option<f32>,
    /// -2..=2; 0 (or absent) leaves sampling unchanged.
    pub presence_penalty: Option<f32>,
    /// Token id → bias (-100..=100).
    pub logit_bias: Option<Map<String, Value>>,
    /// Reasoning models: `minimal`, `low`, `medium`, `high` (or `none`).
    pub reasoning_effort: Option<String>,
    /// Predicted output (`{"type": "content", "content": …}`).
    pub prediction: Option<Value>,
    /// Provider hints an OpenAI-compatible upstream gets unchanged and that
    /// change nothing else (`service_tier`, `verbosity`,
    /// `prompt_cache_key`, `safety_identifier`).
    pub hints: Vec<(String, Value)>,
}

/// Hints passed to OpenAI-compatible upstreams as they are (strings).
pub const HINTS: &[&str] = &[
    "service_tier",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

impl Options {
    /// Parse the option fields of a request object.
    pub(crate) fn parse(o: &Map<String, Value>) -> Result<Self, ApiError> {
        let mut out = Self {
            tools: tools(o.get("tools"))?,
            ..Self::default()
        };
        out.tool_choice = tool_choice(o.get("tool_choice"), &out.tools)?;
        out.parallel_tool_calls = opt_bool(o, "parallel_tool_calls")?;
        out.response_format = response_format(o.get("response_format"))?;
        out.logprobs = opt_bool(o, "logprobs")?.unwrap_or(false);
        out.top_logprobs = match o.get("top_logprobs") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(k) if k <= MAX_TOP_LOGPROBS => Some(k as u32),
                _ => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        format!(
                            "`top_logprobs` must be an integer from 0 to {MAX_TOP_LOGPROBS}; got {n}."
                        ),
                    ));
                }
            },
            Some(v) => return Err(expected("top_logprobs", "an integer", v)),
        };
        if out.top_logprobs.is_some() && !out.logprobs {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs` set to true.",
            ));
        }
        out.frequency_penalty = opt_number(o, "frequency_penalty", -2.0, 2.0)?.map(|x| x as f32);
        out.presence_penalty = opt_number(o, "presence_penalty", -2.0, 2.0)?.map(|x| x as f32);
        out.logit_bias = match o.get("logit_bias") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let p = format!("logit_bias.{k}");
                    if k.parse::<u32>().is_err() {
                        return Err(ApiError::invalid(
                            p,
                            "`logit_bias` keys must be token ids (non-negative integers).",
                        ));
                    }
                    match v.as_f64() {
                        Some(x) if (-100.0..=100.0).contains(&x) => {}
                        _ => {
                            return Err(ApiError::invalid(
                                p,
                                "A `logit_bias` value must be a number from -100 to 100.",
                            ));
                        }
                    }
                }
                Some(m.clone())
            }
            Some(v) => return Err(expected("logit_bias", "an object", v)),
        };
        out.reasoning_effort = match o.get("reasoning_effort") {
            None | Some(Value::Null) => None,
            Some(Value::String(e))
                if matches!(e.as_str(), "none" | "minimal" | "low" | "medium" | "high") =>
            {
                Some(e.clone())
            }
            Some(Value::String(e)) => {
                return Err(ApiError::invalid(
                    "reasoning_effort",
                    format!(
                        "Invalid `reasoning_effort` `{e}`; expected one of `none`, `minimal`, `low`, `medium`, `high`."
                    ),
                ));
            }
            Some(v) => return Err(expected("reasoning_effort", "a string", v)),
        };
        out.prediction = match o.get("prediction") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
                if p.get("type").and_then(Value::as_str) != Some("content") {
                    return Err(ApiError::invalid(
                        "prediction.type",
                        "`prediction.type` must be `content`.",
                    ));
                }
                match p.get("content") {
                    Some(Value::String(_) | Value::Array(_)) => {}
                    Some(v) => {
                        return Err(expected(
                            "prediction.content",
                            "a string or an array of text parts",
                            v,
                        ));
                    }
                    None => {
                        return Err(ApiError::invalid(
                            "prediction.content",
                            "Missing required parameter.",
                        )
                        .with_code("missing_required_parameter"));
                    }
                }
                Some(Value::Object(p.clone()))
            }
            Some(v) => return Err(expected("prediction", "an object", v)),
        };
        match o.get("modalities") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, m) in a.iter().enumerate() {
                    match m.as_str() {
                        Some("text") => {}
                        Some("audio") => {
                            return Err(ApiError::invalid(
                                format!("modalities[{i}]"),
                                "Audio output is not supported by any backend of this server; ask for `[\"text\"]`.",
                            )
                            .with_code("unsupported_parameter"));
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                format!("modalities[{i}]"),
                                "A modality must be `text` or `audio`.",
                            ));
                        }
                    }
                }
            }
            Some(v) => return Err(expected("modalities", "an array", v)),
        }
        if let Some(v) = o.get("audio").filter(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "audio",
                format!(
                    "Audio output is not supported by any backend of this server (`audio` is {}).",
                    crate::chat::kind(v)
                ),
            )
            .with_code("unsupported_parameter"));
        }
        for key in ["functions", "function_call"] {
            if o.get(key).is_some_and(|v| !v.is_null()) {
                return Err(ApiError::invalid(
                    key,
                    format!(
                        "`{key}` is deprecated and not supported; use `tools` and `tool_choice`."
                    ),
                )
                .with_code("unsupported_parameter"));
            }
        }
        if o.get("web_search_options").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "web_search_options",
                "Web search is not supported by any backend of this server.",
            )
            .with_code("unsupported_parameter"));
        }
        for key in HINTS {
            match o.get(*key) {
                None | Some(Value::Null) => {}
                Some(v @ Value::String(_)) => out.hints.push(((*key).to_string(), v.clone())),
                Some(v) => return Err(expected(key, "a string", v)),
            }
        }
        Ok(out)
    }
}

fn missing(param: String) -> ApiError {
    ApiError::invalid(param, "Missing required parameter.").with_code("missing_required_parameter")
}

/// A function name as OpenAI allows it.
pub(crate) fn check_name(param: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!(
                "Invalid name {name:?}: 1 to 64 characters of a-z, A-Z, 0-9, underscores and dashes."
            ),
        ))
    }
}

fn tools(v: Option<&Value>) -> Result<Vec<Tool>, ApiError> {
    let a = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(expected("tools", "an array", v)),
    };
    if a.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!("At most {MAX_TOOLS} tools are allowed; got {}.", a.len()),
        ));
    }
    let mut out: Vec<Tool> = Vec::with_capacity(a.len());
    for (i, t) in a.iter().enumerate() {
        let p = format!("tools[{i}]");
        let Value::Object(t) = t else {
            return Err(expected(&p, "an object", t));
        };
        for key in t.keys() {
            if key != "type" && key != "function" {
                return Err(ApiError::invalid(
                    format!("{p}.{key}"),
                    format!("Unrecognized tool field `{key}`."),
                )
                .with_code("unknown_parameter"));
            }
        }
        match t.get("type") {
            Some(Value::String(k)) if k == "function" => {}
            Some(Value::String(k)) => {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    format!("Tools of type `{k}` are not supported; only `function` is."),
                )
                .with_code("unsupported_parameter"));
            }
            Some(v) => return Err(expected(&format!("{p}.type"), "a string", v)),
            None => return Err(missing(format!("{p}.type"))),
        }
        let f = match t.get("function") {
            Some(Value::Object(f)) => f,
            Some(v) => return Err(expected(&format!("{p}.function"), "an object", v)),
            None => return Err(missing(format!("{p}.function"))),
        };
        for key in f.keys() {
            if !matches!(
                key.as_str(),
                "name" | "description" | "parameters" | "strict"
            ) {
                return Err(ApiError::invalid(
                    format!("{p}.function.{key}"),
                    format!("Unrecognized function field `{key}`."),
                )
                .with_code("unknown_parameter"));
            }
        }
        let name = match f.get("name") {
            Some(Value::String(n)) => n.clone(),
            Some(v) => return Err(expected(&format!("{p}.function.name"), "a string", v)),
            None => return Err(missing(format!("{p}.function.name"))),
        };
        check_name(&format!("{p}.function.name"), &name)?;
        if out.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid(
                format!("{p}.function.name"),
                format!("Two tools are named `{name}`; names must be unique."),
            ));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(v) => {
                return Err(expected(
                    &format!("{p}.function.description"),
                    "a string",
                    v,
                ));
            }
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(v) => {
                return Err(expected(
                    &format!("{p}.function.parameters"),
                    "a JSON Schema object",
                    v,
                ));
            }
        };
        let strict = match f.get("strict") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => return Err(expected(&format!("{p}.function.strict"), "a boolean", v)),
        };
        out.push(Tool {
            name,
            description,
            parameters,
            strict,
        });
    }
    Ok(out)
}

fn tool_choice(v: Option<&Value>, tools: &[Tool]) -> Result<Option<ToolChoice>, ApiError> {
    let choice = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "Invalid `tool_choice` `{other}`; expected `auto`, `none`, `required` or a function."
                    ),
                ));
            }
        },
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    "`tool_choice.type` must be `function`.",
                ));
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| missing("tool_choice.function.name".into()))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice` names `{name}`, which is not among `tools`."),
                ));
            }
            ToolChoice::Function(name.to_string())
        }
        Some(v) => return Err(expected("tool_choice", "a string or an object", v)),
    };
    if tools.is_empty() && choice != ToolChoice::None {
        return Err(ApiError::invalid(
            "tool_choice",
            "`tool_choice` is only allowed when `tools` are given.",
        ));
    }
    Ok(Some(choice))
}

fn response_format(v: Option<&Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let rf = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(rf)) => rf,
        Some(v) => return Err(expected("response_format", "an object", v)),
    };
    let format = match rf.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "text" => ResponseFormat::Text,
            "json_object" => ResponseFormat::JsonObject,
            "json_schema" => {
                let j = match rf.get("json_schema") {
                    Some(Value::Object(j)) => j,
                    Some(v) => {
                        return Err(expected("response_format.json_schema", "an object", v));
                    }
                    None => return Err(missing("response_format.json_schema".into())),
                };
                let name = match j.get("name") {
                    Some(Value::String(n)) => n.clone(),
                    Some(v) => {
                        return Err(expected("response_format.json_schema.name", "a string", v));
                    }
                    None => return Err(missing("response_format.json_schema.name".into())),
                };
                check_name("response_format.json_schema.name", &name)?;
                let schema = match j.get("schema") {
                    None | Some(Value::Null) => None,
                    Some(v @ Value::Object(_)) => Some(v.clone()),
                    Some(v) => {
                        return Err(expected(
                            "response_format.json_schema.schema",
                            "a JSON Schema object",
                            v,
                        ));
                    }
                };
                let description = j
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let strict = match j.get("strict") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(v) => {
                        return Err(expected(
                            "response_format.json_schema.strict",
                            "a boolean",
                            v,
                        ));
                    }
                };
                ResponseFormat::JsonSchema(JsonSchema {
                    name,
                    description,
                    schema,
                    strict,
                })
            }
            other => {
                return Err(ApiError::invalid(
                    "response_format.type",
                    format!(
                        "Invalid `response_format.type` `{other}`; expected `text`, `json_object` or `json_schema`."
                    ),
                ));
            }
        },
        Some(v) => return Err(expected("response_format.type", "a string", v)),
        None => return Err(missing("response_format.type".into())),
    };
    Ok(Some(format))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use serde_json::{Value, json};

    use crate::{ChatRequest, ValidationLimits};

    fn parse(extra: Value) -> Result<ChatRequest, crate::ApiError> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ChatRequest::from_value(
            &body,
            ValidationLimits {
                max_input_chars: 1000,
            },
        )
    }

    fn refused(extra: Value) -> (String, &'static str) {
        let e = parse(extra).unwrap_err();
        assert_eq!(e.status, 400);
        (e.param.unwrap_or_default(), e.code.unwrap_or_default())
    }

    #[test]
    fn every_field_a_current_client_sends_is_known() {
        let r = parse(json!({
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
            "logprobs": true, "top_logprobs": 3, "frequency_penalty": 0.1, "presence_penalty": -0.1,
            "logit_bias": {"50256": -100}, "reasoning_effort": "minimal",
            "prediction": {"type": "content", "content": "x"}, "modalities": ["text"],
            "metadata": {"k": "v"}, "store": false, "service_tier": "auto", "n": 1,
            "verbosity": "low", "prompt_cache_key": "k", "safety_identifier": "u1",
            "stream": true, "stream_options": {"include_usage": true}, "user": "u", "seed": 1,
            "max_completion_tokens": 5, "stop": ["x"], "temperature": 0.5, "top_p": 0.9,
        }))
        .unwrap();
        let o = &r.options;
        assert_eq!(o.tools.len(), 1);
        assert_eq!(o.tool_choice, Some(crate::ToolChoice::Required));
        assert_eq!(o.top_logprobs, Some(3));
        assert_eq!(o.hints.len(), 4);
    }

    #[test]
    fn bad_options_are_refused_naming_the_field() {
        let tool = json!({"type": "function", "function": {"name": "f"}});
        for (extra, param, code) in [
            (json!({"bogus": 1}), "bogus", "unknown_parameter"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
                "tools[0].function.name",
                "invalid_value",
            ),
            (
                json!({"tools": [{"type": "code_interpreter"}]}),
                "tools[0].type",
                "unsupported_parameter",
            ),
            (
                json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
                "tool_choice.function.name",
                "invalid_value",
            ),
            (
                json!({"tool_choice": "auto"}),
                "tool_choice",
                "invalid_value",
            ),
            (json!({"n": 2}), "n", "unsupported_parameter"),
            (json!({"store": true}), "store", "unsupported_parameter"),
            (json!({"top_logprobs": 2}), "top_logprobs", "invalid_value"),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
                "missing_required_parameter",
            ),
            (
                json!({"modalities": ["text", "audio"]}),
                "modalities[1]",
                "unsupported_parameter",
            ),
            (
                json!({"functions": []}),
                "functions",
                "unsupported_parameter",
            ),
            (
                json!({"logit_bias": {"x": 1}}),
                "logit_bias.x",
                "invalid_value",
            ),
            (
                json!({"reasoning_effort": "max"}),
                "reasoning_effort",
                "invalid_value",
            ),
        ] {
            assert_eq!(refused(extra.clone()), (param.into(), code), "{extra}");
        }
    }

    #[test]
    fn tool_history_and_parts_are_checked() {
        let call = json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let ok = parse(json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ]}))
        .unwrap();
        assert_eq!(ok.messages[0].parts.len(), 2);
        assert_eq!(ok.messages[1].tool_calls[0].name, "f");
        assert_eq!(ok.messages[2].tool_call_id.as_deref(), Some("call_1"));
        for (messages, param) in [
            (
                json!([{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]),
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "1"}]),
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}, {"role": "user", "content": "a"}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": "a", "tool_calls": []}]),
                "messages[0].tool_calls",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
        ] {
            assert_eq!(
                refused(json!({"messages": messages.clone()})).0,
                param,
                "{messages}"
            );
        }
    }
}
