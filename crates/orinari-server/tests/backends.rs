//! The chat API and the admin API over pools of real HTTP upstreams (the
//! in-repo fault-injecting fake): failover, a backend killed under load,
//! readiness, mid-stream failure as an SSE error event, timeouts as 504,
//! and rollouts through `/admin/v1`.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orinari_balance::{
    BackendSpec, BreakerConfig, Gateway, HealthConfig, PoolConfig, Retry, Strategy, Timeouts,
};
use orinari_fake_upstream::{FakeUpstream, Faults};
use orinari_models::openai::OpenAiBackend;
use orinari_models::{UpstreamConfig, UpstreamSecret};
use orinari_server::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const ADMIN: &str = "test-admin-token";

struct App {
    base: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

fn spec(name: &str, group: &str, fake: &FakeUpstream) -> BackendSpec {
    let upstream = UpstreamConfig {
        base_url: fake.base_url(),
        model: "fake".into(),
        api_key: Some(UpstreamSecret::new("sk-upstream")),
        connect_timeout: Duration::from_millis(500),
        health_path: "models".into(),
        context_window: 4096,
        http_version: orinari_models::HttpVersion::Auto,
    };
    BackendSpec {
        name: name.into(),
        provider: "openai".into(),
        group: group.into(),
        weight: 100,
        region: None,
        backend: Arc::new(OpenAiBackend::new(upstream).unwrap()),
    }
}

fn pool(strategy: Strategy) -> PoolConfig {
    PoolConfig {
        name: "m".into(),
        strategy,
        fallback: Vec::new(),
        timeouts: Timeouts {
            first_token: Duration::from_millis(300),
            idle: Duration::from_secs(2),
            total: Duration::from_secs(5),
        },
        retry: Retry {
            max_attempts: 3,
            backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            budget: Duration::from_secs(3),
        },
        breaker: BreakerConfig {
            consecutive_failures: 3,
            error_rate: 0.5,
            window: 20,
            open_for: Duration::from_millis(300),
        },
        health: HealthConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
        },
        region: "local".into(),
        group_weights: BTreeMap::new(),
    }
}

