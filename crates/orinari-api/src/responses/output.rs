//! A Responses API answer: the `response` object (whole), and the stream's
//! semantic events in OpenAI's order (`response.created`,
//! `response.in_progress`, per output item `response.output_item.added`,
//! its content part or argument deltas and their `….done` events,
//! `response.output_item.done`, then `response.completed` or
//! `response.incomplete`), each with its `sequence_number` ([`StreamWriter`]).

use serde_json::{Map, Value, json};

use crate::ApiError;
use crate::tools::{ToolCall, ToolCallDelta};

/// What every `response` object of one answer shares: its id, time,
/// model, and the request fields it repeats (`instructions`, `tools`,
/// `text`, …).
#[derive(Debug, Clone)]
pub struct ResponseHead {
    id: String,
    created_at: u64,
    model: String,
    echo: Map<String, Value>,
}

/// `status` and `incomplete_details.reason` for an OpenAI finish reason.
fn outcome(finish_reason: &str) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        "length" => ("incomplete", Some("max_output_tokens")),
        "content_filter" => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

fn usage(input_tokens: u32, output_tokens: u32) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u64::from(input_tokens) + u64::from(output_tokens),
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": arguments,
        "call_id": call_id, "name": name})
}

impl ResponseHead {
    /// `id`: `resp_…`; `echo`: the request fields the object repeats
    /// (from [`super::ResponsesRequest`]).
    pub fn new(id: String, created_at: u64, model: String, echo: Map<String, Value>) -> Self {
        Self {
            id,
            created_at,
            model,
            echo,
        }
    }

    /// The id of the answer's `n`th output item (`msg_…`, `fc_…`) or
    /// generated call id (`call_…`).
    fn item_id(&self, prefix: &str, n: usize) -> String {
        let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{base}{n:02}")
    }

    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        incomplete: Option<&str>,
        error: Value,
    ) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created_at));
        o.insert("status".into(), json!(status));
        o.insert("error".into(), error);
        o.insert(
            "incomplete_details".into(),
            incomplete.map_or(Value::Null, |r| json!({"reason": r})),
        );
        o.insert("model".into(), json!(self.model));
        o.insert("output".into(), Value::Array(output));
        o.insert("usage".into(), usage);
        for (k, v) in &self.echo {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }
}

/// A whole answer as a `response` object: a `message` item with the text
/// (when there is text, or nothing else), then one `function_call` item
/// per tool call.
pub fn response_json(
    head: &ResponseHead,
    text: &str,
    calls: &[ToolCall],
    finish_reason: &str,
    input_tokens: u32,
    output_tokens: u32,
) -> Value {
    let (status, incomplete) = outcome(finish_reason);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let mut output = Vec::new();
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(
            &head.item_id("msg", 0),
            item_status,
            vec![text_part(text)],
        ));
    }
    for c in calls {
        let n = output.len();
        output.push(call_item(
            &head.item_id("fc", n),
            "completed",
            &c.id,
            &c.name,
            &c.arguments,
        ));
    }
    head.object(
        status,
        output,
        usage(input_tokens, output_tokens),
        incomplete,
        Value::Null,
    )
}

/// One output item as it is streamed.
#[derive(Debug)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes a stream's semantic events, numbering them, and keeps the
/// output so far for the final `response` object.
#[derive(Debug)]
pub struct StreamWriter {
    head: ResponseHead,
    sequence: u64,
    items: Vec<Item>,
    /// The item being written, if one is open.
    open: Option<usize>,
    /// The item of each tool call, by the call's index in the answer.
    calls: Vec<usize>,
}

impl StreamWriter {
    /// A writer for one answer's stream.
    pub fn new(head: ResponseHead) -> Self {
        Self {
            head,
            sequence: 0,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
        }
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        let r = self
            .head
            .object("in_progress", Vec::new(), Value::Null, None, Value::Null);
        self.event(out, "response.created", json!({"response": r}));
        self.event(out, "response.in_progress", json!({"response": r}));
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Value::Object(o) = &mut data {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        out.extend_from_slice(format!("event: {kind}\ndata: {data}\n\n").as_bytes());
    }

    /// The item as it stands (`status` given).
    fn item_json(&self, n: usize, status: &str) -> Value {
        match &self.items[n] {
            Item::Message { id, text } => message_item(id, status, vec![text_part(text)]),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
            } => call_item(id, status, call_id, name, arguments),
        }
    }

