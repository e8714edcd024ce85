//! Tools, structured output and the other Chat Completions options through
//! the real server to real HTTP upstreams (the in-repo fake, which really
//! emits tool calls): passed through to an OpenAI-compatible upstream
//! unchanged, mapped both ways for an Anthropic one, refused by name where
//! a backend cannot honour them, and never retried once a tool-call piece
//! has reached the client.
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

use std::time::Duration;

use common::upstream::{App, serve, spec};
use orinari_fake_upstream::{FakeUpstream, Faults};
use serde_json::{Value, json};

impl App {
    async fn post(&self, body: &Value) -> (u16, String) {
        self.post_to("/v1/chat/completions", body).await
    }

    async fn whole(&self, body: &Value) -> Value {
        let (status, text) = self.post(body).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The JSON chunks of a stream (the `[DONE]` line checked and dropped).
    async fn chunks(&self, body: &Value) -> Vec<Value> {
        let (status, text) = self.post(body).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains("event: error"), "{text}");
        let data = common::sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]},
        "strict": true}})
}

fn ask(stream: bool, extra: Value) -> Value {
    let mut body = json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// The tool calls of a stream, joined from their pieces by index, and the
/// number of pieces.
fn joined_calls(chunks: &[Value]) -> (Vec<(String, String, String)>, usize) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut pieces = 0;
    for c in chunks {
        for d in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            pieces += 1;
            let i = d["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                assert!(d["id"].is_string(), "a call's first piece has its id: {d}");
                assert_eq!(d["type"], "function");
                calls.push((
                    d["id"].as_str().unwrap().into(),
                    d["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            calls[i].2 += d["function"]["arguments"].as_str().unwrap();
        }
    }
    (calls, pieces)
}

#[tokio::test]
async fn tool_calls_pass_through_an_openai_upstream_whole_and_streamed() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let options = json!({"tools": [weather_tool()], "tool_choice": "auto",
        "parallel_tool_calls": false, "temperature": 0.2, "frequency_penalty": 0.5,
        "reasoning_effort": "low", "service_tier": "auto", "seed": 3});

    let v = app.whole(&ask(false, options.clone())).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null(), "{v}");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "call_fake_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"fake\",\"days\":1}"}}])
    );
    // Every option reached the upstream unchanged.
    let sent = fake.last_request().unwrap();
    for key in [
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "frequency_penalty",
        "reasoning_effort",
        "service_tier",
        "seed",
    ] {
        assert_eq!(sent[key], options[key], "{key}");
    }

    let mut streamed = options.clone();
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = app.chunks(&ask(true, streamed)).await;
    let (calls, pieces) = joined_calls(&chunks);
    assert_eq!(
        calls,
        vec![(
            "call_fake_0".into(),
            "get_weather".into(),
            "{\"city\":\"fake\",\"days\":1}".into()
        )]
    );
    // Relayed piece by piece, as the upstream sent them.
    assert!(pieces > 3, "{pieces} pieces");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(|_| c))
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn several_required_calls_stream_with_their_own_indexes() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let clock = json!({"type": "function", "function": {"name": "clock",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}}}});
    let chunks = app
        .chunks(&ask(
            true,
            json!({"tools": [weather_tool(), clock], "tool_choice": "required"}),
        ))
        .await;
    let (calls, _) = joined_calls(&chunks);
    let names: Vec<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["get_weather", "clock"]);
    assert_eq!(calls[1].2, "{\"zone\":\"UTC\"}");
}

#[tokio::test]
async fn a_tool_result_round_trip_and_json_output() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let history = json!({"model": "m", "tools": [weather_tool()], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "Sunny, 21 C"}]});
    let v = app.whole(&history).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["content"].is_string());
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["messages"], history["messages"]);

    for format in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "weather", "strict": true,
            "schema": {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}}}),
    ] {
        let v = app
            .whole(&ask(false, json!({"response_format": format.clone()})))
            .await;
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert!(parsed.is_object(), "{text}");
        assert_eq!(fake.last_request().unwrap()["response_format"], format);
    }
}

#[tokio::test]
async fn an_anthropic_upstream_maps_tools_both_ways() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "anthropic", &fake)]).await;
    let options = json!({"tools": [weather_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});

    let v = app.whole(&ask(false, options.clone())).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"],
        json!([{"id": "toolu_fake_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"fake\",\"days\":1}"}}])
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"],
        weather_tool()["function"]["parameters"]
    );

    let chunks = app.chunks(&ask(true, options)).await;
    let (calls, _) = joined_calls(&chunks);
    assert_eq!(
        calls,
        vec![(
            "toolu_fake_0".into(),
            "get_weather".into(),
            "{\"city\":\"fake\",\"days\":1}".into()
        )]
    );

    // The result goes back as a tool_result block; the answer is text.
    let v = app
        .whole(&json!({"model": "m", "tools": [weather_tool()], "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_fake_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_fake_0", "content": "Sunny"}]}))
        .await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_fake_0", "content": "Sunny"}])
    );

    // What the Messages API has no counterpart for is refused by name.
    let (status, text) = app.post(&ask(false, json!({"logprobs": true}))).await;
    assert_eq!(status, 400, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["code"], "unsupported_parameter");
    assert_eq!(e["error"]["param"], "logprobs");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Anthropic")
    );
}

