//! Tools, tool calls, content parts and response formats: the OpenAI wire
//! shapes that requests and answers share, serialized exactly as OpenAI
//! writes them (so an upstream gets them, and a client reads them, unchanged).

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A function the model may call (`tools[i]`, `type: "function"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments as a JSON Schema object.
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly.
    pub strict: Option<bool>,
}

impl Serialize for Tool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            parameters: Option<&'a Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            strict: Option<bool>,
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("type", "function")?;
        m.serialize_entry(
            "function",
            &Function {
                name: &self.name,
                description: self.description.as_deref(),
                parameters: self.parameters.as_ref(),
                strict: self.strict,
            },
        )?;
        m.end()
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool is called.
    None,
    /// At least one tool is called.
    Required,
    /// This function is called.
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::None => s.serialize_str("none"),
            Self::Required => s.serialize_str("required"),
            Self::Function(name) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", "function")?;
                m.serialize_entry("function", &serde_json::json!({ "name": name }))?;
                m.end()
            }
        }
    }
}

/// A call the model made (an assistant message's `tool_calls[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// `call_…`, echoed by the `tool` message that answers it.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON object as text (as the model wrote it).
    pub arguments: String,
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("type", "function")?;
        m.serialize_entry(
            "function",
            &serde_json::json!({ "name": self.name, "arguments": self.arguments }),
        )?;
        m.end()
    }
}

/// A piece of a tool call in a stream (`delta.tool_calls[i]`): the first
/// piece of a call carries its `id` and name, later ones more arguments.
/// A whole answer's call is one piece with everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, …).
    pub index: u32,
    /// Set on a call's first piece.
    pub id: Option<String>,
    /// Set on a call's first piece.
    pub name: Option<String>,
    /// More argument text (may be empty).
    pub arguments: String,
}

impl Serialize for ToolCallDelta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
            arguments: &'a str,
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("index", &self.index)?;
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
            m.serialize_entry("type", "function")?;
        }
        m.serialize_entry(
            "function",
            &Function {
                name: self.name.as_deref(),
                arguments: &self.arguments,
            },
        )?;
        m.end()
    }
}

/// Joins streamed [`ToolCallDelta`]s into whole [`ToolCall`]s, by index.
#[derive(Debug, Clone, Default)]
pub struct ToolCalls(Vec<ToolCall>);

impl ToolCalls {
    /// Add one piece.
    pub fn push(&mut self, d: &ToolCallDelta) {
        let i = d.index as usize;
        // Indexes come from upstreams: bound them by what has been seen
        // (a gap opens one new call, never a huge allocation).
        let i = i.min(self.0.len());
        if i == self.0.len() {
            self.0.push(ToolCall::default());
        }
        let call = &mut self.0[i];
        if let Some(id) = &d.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &d.name {
            call.name.push_str(name);
        }
        call.arguments.push_str(&d.arguments);
    }

    /// Whether no call was made.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The calls, in order.
    pub fn into_vec(self) -> Vec<ToolCall> {
        self.0
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// An image by URL (`https://…` or a `data:` URL).
    Image {
        /// The URL.
        url: String,
        /// `auto`, `low` or `high`.
        detail: Option<String>,
    },
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            Self::Text(t) => {
                m.serialize_entry("type", "text")?;
                m.serialize_entry("text", t)?;
            }
            Self::Image { url, detail } => {
                m.serialize_entry("type", "image_url")?;
                let mut image = serde_json::Map::new();
                image.insert("url".into(), Value::String(url.clone()));
                if let Some(d) = detail {
                    image.insert("detail".into(), Value::String(d.clone()));
                }
                m.serialize_entry("image_url", &image)?;
            }
        }
        m.end()
    }
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema(JsonSchema),
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    /// Its name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What the answer is, for the model.
    pub description: Option<String>,
    /// The schema.
    pub schema: Option<Value>,
    /// Whether the answer must follow it exactly.
    pub strict: Option<bool>,
}

impl Serialize for ResponseFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Self::Text => m.serialize_entry("type", "text")?,
            Self::JsonObject => m.serialize_entry("type", "json_object")?,
            Self::JsonSchema(j) => {
                m.serialize_entry("type", "json_schema")?;
                let mut o = serde_json::Map::new();
                o.insert("name".into(), Value::String(j.name.clone()));
                if let Some(d) = &j.description {
                    o.insert("description".into(), Value::String(d.clone()));
                }
                if let Some(schema) = &j.schema {
                    o.insert("schema".into(), schema.clone());
                }
                if let Some(strict) = j.strict {
                    o.insert("strict".into(), Value::Bool(strict));
                }
                m.serialize_entry("json_schema", &o)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_openais() {
        let t = Tool {
            name: "get_weather".into(),
            description: None,
            parameters: Some(json!({"type": "object"})),
            strict: Some(true),
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": true}})
        );
        assert_eq!(
            serde_json::to_value(ToolChoice::Function("f".into())).unwrap(),
            json!({"type": "function", "function": {"name": "f"}})
        );
        let first = ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("f".into()),
            arguments: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        let more = ToolCallDelta {
            index: 0,
            arguments: "{\"a\"".into(),
            ..ToolCallDelta::default()
        };
        assert_eq!(
            serde_json::to_value(&more).unwrap(),
            json!({"index": 0, "function": {"arguments": "{\"a\""}})
        );
        let mut calls = ToolCalls::default();
        calls.push(&first);
        calls.push(&more);
        calls.push(&ToolCallDelta {
            index: 0,
            arguments: ":1}".into(),
            ..ToolCallDelta::default()
        });
        assert_eq!(
            calls.into_vec(),
            vec![ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into()
            }]
        );
    }
}
