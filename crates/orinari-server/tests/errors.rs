//! Every bad input gets the OpenAI envelope with the right status, `param`
//! and code; no request is lost to a panic or a bare status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use common::{Options, start};
use serde_json::{Value, json};

fn msg(content: Value) -> Value {
    json!([{"role": "user", "content": content}])
}

fn body(extra: Value) -> Value {
    let mut b = json!({"model": "orinari-small", "messages": msg(json!("hi"))});
    if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                o.remove(&k);
            } else {
                o.insert(k, v);
            }
        }
    }
    b
}

#[tokio::test]
async fn invalid_fields_name_their_param() {
    let s = start(Options {
        max_input_chars: 1000,
        ..Options::default()
    })
    .await;
    // (request changes, expected param, expected code)
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"model": null}),
            "model",
            "missing_required_parameter",
        ),
        (json!({"model": 5}), "model", "invalid_type"),
        (json!({"model": ""}), "model", "invalid_value"),
        (
            json!({"messages": null}),
            "messages",
            "missing_required_parameter",
        ),
        (json!({"messages": []}), "messages", "invalid_value"),
        (json!({"messages": "hi"}), "messages", "invalid_type"),
        (json!({"messages": [5]}), "messages[0]", "invalid_type"),
        (
            json!({"messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
            "invalid_value",
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": 3}]}),
            "messages[0].content",
            "invalid_type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].image_url.url",
            "invalid_value",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}),
            "messages[0].content[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "a", "tool_calls": []}]}),
            "messages[0].tool_calls",
            "unknown_parameter",
        ),
        (
            json!({"messages": [{"role": "system", "content": "only rules"}]}),
            "messages",
            "invalid_value",
        ),
        (
            json!({"messages": msg(json!("x".repeat(1001)))}),
            "messages",
            "input_too_long",
        ),
        (json!({"temperature": 2.5}), "temperature", "invalid_value"),
        (json!({"temperature": "hot"}), "temperature", "invalid_type"),
        (json!({"top_p": 1.5}), "top_p", "invalid_value"),
        (json!({"max_tokens": 0}), "max_tokens", "invalid_value"),
        (json!({"max_tokens": -3}), "max_tokens", "invalid_value"),
        (json!({"max_tokens": 1.5}), "max_tokens", "invalid_value"),
        (
            json!({"max_completion_tokens": "9"}),
            "max_completion_tokens",
            "invalid_type",
        ),
        (
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            "stop",
            "invalid_value",
        ),
        (json!({"stop": [1]}), "stop[0]", "invalid_type"),
        (json!({"stop": ""}), "stop", "invalid_value"),
        (json!({"stop": {"a": 1}}), "stop", "invalid_type"),
        (json!({"seed": 1.5}), "seed", "invalid_value"),
        (json!({"seed": "1"}), "seed", "invalid_type"),
        (json!({"stream": "yes"}), "stream", "invalid_type"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
            "invalid_value",
        ),
        (
            json!({"stream": true, "stream_options": {"include_usage": 1}}),
            "stream_options.include_usage",
            "invalid_type",
        ),
        (
            json!({"stream": true, "stream_options": {"other": 1}}),
            "stream_options.other",
            "unknown_parameter",
        ),
        (json!({"n": 2}), "n", "unsupported_parameter"),
        (
            json!({"top_logprobs": 21, "logprobs": true}),
            "top_logprobs",
            "invalid_value",
        ),
        (
            json!({"reasoning_effort": "low"}),
            "reasoning_effort",
            "unsupported_parameter",
        ),
        (
            json!({"logit_bias": {"49152": 3}}),
            "logit_bias.49152",
            "invalid_value",
        ),
        (
            json!({"frequency_penalty": 3}),
            "frequency_penalty",
            "invalid_value",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}}}),
            "response_format.json_schema.schema",
            "invalid_value",
        ),
        (json!({"user": 7}), "user", "invalid_type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "messages": msg(json!([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]))}),
            "messages[0].content",
            "unsupported_parameter",
        ),
        (json!({"tools": {}}), "tools", "invalid_type"),
        (json!({"temprature": 1}), "temprature", "unknown_parameter"),
    ];
    for (changes, param, code) in cases {
        let b = body(changes.clone());
        let (status, v) = s.post(&b).await;
        assert_eq!(status, 400, "{changes} → {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{changes}");
        assert_eq!(v["error"]["param"], param, "{changes} → {v}");
        assert_eq!(v["error"]["code"], code, "{changes} → {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Valid edge values are accepted.
    for ok in [
        json!({"temperature": 0, "top_p": 0, "max_tokens": 1}),
        json!({"temperature": 2, "top_p": 1, "max_tokens": 1, "seed": -5, "user": "u1", "n": 1}),
        json!({"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 1}),
        json!({"presence_penalty": 0, "frequency_penalty": 0, "logprobs": false, "max_tokens": 1, "response_format": {"type": "text"}}),
    ] {
        let (status, v) = s.post(&body(ok.clone())).await;
        assert_eq!(status, 200, "{ok} → {v}");
    }
}

#[tokio::test]
async fn malformed_bodies_and_routes() {
    let s = start(Options {
        max_body_bytes: 4096,
        ..Options::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", s.base);
    let send = |b: Vec<u8>| {
        let (c, u) = (s.client.clone(), url.clone());
        async move {
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = send(b"{not json".to_vec()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
    let (st, v) = send(b"[1,2]".to_vec()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
    let (st, v) = send(vec![0xff, 0xfe]).await;
    assert_eq!(st, 400, "{v}");
    let big = serde_json::to_vec(&body(json!({"messages": msg(json!("x".repeat(5000)))}))).unwrap();
    let (st, v) = send(big).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"]["code"], "request_too_large");

    let (st, v) = s.post(&body(json!({"model": "gpt-9"}))).await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");

    let (st, v) = s.get("/v1/nope").await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (st, v) = s.get("/v1/chat/completions").await;
    assert_eq!(st, 405, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn models_and_health_endpoints() {
    let s = start(Options::default()).await;
    let (st, v) = s.get("/v1/models").await;
    assert_eq!(st, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "orinari-small");
    assert_eq!(v["data"][0]["object"], "model");
    assert!(v["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);
    let (st, one) = s.get("/v1/models/orinari-small").await;
    assert_eq!(st, 200);
    assert_eq!(one, v["data"][0]);
    let (st, v) = s.get("/v1/models/gpt-9").await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(s.get("/healthz").await.0, 200);
    let (st, v) = s.get("/readyz").await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ready")));
    // Every response carries a request id; a client's own id is kept.
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = s
        .client
        .get(format!("{}/nope", s.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    // One active sequence and no queue: the second concurrent request is shed.
    let s = start(Options {
        parallel: 1,
        queue_depth: 0,
        ..Options::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", s.base);
    let long = s
        .client
        .post(&url)
        .json(&body(json!({"max_tokens": 2000, "stream": true,
                           "logit_bias": common::no_end_of_text()})))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let r = s
        .client
        .post(&url)
        .json(&body(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "overloaded");
    drop(long);
}

#[tokio::test]
async fn readiness_follows_storage() {
    let dir = std::env::temp_dir().join(format!("orinari-ready-{}", std::process::id()));
    let store = orinari_store::Store::open(&format!("sqlite://{}/o.db", dir.display()))
        .await
        .unwrap();
    let s = start(Options {
        store: Some(store.clone()),
        ..Options::default()
    })
    .await;
    let (st, v) = s.get("/readyz").await;
    assert_eq!((st, v["status"].as_str()), (200, Some("ready")), "{v}");
    store.close().await;
    let (st, v) = s.get("/readyz").await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["reason"], "storage does not answer");
    // Liveness is unaffected.
    assert_eq!(s.get("/healthz").await.0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
