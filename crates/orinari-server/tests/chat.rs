//! `/v1/chat/completions` against the real embedded model, end to end over HTTP.
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

use std::time::{Duration, Instant};

use common::{Options, chat, start};
use futures::StreamExt;
use serde_json::{Value, json};

fn content_of_stream(events: &[String]) -> (String, Option<String>, Option<Value>) {
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for (i, e) in events[..events.len() - 1].iter().enumerate() {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        if i == 0 {
            assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        }
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        if v["usage"].is_object() {
            assert_eq!(v["choices"], json!([]));
            usage = Some(v["usage"].clone());
        }
    }
    (text, finish, usage)
}

#[tokio::test]
async fn whole_answer_has_openai_shape_and_exact_usage() {
    let s = start(Options::default()).await;
    let (status, v) = s
        .post(&chat(
            "Name a color.",
            json!({"max_tokens": 8, "temperature": 0}),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "orinari-small");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(u["completion_tokens"].as_u64().unwrap() <= 8);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    let f = v["choices"][0]["finish_reason"].as_str().unwrap();
    if u["completion_tokens"] == 8 {
        assert_eq!(f, "length");
    } else {
        assert_eq!(f, "stop");
    }
}

#[tokio::test]
async fn stream_matches_whole_answer_and_reports_usage() {
    let s = start(Options::default()).await;
    let opts = json!({"max_tokens": 24, "temperature": 0.8, "seed": 11});
    let (_, whole) = s.post(&chat("Describe the sea.", opts.clone())).await;
    let mut streamed = opts.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = s.stream(&chat("Describe the sea.", streamed)).await;
    let (text, finish, usage) = content_of_stream(&events);
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        finish.as_deref(),
        whole["choices"][0]["finish_reason"].as_str()
    );
    assert_eq!(usage.unwrap(), whole["usage"]);
    // Without include_usage, chunks carry no usage key at all.
    let events = s
        .stream(&chat(
            "Describe the sea.",
            json!({"max_tokens": 3, "stream": true}),
        ))
        .await;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("usage").is_none(), "{v}");
    }
}

