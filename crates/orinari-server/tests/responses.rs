//! `POST /v1/responses` through the real server: whole and streamed text,
//! a function call round trip and `text.format` JSON through the OpenAI
//! and Anthropic adapters to the in-repo fake upstream (which really emits
//! tool calls), the embedded model, and every refusal naming its field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

mod common;

use common::upstream::{App, serve, spec};
use orinari_fake_upstream::{FakeUpstream, Faults, wire_text};
use serde_json::{Value, json};

fn weather() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]},
        "strict": true})
}

impl App {
    async fn respond(&self, body: &Value) -> (u16, String) {
        self.post_to("/v1/responses", body).await
    }

    async fn whole(&self, body: &Value) -> Value {
        let (status, text) = self.respond(body).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn events(&self, body: &Value) -> Vec<(String, Value)> {
        let (status, text) = self.respond(body).await;
        assert_eq!(status, 200, "{text}");
        events(&text)
    }
}

/// `(event, data)` of each SSE event, checked: `type` is the event's name
/// and `sequence_number` counts from 0.
fn events(text: &str) -> Vec<(String, Value)> {
    let out: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: "))
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let data = data.strip_prefix("data: ").unwrap();
            (
                name["event: ".len()..].to_string(),
                serde_json::from_str(data).unwrap(),
            )
        })
        .collect();
    for (i, (name, data)) in out.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "{data}");
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    out
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn text_whole_and_streamed_through_an_openai_upstream() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let v = app
        .whole(
            &json!({"model": "m", "instructions": "be brief", "input": "hello",
            "max_output_tokens": 64, "metadata": {"run": "1"}}),
        )
        .await;
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "m");
    assert_eq!(v["store"], false);
    assert_eq!(v["instructions"], "be brief");
    assert_eq!(v["metadata"], json!({"run": "1"}));
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], wire_text(8));
    assert_eq!(v["usage"]["output_tokens"], 8);
    assert_eq!(
        v["usage"]["total_tokens"],
        v["usage"]["input_tokens"].as_u64().unwrap() + 8
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(sent["max_tokens"], 64);

    let events = app
        .events(
            &json!({"model": "m", "input": [{"role": "user", "content": "hello"}], "stream": true}),
        )
        .await;
    let n = names(&events);
    assert_eq!(
        n[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        n[n.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, wire_text(8));
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], wire_text(8));
    assert_eq!(done["id"], events[0].1["response"]["id"]);
    assert_eq!(done["usage"]["output_tokens"], 8);
}

#[tokio::test]
async fn a_function_call_round_trip_whole_and_streamed() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let ask = json!({"role": "user", "content": "What is the weather in Paris?"});
    let v = app
        .whole(&json!({"model": "m", "input": [ask], "tools": [weather()],
            "tool_choice": "auto", "parallel_tool_calls": false}))
        .await;
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call", "{v}");
    assert_eq!(call["call_id"], "call_fake_0");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"city\":\"fake\",\"days\":1}");
    assert_eq!(v["tools"][0]["name"], "get_weather");
    assert_eq!(v["parallel_tool_calls"], false);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city", "parameters": weather()["parameters"], "strict": true}}])
    );
    assert_eq!(sent["parallel_tool_calls"], false);

    // The call and its output go back in the next request's input, as
    // the output item was returned.
    let output =
        json!({"type": "function_call_output", "call_id": "call_fake_0", "output": "Sunny, 21 C"});
    let v = app
        .whole(&json!({"model": "m", "tools": [weather()],
            "input": [ask, call.clone(), output]}))
        .await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message", "{v}");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake_0",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"fake\",\"days\":1}"}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "call_fake_0"})
    );

    let events = app
        .events(&json!({"model": "m", "input": "weather?", "tools": [weather()], "stream": true}))
        .await;
    let n = names(&events);
    assert_eq!(n[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "function_call");
    assert_eq!(events[2].1["item"]["call_id"], "call_fake_0");
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "relayed piece by piece: {pieces:?}");
    assert_eq!(pieces.concat(), "{\"city\":\"fake\",\"days\":1}");
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], "{\"city\":\"fake\",\"days\":1}");
    assert_eq!(done.1["item_id"], events[2].1["item"]["id"]);
    let last = &events.last().unwrap().1["response"];
    assert_eq!(
        last["output"][0]["arguments"],
        "{\"city\":\"fake\",\"days\":1}"
    );
    assert_eq!(last["output"][0]["status"], "completed");
}

