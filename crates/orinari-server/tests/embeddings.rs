//! `POST /v1/embeddings` on a real server: the embedded `orinari-embed`
//! (the real all-MiniLM-L6-v2, loaded on first use; vectors checked
//! against the independent numpy reference), float and base64, batches in
//! input order, token-id inputs, every bad input naming its field, and
//! the request passed through a pool of OpenAI-compatible backends (the
//! fake upstream, which lists its vectors last first and answers floats
//! whatever is asked), with failover; `/v1/models` and the metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly; the server task ends with the test"
)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::upstream::{pool, spec};
use orinari_balance::{Gateway, PoolConfig};
use orinari_fake_upstream::{FakeUpstream, Faults};
use orinari_server::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct App {
    base: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl App {
    async fn embed(&self, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/embeddings", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }
}

/// `orinari-embed`, pool `m` (two OpenAI-compatible backends on `a` and
/// `b`) and pool `c` (an Anthropic backend, which does not embed).
async fn serve(a: &FakeUpstream, b: &FakeUpstream) -> App {
    let state = AppState::new(Vec::new(), 32_000, 1 << 20);
    let mut gw = Gateway::builder(state.metrics().models.clone());
    gw.pool(pool(), vec![spec("a", "openai", a), spec("b", "openai", b)]);
    gw.pool(
        PoolConfig {
            name: "c".into(),
            ..pool()
        },
        vec![spec("c", "anthropic", a)],
    );
    let embedder = orinari_embed::Embedder::new(orinari_embed::default_model_dir(), 16);
    assert!(
        embedder.installed(),
        "run scripts/fetch-embed-model.sh (make model)"
    );
    let state = state
        .with_gateway(gw.build())
        .with_edge(orinari_limits::Edge::new(
            orinari_config::admission::AdmissionConfig::default(),
            &[("m".to_string(), None), ("c".to_string(), None)],
        ))
        .with_embedder(Some(Arc::new(embedder)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(orinari_server::serve(
        listener,
        state,
        async move {
            let _ = rx.await;
        },
        std::time::Duration::from_secs(1),
    ));
    App {
        base,
        client: reqwest::Client::new(),
        _stop: tx,
    }
}

async fn fakes() -> (FakeUpstream, FakeUpstream) {
    (
        FakeUpstream::start(Faults::default()).await.unwrap(),
        FakeUpstream::start(Faults::default()).await.unwrap(),
    )
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn base64_floats(v: &Value) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn cosine_distance(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

#[tokio::test]
async fn the_embedded_model_answers_floats_and_base64_in_input_order() {
    let (a, b) = fakes().await;
    let app = serve(&a, &b).await;
    let references: Vec<Value> =
        serde_json::from_str(include_str!("../../orinari-embed/tests/reference.json")).unwrap();
    let texts: Vec<&str> = references
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();

    // One text, floats: the reference's vector.
    let (status, one) = app
        .embed(&json!({"model": "orinari-embed", "input": texts[2]}))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "orinari-embed");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    let v = floats(&one["data"][0]["embedding"]);
    assert_eq!(v.len(), 384);
    let reference: Vec<f64> = references[2]["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(cosine_distance(&v, &reference) < 1e-4);
    let tokens = one["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 2);
    assert_eq!(one["usage"]["total_tokens"].as_u64(), Some(tokens));

    // Every reference text in one batch, base64: each in its place.
    let (status, batch) = app
        .embed(
            &json!({"model": "orinari-embed", "input": texts, "encoding_format": "base64",
            "dimensions": 384, "user": "u-1"}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let data = batch["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    for (i, (item, r)) in data.iter().zip(&references).enumerate() {
        assert_eq!(item["index"], i);
        let v = base64_floats(&item["embedding"]);
        let want: Vec<f64> = r["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let d = cosine_distance(&v, &want);
        assert!(d < 1e-4, "input {i}: {d}");
    }

    // Token ids (bert-base-uncased: "hello" 7592, "world" 2088) embed like
    // their text, flat or nested.
    let (_, text) = app
        .embed(&json!({"model": "orinari-embed", "input": "hello world"}))
        .await;
    let (status, ids) = app
        .embed(&json!({"model": "orinari-embed", "input": [7592, 2088]}))
        .await;
    assert_eq!(status, 200, "{ids}");
    assert_eq!(ids["data"][0]["embedding"], text["data"][0]["embedding"]);
    let (_, nested) = app
        .embed(&json!({"model": "orinari-embed", "input": [[2088], [7592, 2088]]}))
        .await;
    assert_eq!(nested["data"][1]["embedding"], text["data"][0]["embedding"]);

    // Listed, and metered like a model with one backend of its own.
    let models = app.get("/v1/models").await;
    assert!(models.contains("\"orinari-embed\""), "{models}");
    let one: Value = serde_json::from_str(&app.get("/v1/models/orinari-embed").await).unwrap();
    assert_eq!(one["id"], "orinari-embed");
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"orinari_model_requests_total{model="orinari-embed",backend="local",outcome="success"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="/v1/embeddings""#));
}

#[tokio::test]
async fn bad_inputs_name_their_field() {
    let (a, b) = fakes().await;
    let app = serve(&a, &b).await;
    let cases = [
        (json!({"input": "x"}), 400, "model"),
        (json!({"model": "orinari-embed"}), 400, "input"),
        (json!({"model": "orinari-embed", "input": []}), 400, "input"),
        (
            json!({"model": "orinari-embed", "input": ["a", ""]}),
            400,
            "input[1]",
        ),
        (
            json!({"model": "orinari-embed", "input": ["a", 1]}),
            400,
            "input[1]",
        ),
        (
            json!({"model": "orinari-embed", "input": [[1], [2, 99_999]]}),
            400,
            "input[1][1]",
        ),
        (
            json!({"model": "orinari-embed", "input": [5, 99_999]}),
            400,
            "input[1]",
        ),
        (
            json!({"model": "orinari-embed", "input": "x", "encoding_format": "int8"}),
            400,
            "encoding_format",
        ),
        (
            json!({"model": "orinari-embed", "input": "x", "dimensions": 128}),
            400,
            "dimensions",
        ),
        (
            json!({"model": "orinari-embed", "input": "x", "user": 7}),
            400,
            "user",
        ),
        (
            json!({"model": "orinari-embed", "input": "x", "task": "q"}),
            400,
            "task",
        ),
        (
            json!({"model": "orinari-embed", "input": "x".repeat(32_001)}),
            400,
            "input",
        ),
        (
            json!({"model": "orinari-embed", "input": [vec![1; 8_001]]}),
            400,
            "input",
        ),
        (json!({"model": "c", "input": "x"}), 400, "model"),
        (json!({"model": "nope", "input": "x"}), 404, "model"),
    ];
    for (body, status, param) in cases {
        let (got, error) = app.embed(&body).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Not JSON at all.
    let r = app
        .client
        .post(format!("{}/v1/embeddings", app.base))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn upstream_models_get_the_request_passed_through_with_failover() {
    let (a, b) = fakes().await;
    let app = serve(&a, &b).await;
    // The fake lists vectors last first: the answer is in input order.
    let (status, got) = app
        .embed(&json!({"model": "m", "input": ["ab", "abcd"], "user": "u-2", "dimensions": 4}))
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["model"], "m");
    assert_eq!(
        floats(&got["data"][0]["embedding"]),
        vec![2.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        floats(&got["data"][1]["embedding"]),
        vec![4.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(got["data"][1]["index"], 1);
    assert_eq!(got["usage"]["prompt_tokens"], 6);
    let sent = a.last_request().or_else(|| b.last_request()).unwrap();
    assert_eq!(sent["model"], "fake");
    assert_eq!(sent["input"], json!(["ab", "abcd"]));
    assert_eq!(sent["user"], "u-2");
    assert_eq!(sent["dimensions"], 4);

    // base64 asked, floats answered: written as asked.
    let (status, got) = app
        .embed(&json!({"model": "m", "input": [[1, 2, 3]], "encoding_format": "base64"}))
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        base64_floats(&got["data"][0]["embedding"]),
        vec![3.0, 0.0, 1.0, 0.0]
    );

    // One backend fails: the other answers.
    a.set(|f| f.fail_status = Some(500));
    for _ in 0..4 {
        let (status, got) = app.embed(&json!({"model": "m", "input": "abc"})).await;
        assert_eq!(status, 200, "{got}");
    }
    // Both fail: 502 in the envelope.
    b.set(|f| f.fail_status = Some(500));
    let (status, got) = app.embed(&json!({"model": "m", "input": "abc"})).await;
    assert_eq!(status, 502, "{got}");
    assert!(got["error"]["message"].is_string());
}