/// Once a tool-call piece has reached the client, a failure ends the
/// stream with an error event: it is never retried on another backend
/// (which would call the tool twice).
#[tokio::test]
async fn no_failover_after_a_streamed_tool_call_piece() {
    // Paced, so the pieces before the death reach the gateway first.
    let dies = Faults {
        die_after: Some(2),
        chunk_delay: Duration::from_millis(20),
        ..Faults::default()
    };
    let a = FakeUpstream::start(dies.clone()).await.unwrap();
    let b = FakeUpstream::start(dies).await.unwrap();
    let app = serve(vec![spec("a", "openai", &a), spec("b", "openai", &b)]).await;
    let (status, text) = app
        .post(&ask(true, json!({"tools": [weather_tool()]})))
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("\"tool_calls\""), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(a.requests() + b.requests(), 1, "retried after a tool call");
}

/// The embedded model calls tools (SmolLM2's format, constrained to the
/// declared names and parameter schemas) and answers JSON that follows a
/// schema, whole and streamed, in OpenAI's shapes; what it cannot honour
/// is refused by name.
#[tokio::test]
async fn the_embedded_model_calls_tools_answers_json_and_refuses_the_rest_by_name() {
    let server = common::start(common::Options::default()).await;
    // Greedy: the same answer every run.
    let tools = json!({"tools": [weather_tool()], "tool_choice": "required", "max_tokens": 200,
        "temperature": 0});
    let (status, v) = server
        .post(&common::chat(
            "What is the weather in Paris?",
            tools.clone(),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string() && args["days"].is_i64(), "{args}");

    // Streamed: the call arrives as `tool_calls` deltas, then the finish.
    let mut streamed = tools.clone();
    streamed["stream"] = json!(true);
    let lines = server
        .stream(&common::chat("What is the weather in Rome?", streamed))
        .await;
    let text = lines.join("\n");
    assert!(
        text.contains("\"tool_calls\":[{\"index\":0,\"id\":\"call_"),
        "{text}"
    );
    assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{text}");

    // The call and its result go back; the model answers in text.
    let history = json!({"tools": [weather_tool()], "tool_choice": "none", "max_tokens": 40,
        "temperature": 0, "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"}]});
    let (status, v) = server.post(&common::chat("", history)).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );

    // JSON that follows the schema.
    let schema = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
        "sunny": {"type": "boolean"}}, "required": ["city", "sunny"], "additionalProperties": false});
    let format = json!({"max_tokens": 100, "temperature": 0, "response_format": {"type": "json_schema",
        "json_schema": {"name": "w", "strict": true, "schema": schema}}});
    let (status, v) = server
        .post(&common::chat("Is it sunny in Paris?", format))
        .await;
    assert_eq!(status, 200, "{v}");
    let answer: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        answer["city"].is_string() && answer["sunny"].is_boolean(),
        "{answer}"
    );
    assert_eq!(answer.as_object().unwrap().len(), 2, "{answer}");

    for (extra, param) in [
        (json!({"reasoning_effort": "low"}), "reasoning_effort"),
        (
            json!({"prediction": {"type": "content", "content": "x"}}),
            "prediction",
        ),
    ] {
        let (status, v) = server.post(&common::chat("hi", extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {v}");
        assert_eq!(v["error"]["code"], "unsupported_parameter", "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("embedded model"),
            "{v}"
        );
    }
    // Known fields with their neutral values, and provider hints, are fine.
    let (status, v) = server
        .post(&common::chat(
            "hi",
            json!({"max_tokens": 2, "n": 1, "presence_penalty": 0, "tool_choice": "none",
                "parallel_tool_calls": true, "response_format": {"type": "text"},
                "service_tier": "auto", "metadata": {"a": "b"}, "store": false}),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    // An unknown field still fails loudly, by name.
    let (status, v) = server
        .post(&common::chat("hi", json!({"tool_chioce": "auto"})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "tool_chioce");
    assert_eq!(v["error"]["code"], "unknown_parameter");
}

/// `POST /v1/messages`: an Anthropic-shaped request onto an OpenAI
/// upstream, whole and streamed, text and tool use, through the pipeline.
#[tokio::test]
async fn anthropic_messages_inbound_onto_an_openai_upstream() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let post = |body: Value| {
        let client = app.client.clone();
        let url = format!("{}/v1/messages", app.base);
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = post(json!({"model": "m", "max_tokens": 64, "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}]}))
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["content"][0]["text"].as_str().unwrap(),
        orinari_fake_upstream::wire_text(8)
    );
    assert_eq!(v["usage"]["output_tokens"], 8);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(sent["max_tokens"], 64);

    let tools =
        json!([{"name": "get_weather", "input_schema": weather_tool()["function"]["parameters"]}]);
    let (status, text) = post(json!({"model": "m", "max_tokens": 64, "tools": tools,
        "messages": [{"role": "user", "content": "weather?"}]}))
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"][0],
        json!({"type": "tool_use", "id": "call_fake_0", "name": "get_weather",
            "input": {"city": "fake", "days": 1}})
    );

    let (status, text) = post(
        json!({"model": "m", "max_tokens": 64, "tools": tools, "stream": true,
        "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_start"));
    let json: String = common::sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_string))
        .collect();
    assert_eq!(json, "{\"city\":\"fake\",\"days\":1}");
    assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");

    // A tool result goes back to the upstream as a `tool` message.
    let (status, text) = post(json!({"model": "m", "max_tokens": 64, "tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_fake_0", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_fake_0", "content": "Sunny"}]}]}))
    .await;
    assert_eq!(status, 200, "{text}");
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "Sunny", "tool_call_id": "call_fake_0"})
    );

    let (status, text) =
        post(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(status, 400);
    assert!(text.contains("max_tokens"), "{text}");
}

/// `POST /v1/completions`: the prompt goes upstream as one user message;
/// the answer comes back as `text_completion`, whole and streamed.
#[tokio::test]
async fn legacy_completions_onto_an_openai_upstream() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let post = |body: Value| {
        let client = app.client.clone();
        let url = format!("{}/v1/completions", app.base);
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = post(json!({"model": "m", "prompt": "Once upon a time"})).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["text"].as_str().unwrap(),
        orinari_fake_upstream::wire_text(8)
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Once upon a time"}])
    );
    assert_eq!(sent["max_tokens"], 16);

    let (status, text) = post(json!({"model": "m", "prompt": ["Hi"], "stream": true,
        "stream_options": {"include_usage": true}}))
    .await;
    assert_eq!(status, 200, "{text}");
    let data = common::sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, orinari_fake_upstream::wire_text(8));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 8);

    let (status, text) = post(json!({"model": "m", "prompt": "x", "echo": true})).await;
    assert_eq!(status, 400);
    assert!(text.contains("unsupported_parameter"), "{text}");
}

/// `logprobs` and `top_logprobs`: the embedded model's own distribution,
/// and an OpenAI-compatible upstream's relayed unchanged, whole and
/// streamed, in OpenAI's shape.
#[tokio::test]
async fn log_probabilities_from_the_embedded_model_and_relayed_from_an_upstream() {
    let server = common::start(common::Options::default()).await;
    let greedy = json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 12, "temperature": 0});
    let (status, v) = server
        .post(&common::chat("Name a colour.", greedy.clone()))
        .await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{v}");
    let mut bytes = Vec::new();
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{t}");
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{t}");
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], t["token"], "{t}");
        assert!(
            top.windows(2)
                .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()),
            "{t}"
        );
        let mass: f64 = top
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap().exp())
            .sum();
        assert!(mass <= 1.0 + 1e-4, "{t}");
        bytes.extend(
            t["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8),
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        text,
        "the tokens spell the answer"
    );
    // Streamed: the same tokens, in chunks of their own before the text.
    let mut streamed = greedy.clone();
    streamed["stream"] = json!(true);
    let lines = server
        .stream(&common::chat("Name a colour.", streamed))
        .await;
    let tokens: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(
        tokens, *content,
        "the stream carries the same log probabilities"
    );
    let (status, v) = server
        .post(&common::chat("hi", json!({"top_logprobs": 2})))
        .await;
    assert_eq!(status, 400, "top_logprobs without logprobs: {v}");

    // An OpenAI-compatible upstream's, relayed as they came.
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(vec![spec("a", "openai", &fake)]).await;
    let scored = json!({"logprobs": true, "top_logprobs": 2, "max_tokens": 3});
    let v = app.whole(&ask(false, scored.clone())).await;
    assert_eq!(fake.last_request().unwrap()["top_logprobs"], 2);
    let content = &v["choices"][0]["logprobs"]["content"];
    assert_eq!(content.as_array().unwrap().len(), 3, "{v}");
    assert_eq!(content[0]["token"], "tok0 ");
    assert!(
        (content[1]["logprob"].as_f64().unwrap() + 0.2).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(content[1]["top_logprobs"][1]["token"], "alt1 ");
    let (status, text) = app.post(&ask(true, scored)).await;
    assert_eq!(status, 200);
    assert_eq!(
        text.matches("\"logprobs\":{\"content\":[{").count(),
        3,
        "{text}"
    );
}