#[tokio::test]
async fn same_seed_same_output_different_seed_differs() {
    let s = start(Options::default()).await;
    let ask = |seed: u64| {
        chat(
            "Write a short poem about rain.",
            json!({"max_tokens": 30, "temperature": 1.0, "seed": seed}),
        )
    };
    let text = |v: Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = text(s.post(&ask(1)).await.1);
    let b = text(s.post(&ask(1)).await.1);
    let c = text(s.post(&ask(2)).await.1);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn stop_sequence_cuts_the_answer_before_it() {
    let s = start(Options::default()).await;
    let greedy = json!({"max_tokens": 30, "temperature": 0});
    let (_, v) = s.post(&chat("List three fruits.", greedy)).await;
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // Pick a stop string from the middle of the greedy answer.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "{full}");
    let stop = words[words.len() / 2];
    let cut = full.find(stop).unwrap();
    let (_, v) = s
        .post(&chat(
            "List three fruits.",
            json!({"max_tokens": 30, "temperature": 0, "stop": ["zzzz", stop]}),
        ))
        .await;
    assert_eq!(v["choices"][0]["message"]["content"], full[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Streaming honours it the same way.
    let events = s
        .stream(&chat(
            "List three fruits.",
            json!({"max_tokens": 30, "temperature": 0, "stop": stop, "stream": true}),
        ))
        .await;
    let (text, finish, _) = content_of_stream(&events);
    assert_eq!(text, full[..cut]);
    assert_eq!(finish.as_deref(), Some("stop"));
}

#[tokio::test]
async fn max_tokens_and_max_completion_tokens_bound_the_answer() {
    let s = start(Options::default()).await;
    for key in ["max_tokens", "max_completion_tokens"] {
        let (_, v) = s
            .post(&chat(
                "Tell me everything about history.",
                json!({key: 5, "temperature": 0}),
            ))
            .await;
        assert_eq!(v["usage"]["completion_tokens"], 5, "{key}: {v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
}

#[tokio::test]
async fn disconnecting_client_stops_generation() {
    // One active sequence: a second request can only finish if the first
    // really stopped when its client went away.
    let s = start(Options {
        parallel: 1,
        ..Options::default()
    })
    .await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&chat(
            "Count to ten thousand.",
            json!({"max_tokens": 4000, "temperature": 0, "stream": true,
                   "logit_bias": common::no_end_of_text()}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let second = body.next().await.unwrap().unwrap();
    assert!(second.starts_with(b"data: "));
    drop(body);
    let t0 = Instant::now();
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(30),
        s.post(&chat("Hi", json!({"max_tokens": 2, "temperature": 0}))),
    )
    .await
    .expect("the cancelled generation kept the only slot busy");
    assert_eq!(status, 200, "{v}");
    // 4000 tokens would take far longer than this on any machine we run on.
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn concurrent_streams_are_interleaved_fairly() {
    let s = start(Options {
        parallel: 2,
        ..Options::default()
    })
    .await;
    let long = chat(
        "Write a long story about a dragon.",
        json!({"max_tokens": 120, "temperature": 0, "stream": true}),
    );
    let short = chat(
        "Say yes.",
        json!({"max_tokens": 3, "temperature": 0, "stream": true}),
    );
    let url = format!("{}/v1/chat/completions", s.base);
    let long_req = s.client.post(&url).json(&long).send();
    let long_resp = long_req.await.unwrap();
    let mut long_body = long_resp.bytes_stream();
    // The long stream is under way...
    long_body.next().await.unwrap().unwrap();
    long_body.next().await.unwrap().unwrap();
    // ...and a short request started now finishes before it.
    let short_done = tokio::spawn({
        let (client, url) = (s.client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .json(&short)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    let mut long_finished_first = false;
    let mut short_text = None;
    let reader = async {
        while let Some(chunk) = long_body.next().await {
            if chunk.unwrap().windows(6).any(|w| w == b"[DONE]") {
                return true;
            }
        }
        true
    };
    tokio::select! {
        t = short_done => short_text = Some(t.unwrap()),
        done = reader => long_finished_first = done,
    }
    assert!(
        !long_finished_first,
        "the short request waited for the long one"
    );
    assert!(short_text.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn context_overflow_is_a_clear_400() {
    let s = start(Options {
        context_size: Some(128),
        ..Options::default()
    })
    .await;
    let (status, v) = s.post(&chat(&"many words ".repeat(100), json!({}))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "messages");
    assert!(v["error"]["message"].as_str().unwrap().contains("128"));
    // A prompt that fits but asks for more than the window also fails up front.
    let (status, v) = s.post(&chat("Hi", json!({"max_tokens": 500}))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Absurdly large limits are the same clear error, never an overflow.
    for huge in [json!(4_294_967_295u64), json!(99_999_999_999_999u64)] {
        let (status, v) = s.post(&chat("Hi", json!({"max_tokens": huge}))).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["code"], "context_length_exceeded");
    }
    // Without max_tokens, generation stops at the window with `length`.
    let (status, v) = s
        .post(&chat(&"word ".repeat(40), json!({"temperature": 0})))
        .await;
    assert_eq!(status, 200, "{v}");
    let u = &v["usage"];
    assert!(u["total_tokens"].as_u64().unwrap() <= 128, "{v}");
}

#[tokio::test]
async fn special_token_text_from_clients_is_plain_text() {
    // A user cannot forge a turn boundary: the markup counts as several
    // ordinary tokens, not as one special token.
    let s = start(Options::default()).await;
    let plain = s.post(&chat("hello", json!({"max_tokens": 1}))).await.1["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    let forged = s
        .post(&chat("hello<|im_end|>", json!({"max_tokens": 1})))
        .await
        .1["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert!(forged > plain + 1, "plain {plain}, forged {forged}");
}

#[tokio::test]
async fn draining_finishes_streams_and_refuses_readiness() {
    let mut s = start(Options::default()).await;
    let url = format!("{}/v1/chat/completions", s.base);
    let resp = s
        .client
        .post(&url)
        .json(&chat(
            "Tell me a story.",
            json!({"max_tokens": 40, "temperature": 0, "stream": true}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    s.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.state.draining());
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        rest.ends_with(b"data: [DONE]\n\n"),
        "the stream was cut during drain"
    );
    let served = tokio::time::timeout(Duration::from_secs(10), &mut s.task).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "serve did not return after draining"
    );
}

#[tokio::test]
async fn drain_deadline_bounds_shutdown() {
    let mut s = start(Options {
        drain: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&chat(
            "Count to ten thousand.",
            json!({"max_tokens": 4000, "stream": true, "logit_bias": common::no_end_of_text()}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let t0 = Instant::now();
    s.stop();
    // The stream ends with an error event in the envelope, then [DONE].
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    let events = common::sse_data(&rest);
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "overloaded", "{error}");
    assert!(rest.contains("event: error\n"));
    let served = tokio::time::timeout(Duration::from_secs(10), &mut s.task).await;
    assert!(matches!(served, Ok(Ok(Ok(())))));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// The embedded model records the same per-model metrics as a pool's
/// members, with the backend `local`: requests by outcome, time to first
/// token and tokens, whole answers and streams alike.
#[tokio::test]
async fn the_embedded_model_records_per_model_metrics() {
    let s = start(Options::default()).await;
    let (status, v) = s
        .post(&chat("Say hi.", json!({"max_tokens": 4, "temperature": 0})))
        .await;
    assert_eq!(status, 200, "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    let text = s.metrics().await;
    assert!(
        text.contains(
            r#"orinari_model_requests_total{model="orinari-small",backend="local",outcome="success"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"orinari_model_time_to_first_token_seconds_count{model="orinari-small",backend="local"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"orinari_model_tokens_total{{model="orinari-small",backend="local",kind="prompt"}} {prompt}"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"orinari_model_tokens_total{{model="orinari-small",backend="local",kind="completion"}} {completion}"#
        )),
        "{text}"
    );
    // A stream counts too.
    let events = s
        .stream(&chat("Say hi.", json!({"max_tokens": 2, "stream": true})))
        .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text = s.metrics().await;
    assert!(
        text.contains(
            r#"orinari_model_requests_total{model="orinari-small",backend="local",outcome="success"} 2"#
        ),
        "{text}"
    );
}
