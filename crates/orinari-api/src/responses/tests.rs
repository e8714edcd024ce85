//! The Responses API's request mapping, refusals and event order.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use serde_json::{Value, json};

use super::*;
use crate::tools::{ResponseFormat, ToolCallDelta, ToolChoice};

fn limits() -> ValidationLimits {
    ValidationLimits {
        max_input_chars: 1000,
    }
}

fn parsed(body: Value) -> Result<ResponsesRequest, ApiError> {
    parse(body.to_string().as_bytes(), limits())
}

fn weather() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true})
}

#[test]
fn input_items_become_the_conversation() {
    let r = parsed(json!({
        "model": "m", "instructions": "be brief", "max_output_tokens": 50, "stream": true,
        "tools": [weather()], "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false, "include": [], "store": false, "metadata": {"k": "v"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true},
            "verbosity": "low"},
        "reasoning": {"effort": "low"}, "truncation": "disabled", "service_tier": "auto",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather "},
                {"type": "input_image", "image_url": "https://example.org/a.png", "detail": "low"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}", "id": "fc_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"role": "developer", "content": "answer in French"},
        ],
    }))
    .unwrap();
    let c = &r.chat;
    let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::System
        ]
    );
    assert_eq!(c.messages[1].content, "Weather ");
    assert_eq!(c.messages[1].parts.len(), 2);
    assert_eq!(c.messages[2].content, "Let me look.");
    assert_eq!(c.messages[2].tool_calls[0].id, "call_1");
    assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(c.max_tokens, Some(50));
    assert!(c.stream);
    let o = &c.options;
    assert_eq!(o.tools[0].name, "get_weather");
    assert_eq!(o.tools[0].strict, Some(true));
    assert_eq!(
        o.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    assert_eq!(o.parallel_tool_calls, Some(false));
    assert!(matches!(&o.response_format, Some(ResponseFormat::JsonSchema(j)) if j.name == "w"));
    assert_eq!(o.reasoning_effort.as_deref(), Some("low"));
    assert_eq!(o.hints.len(), 2, "{:?}", o.hints);
    assert_eq!(r.echo["store"], false);
    assert_eq!(r.echo["instructions"], "be brief");
    assert_eq!(r.echo["tools"][0]["name"], "get_weather");
    assert_eq!(r.echo["text"]["format"]["type"], "json_schema");

    let r = parsed(json!({"model": "m", "input": "hi"})).unwrap();
    assert_eq!(r.chat.messages.len(), 1);
    assert_eq!(r.chat.messages[0].content, "hi");
    assert!(!r.chat.stream);
}

#[test]
fn allowed_tools_narrow_the_tools() {
    let clock = json!({"type": "function", "name": "clock", "parameters": null, "strict": null});
    let r = parsed(
        json!({"model": "m", "input": "x", "tools": [weather(), clock],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
            "tools": [{"type": "function", "name": "clock"}]}}),
    )
    .unwrap();
    assert_eq!(r.chat.options.tools.len(), 1);
    assert_eq!(r.chat.options.tools[0].name, "clock");
    assert_eq!(r.chat.options.tool_choice, Some(ToolChoice::Required));
}