async fn serve(config: PoolConfig, backends: Vec<BackendSpec>) -> App {
    let state = AppState::new(Vec::new(), 32_000, 1 << 20);
    let mut gw = Gateway::builder(state.metrics().models.clone());
    gw.pool(config, backends);
    let gateway = gw.build();
    let state = state
        .with_gateway(gateway)
        .with_admin_token_hash(orinari_server::hash_token(ADMIN))
        .with_edge(orinari_limits::Edge::new(
            orinari_config::admission::AdmissionConfig::default(),
            &[("m".to_string(), None)],
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(orinari_server::serve(
        listener,
        state,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    App {
        base,
        client: reqwest::Client::new(),
        _stop: tx,
    }
}

impl App {
    async fn chat(&self, stream: bool) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&json!({"model": "m", "stream": stream,
                "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            "PATCH" => self.client.patch(url),
            _ => self.client.post(url),
        }
        .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// A complete, successful SSE body: content, no error event, `[DONE]` last.
fn complete_stream(body: &str) -> bool {
    body.ends_with("data: [DONE]\n\n") && !body.contains("event: error") && body.contains("tok7")
}

#[tokio::test]
async fn a_backend_killed_under_load_costs_no_client_errors() {
    let faults = Faults {
        latency: Duration::from_millis(10),
        ..Faults::default()
    };
    let mut a = FakeUpstream::start(faults.clone()).await.unwrap();
    let b = FakeUpstream::start(faults).await.unwrap();
    let app = Arc::new(
        serve(
            pool(Strategy::P2cEwma),
            vec![spec("a", "blue", &a), spec("b", "blue", &b)],
        )
        .await,
    );
    let clients: Vec<_> = (0..12)
        .map(|c| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut bad = Vec::new();
                for i in 0..25 {
                    let stream = (c + i) % 2 == 0;
                    let (status, body) = app.chat(stream).await;
                    let ok = status == 200 && (!stream || complete_stream(&body));
                    if !ok {
                        bad.push((status, body));
                    }
                }
                bad
            })
        })
        .collect();
    // Kill `a` once it is serving (not after a fixed time: on a loaded
    // machine the first requests may not have reached it yet).
    let started = std::time::Instant::now();
    while a.requests() < 3 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.stop().await;
    let served_by_a = a.requests();
    let mut bad = Vec::new();
    for c in clients {
        bad.extend(c.await.unwrap());
    }
    assert!(bad.is_empty(), "client errors: {bad:?}");
    assert!(served_by_a > 0);

    // Readiness still 200 (b serves); after b dies too it turns 503.
    let (status, _) = app.admin("GET", "/readyz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn readiness_follows_backend_health() {
    let mut a = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(pool(Strategy::RoundRobin), vec![spec("a", "blue", &a)]).await;
    let (status, _) = app.admin("GET", "/readyz", None).await;
    assert_eq!(status, 200);
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = app.admin("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["models"], json!(["m"]));
    // With no backend passing its check, requests still try the backend
    // (panic routing): its refused connections are the answers (502)
    // until they open its circuit, and from then on requests are refused
    // at once (503).
    let (status, body) = app.chat(false).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_error"), "{body}");
    let mut refused = None;
    for _ in 0..5 {
        let (status, body) = app.chat(false).await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 502, "{body}");
    }
    let refused = refused.expect("the circuit opens after a few refused connections");
    assert!(refused.contains("backend_unavailable"), "{refused}");
    a.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = app.admin("GET", "/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(app.chat(false).await.0, 200);
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504_in_the_envelope() {
    let broken = FakeUpstream::start(Faults {
        fail_status: Some(500),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(pool(Strategy::RoundRobin), vec![spec("a", "blue", &broken)]).await;
    let (status, body) = app.chat(false).await;
    assert_eq!(status, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        !body.contains("127.0.0.1"),
        "no addresses in errors: {body}"
    );

    let slow = FakeUpstream::start(Faults {
        first_token_delay: Duration::from_secs(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(pool(Strategy::RoundRobin), vec![spec("a", "blue", &slow)]).await;
    let (status, body) = app.chat(true).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");

    let refusing = FakeUpstream::start(Faults {
        fail_status: Some(400),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(
        pool(Strategy::RoundRobin),
        vec![spec("a", "blue", &refusing)],
    )
    .await;
    let (status, body) = app.chat(false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("upstream_rejected"), "{body}");
    assert_eq!(refusing.requests(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_stream_that_dies_midway_ends_with_an_error_event_and_done() {
    let dying = FakeUpstream::start(Faults {
        die_after: Some(3),
        chunk_delay: Duration::from_millis(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(pool(Strategy::RoundRobin), vec![spec("a", "blue", &dying)]).await;
    let (status, body) = app.chat(true).await;
    assert_eq!(status, 200);
    assert!(body.contains("tok2"), "{body}");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let n = events.len();
    assert!(n >= 3, "{body}");
    assert_eq!(events[n - 1], "data: [DONE]");
    let error = events[n - 2];
    assert!(error.starts_with("event: error\ndata: "), "{body}");
    let envelope: Value = serde_json::from_str(error.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(envelope["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn admin_api_drains_rolls_out_and_rolls_back() {
    let blue = FakeUpstream::start(Faults::default()).await.unwrap();
    let green = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut config = pool(Strategy::Weighted);
    config.group_weights = BTreeMap::from([("green".to_string(), 0)]);
    let app = serve(
        config,
        vec![spec("b", "blue", &blue), spec("g", "green", &green)],
    )
    .await;

    // Without the token: 401.
    let r = app
        .client
        .get(format!("{}/admin/v1/backends", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (status, list) = app.admin("GET", "/admin/v1/backends", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["models"][0]["backends"][1]["effective_weight"], 0);

    for _ in 0..6 {
        assert_eq!(app.chat(false).await.0, 200);
    }
    assert_eq!(green.requests(), 0);

    let (status, m) = app
        .admin(
            "POST",
            "/admin/v1/models/m/rollout",
            Some(json!({"weights": {"blue": 0, "green": 100}})),
        )
        .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["groups"], json!({"blue": 0, "green": 100}));
    assert_eq!(m["rollout"]["state"], "completed");
    for _ in 0..6 {
        assert_eq!(app.chat(false).await.0, 200);
    }
    assert_eq!((blue.requests(), green.requests()), (6, 6));

    let (status, m) = app.admin("POST", "/admin/v1/models/m/rollback", None).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["groups"], json!({"blue": 100, "green": 0}));
    let (status, _) = app.admin("POST", "/admin/v1/models/m/rollback", None).await;
    assert_eq!(status, 409);

    // Drain blue: with green at 0 as well, the model has nothing to serve.
    let (status, b) = app
        .admin(
            "PATCH",
            "/admin/v1/backends/m/b",
            Some(json!({"drain": true})),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["drained"], true);
    assert_eq!(app.chat(false).await.0, 503);
    app.admin(
        "PATCH",
        "/admin/v1/backends/m/b",
        Some(json!({"drain": false})),
    )
    .await;
    assert_eq!(app.chat(false).await.0, 200);

    // Bad input names the field; unknown names are 404.
    for (path, body, param) in [
        (
            "/admin/v1/models/m/rollout",
            json!({"weights": {"blue": -1}}),
            "weights.blue",
        ),
        (
            "/admin/v1/models/m/rollout",
            json!({"weights": {"x": 1}}),
            "weights",
        ),
        (
            "/admin/v1/models/m/rollout",
            json!({"weights": {"blue": 1}, "max_error_rate": 2}),
            "max_error_rate",
        ),
        (
            "/admin/v1/models/m/rollout",
            json!({"wieghts": {}}),
            "wieghts",
        ),
        (
            "/admin/v1/backends/m/b",
            json!({"weight": "high"}),
            "weight",
        ),
    ] {
        let (status, e) = app.admin("POST", path, Some(body)).await;
        assert_eq!(status, 400, "{path}: {e}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    assert_eq!(app.admin("GET", "/admin/v1/models/nope", None).await.0, 404);
    assert_eq!(
        app.admin(
            "PATCH",
            "/admin/v1/backends/m/nope",
            Some(json!({"drain": true}))
        )
        .await
        .0,
        404
    );

    // A stepped rollout reports itself as running.
    let (status, m) = app
        .admin(
            "POST",
            "/admin/v1/models/m/rollout",
            Some(json!({"weights": {"green": 100}, "steps": 3, "step_interval_ms": 60000, "max_error_rate": 0.05})),
        )
        .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["rollout"]["state"], "running");
    assert_eq!(m["rollout"]["step"], 1);

    // Metrics carry the contract's names.
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "orinari_backend_up{model=\"m\",backend=\"b\"} 1",
        "orinari_circuit_state{model=\"m\",backend=\"g\"} 0",
        "orinari_model_requests_total{model=\"m\",backend=\"g\",outcome=\"success\"} 6",
        "orinari_model_time_to_first_token_seconds_count",
        "orinari_model_tokens_total{model=\"m\",backend=\"b\",kind=\"completion\"}",
        "orinari_gateway_overhead_seconds_count",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}