    /// Close the open item: its `….done` events.
    fn close(&mut self, out: &mut Vec<u8>, status: &str) {
        let Some(n) = self.open.take() else { return };
        match &self.items[n] {
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": n, "content_index": 0,
                        "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": n, "content_index": 0,
                        "part": text_part(&text)}),
                );
            }
            Item::Call {
                id,
                name,
                arguments,
                ..
            } => {
                let data = json!({"item_id": id, "output_index": n, "name": name,
                    "arguments": arguments});
                self.event(out, "response.function_call_arguments.done", data);
            }
        }
        let item = self.item_json(n, status);
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": n, "item": item}),
        );
    }

    /// More text: a new `message` item (and its `output_text` part) unless
    /// one is open, then `response.output_text.delta`.
    pub fn text(&mut self, out: &mut Vec<u8>, delta: &str) {
        if delta.is_empty() {
            return;
        }
        let n = match self.open {
            Some(n) if matches!(self.items[n], Item::Message { .. }) => n,
            _ => {
                self.close(out, "completed");
                let n = self.items.len();
                let id = self.head.item_id("msg", n);
                self.items.push(Item::Message {
                    id: id.clone(),
                    text: String::new(),
                });
                self.open = Some(n);
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": n, "item": message_item(&id, "in_progress", Vec::new())}),
                );
                self.event(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": n, "content_index": 0,
                        "part": text_part("")}),
                );
                n
            }
        };
        let id = match &mut self.items[n] {
            Item::Message { id, text } => {
                text.push_str(delta);
                id.clone()
            }
            Item::Call { id, .. } => id.clone(),
        };
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": n, "content_index": 0, "delta": delta,
                "logprobs": []}),
        );
    }

    /// A piece of a tool call: a new `function_call` item on its first
    /// piece, then `response.function_call_arguments.delta`.
    pub fn tool_call(&mut self, out: &mut Vec<u8>, d: &ToolCallDelta) {
        let known = self.calls.get(d.index as usize).copied();
        let n = match known {
            Some(n) => n,
            None => {
                self.close(out, "completed");
                let n = self.items.len();
                let id = self.head.item_id("fc", n);
                let call_id = d.id.clone().unwrap_or_else(|| self.head.item_id("call", n));
                let name = d.name.clone().unwrap_or_default();
                let added = call_item(&id, "in_progress", &call_id, &name, "");
                self.items.push(Item::Call {
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                });
                self.calls.push(n);
                self.open = Some(n);
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": n, "item": added}),
                );
                n
            }
        };
        let Item::Call {
            id,
            name,
            arguments,
            ..
        } = &mut self.items[n]
        else {
            return;
        };
        // A name split over pieces (as `ToolCalls` joins them).
        if known.is_some()
            && let Some(more) = &d.name
        {
            name.push_str(more);
        }
        arguments.push_str(&d.arguments);
        let id = id.clone();
        if !d.arguments.is_empty() {
            self.event(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": n, "delta": d.arguments}),
            );
        }
    }

    /// The end: the open item's `….done` events, then `response.completed`
    /// (or `response.incomplete` when the answer was cut short) with the
    /// whole output and the usage.
    pub fn finish(
        &mut self,
        out: &mut Vec<u8>,
        finish_reason: &str,
        input_tokens: u32,
        output_tokens: u32,
    ) {
        let (status, incomplete) = outcome(finish_reason);
        // Only the item that was being written when the answer was cut
        // short is incomplete.
        let last = if status == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        self.close(out, last);
        let count = self.items.len();
        let output = (0..count)
            .map(|n| self.item_json(n, if n + 1 == count { last } else { "completed" }))
            .collect();
        let r = self.head.object(
            status,
            output,
            usage(input_tokens, output_tokens),
            incomplete,
            Value::Null,
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(out, kind, json!({"response": r}));
    }

    /// A failure after the stream started: `response.failed` (the output
    /// so far, `error` set), an `error` event carrying the OpenAI error
    /// envelope too, and `data: [DONE]`; the stream ends there.
    pub fn fail(&mut self, out: &mut Vec<u8>, e: &ApiError) {
        let output = (0..self.items.len())
            .map(|n| self.item_json(n, "incomplete"))
            .collect();
        let code = if e.status == 429 {
            "rate_limit_exceeded"
        } else {
            "server_error"
        };
        let r = self.head.object(
            "failed",
            output,
            Value::Null,
            None,
            json!({"code": code, "message": e.message}),
        );
        self.event(out, "response.failed", json!({"response": r}));
        let envelope: Value = serde_json::from_str(&e.to_json()).unwrap_or(Value::Null);
        let data = json!({"code": e.code, "message": e.message, "param": e.param,
            "error": envelope["error"]});
        self.event(out, "error", data);
        out.extend_from_slice(crate::sse::DONE.as_bytes());
    }
}
