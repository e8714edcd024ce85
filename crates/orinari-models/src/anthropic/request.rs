//! The Messages API request for an OpenAI-shaped [`GenerateRequest`]:
//! system messages lifted out, consecutive turns of one role merged (the
//! API wants them alternating), `tool` results sent as `tool_result`
//! blocks in a user turn, assistant `tool_calls` as `tool_use` blocks,
//! images as `image` blocks, tools and `tool_choice` mapped.
//!
//! JSON output (`response_format` `json_object` / `json_schema`) has no
//! Messages API field: it is asked for in the system prompt, with the
//! schema when there is one (the prompt approach; the model is not
//! constrained, so a client that must have valid JSON validates it).

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

use super::DEFAULT_MAX_TOKENS;
use crate::{ContentPart, GenerateRequest, Message, ResponseFormat, ToolChoice};

/// The Messages API request body, written from the request.
#[derive(Serialize)]
pub struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<Turn<'a>>,
    max_tokens: u32,
    stream: bool,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

/// One turn: its role and blocks (written as one string when every block
/// is text, as most turns are).
pub struct Turn<'a> {
    role: &'static str,
    blocks: Vec<Block<'a>>,
}

/// One content block.
enum Block<'a> {
    Text(&'a str),
    Image(&'a str),
    ToolUse {
        id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    ToolResult {
        id: &'a str,
        content: &'a str,
    },
}

impl Serialize for Turn<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("role", self.role)?;
        if self.blocks.iter().all(|b| matches!(b, Block::Text(_))) {
            let texts: Vec<&str> = self
                .blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Text(t) => Some(*t),
                    _ => None,
                })
                .collect();
            m.serialize_entry("content", &texts.join("\n\n"))?;
        } else {
            let blocks: Vec<Value> = self.blocks.iter().filter_map(Block::to_json).collect();
            m.serialize_entry("content", &blocks)?;
        }
        m.end()
    }
}

impl Block<'_> {
    fn to_json(&self) -> Option<Value> {
        Some(match self {
            // The API refuses empty text blocks.
            Self::Text("") => return None,
            Self::Text(t) => json!({"type": "text", "text": t}),
            Self::Image(url) => json!({"type": "image", "source": image_source(url)}),
            Self::ToolUse {
                id,
                name,
                arguments,
            } => {
                // Arguments are JSON text; anything else goes as a string
                // field rather than failing the whole request.
                let input = serde_json::from_str::<Value>(arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({ "arguments": arguments }));
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
            Self::ToolResult { id, content } => {
                json!({"type": "tool_result", "tool_use_id": id, "content": content})
            }
        })
    }
}

/// `data:image/png;base64,…` → a base64 source; any other URL → a URL source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "base64", "media_type": media, "data": data});
    }
    json!({"type": "url", "url": url})
}

fn blocks(m: &Message) -> Vec<Block<'_>> {
    if let Some(id) = &m.tool_call_id {
        return vec![Block::ToolResult {
            id,
            content: &m.content,
        }];
    }
    let mut out: Vec<Block<'_>> = if m.parts.is_empty() {
        vec![Block::Text(&m.content)]
    } else {
        m.parts
            .iter()
            .map(|p| match p {
                ContentPart::Text(t) => Block::Text(t),
                ContentPart::Image { url, .. } => Block::Image(url),
            })
            .collect()
    };
    out.extend(m.tool_calls.iter().map(|c| Block::ToolUse {
        id: &c.id,
        name: &c.name,
        arguments: &c.arguments,
    }));
    out
}

/// The system prompt's addition that asks for JSON.
fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => {
            Some("Answer with one JSON object and nothing else: no prose, no code fences.".into())
        }
        ResponseFormat::JsonSchema(j) => Some(format!(
            "Answer with one JSON object and nothing else (no prose, no code fences) that validates against this JSON Schema, named {}: {}",
            j.name,
            j.schema
                .as_ref()
                .map_or_else(|| "{}".to_string(), Value::to_string)
        )),
    }
}

/// The Messages API request body for an OpenAI-shaped request.
pub fn request_body<'a>(model: &'a str, r: &'a GenerateRequest) -> RequestBody<'a> {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::new();
    for m in &r.messages {
        if m.role == "system" || m.role == "developer" {
            system.push(m.content.as_str());
            continue;
        }
        // Tool results travel in a user turn.
        let role = if m.role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        let new = blocks(m);
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(new),
            _ => turns.push(Turn { role, blocks: new }),
        }
    }
    // The Messages API starts with a user turn.
    if turns.first().is_some_and(|t| t.role == "assistant") {
        turns.insert(
            0,
            Turn {
                role: "user",
                blocks: vec![Block::Text("")],
            },
        );
    }
    let o = &r.options;
    let mut system = system.join("\n\n");
    if let Some(extra) = o.response_format.as_ref().and_then(json_instruction) {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&extra);
    }
    let tools: Vec<Value> = o
        .tools
        .iter()
        .map(|t| {
            let mut tool = json!({
                "name": t.name,
                "input_schema": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = &t.description {
                tool["description"] = json!(d);
            }
            tool
        })
        .collect();
    let mut tool_choice = match &o.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if o.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    RequestBody {
        model,
        messages: turns,
        max_tokens: r.sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        stream: r.stream,
        // OpenAI allows temperatures up to 2, Anthropic up to 1.
        temperature: r.sampling.temperature.clamp(0.0, 1.0),
        system: (!system.is_empty()).then_some(system),
        top_p: (r.sampling.top_p > 0.0 && r.sampling.top_p < 1.0).then_some(r.sampling.top_p),
        stop_sequences: &r.sampling.stop,
        tools,
        tool_choice,
    }
}

/// The first field the Messages API has no counterpart for, or `None`.
pub fn unsupported(r: &GenerateRequest) -> Option<&'static str> {
    let o = &r.options;
    if o.logprobs {
        return Some("logprobs");
    }
    if o.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Some("frequency_penalty");
    }
    if o.presence_penalty.is_some_and(|p| p != 0.0) {
        return Some("presence_penalty");
    }
    if o.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Some("logit_bias");
    }
    if o.reasoning_effort.is_some() {
        return Some("reasoning_effort");
    }
    if o.prediction.is_some() {
        return Some("prediction");
    }
    None
}