#[tokio::test]
async fn text_format_json_schema_and_an_anthropic_upstream() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let schema = json!({"type": "object", "properties": {"temp": {"type": "number"}},
        "required": ["temp"], "additionalProperties": false});
    let v = app
        .whole(&json!({"model": "m", "input": "weather as JSON",
            "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": true}}}))
        .await;
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert!(parsed["temp"].is_number(), "{text}");
    assert_eq!(
        fake.last_request().unwrap()["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": true}})
    );
    assert_eq!(v["text"]["format"]["name"], "weather");

    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "anthropic", &fake)]).await;
    let v = app
        .whole(
            &json!({"model": "m", "input": "weather?", "tools": [weather()],
            "tool_choice": {"type": "function", "name": "get_weather"}}),
        )
        .await;
    assert_eq!(v["output"][0]["type"], "function_call", "{v}");
    assert_eq!(v["output"][0]["call_id"], "toolu_fake_0");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
}

async fn refused(app: &App, extra: Value) -> Value {
    let mut body = json!({"model": "m", "input": "hi"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, text) = app.respond(&body).await;
    assert_eq!(status, 400, "{extra}: {text}");
    serde_json::from_str::<Value>(&text).unwrap()["error"].clone()
}

#[tokio::test]
async fn what_would_need_a_stored_conversation_is_refused_by_name() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    for (extra, param, words) in [
        (json!({"store": true}), "store", "retains no conversation"),
        (
            json!({"previous_response_id": "resp_123"}),
            "previous_response_id",
            "stores none",
        ),
        (
            json!({"conversation": "conv_1"}),
            "conversation",
            "stores none",
        ),
        (json!({"background": true}), "background", "stores none"),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
            "stores none",
        ),
        (
            json!({"tools": [{"type": "web_search"}]}),
            "tools[0].type",
            "Built-in tools",
        ),
        (
            json!({"tools": [weather(), {"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
            "tools[1].type",
            "Built-in tools",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "x"}}}),
            "text.format.schema",
            "Missing",
        ),
        (json!({"bogus": 1}), "bogus", "Unrecognized"),
    ] {
        let e = refused(&app, extra.clone()).await;
        assert_eq!(e["param"], param, "{extra}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{extra}: {e}"
        );
    }
    assert_eq!(fake.requests(), 0, "nothing refused reached the upstream");
    // `store: false` and the other fields a client sends are fine.
    let v = app
        .whole(
            &json!({"model": "m", "input": "hi", "store": false, "include": [],
            "truncation": "disabled", "service_tier": "auto", "user": "u1",
            "stream_options": null, "reasoning": {"effort": null}}),
        )
        .await;
    assert_eq!(v["status"], "completed");
}

#[tokio::test]
async fn the_embedded_model_answers_and_refuses_by_the_responses_field() {
    let server = common::start(common::Options::default()).await;
    let post = |body: Value| {
        let client = server.client.clone();
        let url = format!("{}/v1/responses", server.base);
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = post(json!({"model": "orinari-small", "input": "Say hi.",
        "max_output_tokens": 8, "temperature": 0}))
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        !v["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let (status, text) = post(json!({"model": "orinari-small", "input": "Say hi.",
        "max_output_tokens": 8, "stream": true}))
    .await;
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    let last = names(&events).last().copied().unwrap();
    assert!(
        last == "response.completed" || last == "response.incomplete",
        "{last}"
    );

    // Tools and JSON output: the embedded model honours them (constrained
    // decoding), as a function_call item and as JSON text.
    let (status, text) = post(
        json!({"model": "orinari-small", "input": "What is the weather in Paris?",
        "tools": [weather()], "tool_choice": "required", "max_output_tokens": 200, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "function_call")
        .unwrap_or_else(|| panic!("no function_call in {v}"));
    assert_eq!(call["name"], "get_weather", "{call}");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args.is_object(), "{args}");

    let (status, text) = post(json!({"model": "orinari-small", "input": "Describe Paris.",
        "text": {"format": {"type": "json_object"}}, "max_output_tokens": 120, "temperature": 0}))
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    // Steered closed near its budget, even an `incomplete` answer parses.
    if v["status"] != "completed" {
        assert_eq!(
            v["incomplete_details"]["reason"], "max_output_tokens",
            "{v}"
        );
    }
    let out = v["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(parsed.is_object(), "{parsed}");
}