#[test]
fn every_refusal_names_its_field() {
    let cases = [
        (json!({"store": true}), "store", "unsupported_parameter"),
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
            "unsupported_parameter",
        ),
        (
            json!({"conversation": "conv_1"}),
            "conversation",
            "unsupported_parameter",
        ),
        (
            json!({"background": true}),
            "background",
            "unsupported_parameter",
        ),
        (
            json!({"prompt": {"id": "pmpt_1"}}),
            "prompt",
            "unsupported_parameter",
        ),
        (
            json!({"tools": [{"type": "web_search"}]}),
            "tools[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"tools": [{"type": "file_search", "vector_store_ids": []}]}),
            "tools[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"tools": [{"type": "function", "name": "bad name"}]}),
            "tools[0].name",
            "invalid_value",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "parameters": 3}]}),
            "tools[0].parameters",
            "invalid_type",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "bogus": 1}]}),
            "tools[0].bogus",
            "unknown_parameter",
        ),
        (
            json!({"tool_choice": {"type": "web_search_preview"}}),
            "tool_choice.type",
            "unsupported_parameter",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "function", "name": "nope"}}),
            "tool_choice.name",
            "invalid_value",
        ),
        (
            json!({"text": {"format": {"type": "xml"}}}),
            "text.format.type",
            "invalid_value",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "x"}}}),
            "text.format.schema",
            "missing_required_parameter",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "a b", "schema": {}}}}),
            "text.format.name",
            "invalid_value",
        ),
        (
            json!({"max_output_tokens": 0}),
            "max_output_tokens",
            "invalid_value",
        ),
        (
            json!({"reasoning": {"effort": "huge"}}),
            "reasoning.effort",
            "invalid_value",
        ),
        (
            json!({"reasoning": {"summary": "auto"}}),
            "reasoning.summary",
            "unsupported_parameter",
        ),
        (
            json!({"include": ["message.output_text.logprobs"]}),
            "include[0]",
            "unsupported_parameter",
        ),
        (
            json!({"truncation": "auto"}),
            "truncation",
            "unsupported_parameter",
        ),
        (
            json!({"top_logprobs": 3}),
            "top_logprobs",
            "unsupported_parameter",
        ),
        (json!({"temperature": 3}), "temperature", "invalid_value"),
        (
            json!({"tempreature": 1}),
            "tempreature",
            "unknown_parameter",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]}),
            "input[0].call_id",
            "invalid_value",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
            "invalid_value",
        ),
        (
            json!({"input": [{"role": "user", "content": "x", "colour": 1}]}),
            "input[0].colour",
            "unknown_parameter",
        ),
        (
            json!({"input": [{"role": "assistant", "content": "x"}]}),
            "input",
            "invalid_value",
        ),
        (
            json!({"orinari": {"cache": "off"}}),
            "orinari.cache",
            "invalid_type",
        ),
    ];
    for (extra, param, code) in cases {
        let mut body = json!({"model": "m", "input": "hi"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = parsed(body).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{extra}: {e:?}");
        assert_eq!(e.code, Some(code), "{extra}: {e:?}");
        assert!(!e.message.contains("response_format"), "{e:?}");
        assert!(!e.message.contains(".function."), "{e:?}");
    }
    let e = parsed(json!({"model": "m"})).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("input"));
}

#[test]
fn the_orinari_extension_is_read_as_on_chat_completions() {
    let r = parsed(json!({"model": "m", "input": "hi", "orinari": {"cache": false}})).unwrap();
    assert_eq!(r.chat.cache, Some(false));
    assert_eq!(
        parsed(json!({"model": "m", "input": "hi"}))
            .unwrap()
            .chat
            .cache,
        None
    );
}

fn head() -> ResponseHead {
    let mut echo = Map::new();
    echo.insert("store".into(), json!(false));
    ResponseHead::new("resp_abc".into(), 1, "m".into(), echo)
}

#[test]
fn a_whole_answer_is_a_response_object() {
    let calls = [crate::ToolCall {
        id: "call_1".into(),
        name: "f".into(),
        arguments: "{}".into(),
    }];
    let v = response_json(&head(), "", &calls, "tool_calls", 5, 3);
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
    assert_eq!(v["output"][0]["type"], "function_call");
    assert_eq!(v["output"][0]["call_id"], "call_1");
    assert_eq!(v["usage"]["total_tokens"], 8);
    let v = response_json(&head(), "Hi", &[], "length", 5, 3);
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hi");
}

fn parse_events(out: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| e.starts_with("event: "))
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name["event: ".len()..].to_string(), data)
        })
        .collect()
}

#[test]
fn stream_events_come_in_openais_order() {
    let mut out = Vec::new();
    let mut w = StreamWriter::new(head());
    w.start(&mut out);
    w.text(&mut out, "Hel");
    w.text(&mut out, "lo");
    w.tool_call(
        &mut out,
        &ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("f".into()),
            arguments: String::new(),
        },
    );
    w.tool_call(
        &mut out,
        &ToolCallDelta {
            index: 0,
            arguments: "{\"a\":1}".into(),
            ..ToolCallDelta::default()
        },
    );
    w.finish(&mut out, "tool_calls", 4, 2);
    let events = parse_events(&out);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[6].1["text"], "Hello");
    assert_eq!(events[11].1["arguments"], "{\"a\":1}");
    let done = &events[13].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["call_id"], "call_1");
    assert_eq!(done["output"][1]["id"], events[9].1["item"]["id"]);
    assert_eq!(done["usage"]["output_tokens"], 2);

    let mut out = Vec::new();
    let mut w = StreamWriter::new(head());
    w.start(&mut out);
    w.text(&mut out, "x");
    w.fail(&mut out, &ApiError::upstream_failed("the upstream failed"));
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events = parse_events(&out);
    let (name, data) = &events[events.len() - 2];
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
    assert_eq!(data["response"]["error"]["code"], "server_error");
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "server_error");
    assert_eq!(data["code"], "upstream_error");
}
