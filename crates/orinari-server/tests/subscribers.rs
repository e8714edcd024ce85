//! Visitors' webhook subscriptions over real HTTP: `POST
//! /api/v2/subscribers.json` (every error names its field; internal
//! addresses refused; a real local receiver verified and notified),
//! `DELETE /api/v2/subscribers/{token}`, the no-JavaScript form on `/status`,
//! the per-client rate limit (429 with `Retry-After`), and `orinari_leader`.
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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

mod common;

use common::status_page::{Page, TOKEN, start};

const STRICT: &str = r#"
[status]
page_name = "Acme"
page_url = "https://status.acme.test/status"
builtin_checks = false
[[status.components]]
name = "API"
"#;

type Seen = Arc<Mutex<Vec<Value>>>;

async fn hook(State(seen): State<Seen>, body: Bytes) -> String {
    let v: Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push(v.clone());
    v["challenge"].as_str().unwrap_or("ok").to_string()
}

async fn receiver() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

impl Page {
    async fn post(&self, path: &str, body: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn subscribe_errors_name_their_field() {
    let p = start(STRICT).await;
    let (addr, seen) = receiver().await;
    for (body, param, words) in [
        ("[1]".to_string(), None, "JSON object"),
        ("{".to_string(), None, "not valid JSON"),
        (
            json!({"email": "a@example.org"}).to_string(),
            Some("email"),
            "Unknown field",
        ),
        (json!({}).to_string(), Some("endpoint"), "is required"),
        (
            json!({"endpoint": 5}).to_string(),
            Some("endpoint"),
            "must be a string",
        ),
        (
            json!({"endpoint": "https://example.org/h", "components": "api"}).to_string(),
            Some("components"),
            "array",
        ),
        (
            json!({"endpoint": "https://example.org/h", "components": [1]}).to_string(),
            Some("components[0]"),
            "string",
        ),
        (
            json!({"endpoint": "https://example.org/h", "components": ["nope"]}).to_string(),
            Some("components[0]"),
            "no component",
        ),
        (
            json!({"endpoint": "gopher://example.org/h"}).to_string(),
            Some("endpoint"),
            "http:// or https://",
        ),
        (
            json!({"endpoint": format!("http://{addr}/hook")}).to_string(),
            Some("endpoint"),
            "not a public address",
        ),
        (
            json!({"endpoint": "http://169.254.169.254/latest"}).to_string(),
            Some("endpoint"),
            "not a public address",
        ),
    ] {
        let (status, _, v) = p.post("/api/v2/subscribers.json", &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        let e = &v["error"];
        if let Some(param) = param {
            assert_eq!(e["param"], param, "{body}: {v}");
        }
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{body}: {v}"
        );
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn subscribe_notify_unsubscribe_and_rate_limit() {
    let (addr, seen) = receiver().await;
    let p = start(&format!("{STRICT}\n",).replace(
        "builtin_checks = false",
        "builtin_checks = false\nwebhook_allow = [\"127.0.0.1\"]",
    ))
    .await;
    // The page offers the form.
    let html = p
        .http
        .get(format!("{}/status", p.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("action=\"/status/subscribe/webhook\""));
    assert!(html.contains("<label for=\"hook-url\">"));

    let (status, _, v) = p
        .post(
            "/api/v2/subscribers.json",
            &json!({"endpoint": format!("http://{addr}/hook"), "components": ["api"]}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let s = &v["subscriber"];
    assert_eq!(s["mode"], "webhook");
    assert_eq!(s["components"], json!(["api"]));
    let token = s["unsubscribe_token"].as_str().unwrap().to_string();
    assert!(s["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(seen.lock().unwrap()[0]["event"], "subscription.verify");

    // An incident on the API is delivered.
    let (status, _, _) = p
        .post(
            "/admin/v1/incidents",
            &json!({"name": "API errors", "message": "Looking.", "components": {"api": "partial_outage"}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 201);
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1]["event"], "incident.created");
        assert_eq!(seen[1]["incident"]["name"], "API errors");
        assert_eq!(seen[1]["page"]["status_indicator"], "major");
    }

    // Unsubscribe by token: once.
    let del = |t: String| {
        let http = p.http.clone();
        let url = format!("{}/api/v2/subscribers/{t}", p.base);
        async move { http.delete(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(del(token.clone()).await, 204);
    assert_eq!(del(token).await, 404);

    // The no-JavaScript form shows the secret once.
    let r = p
        .http
        .post(format!("{}/status/subscribe/webhook", p.base))
        .form(&[
            ("endpoint", format!("http://{addr}/hook")),
            ("component", String::new()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("Webhook subscribed") && text.contains("whsec_"),
        "{text}"
    );

    // Two attempts so far from 127.0.0.1; the rest of the hour's allowance,
    // then 429 with Retry-After.
    for _ in 2..orinari_status::webhooks::PER_CLIENT {
        let (status, _, _) = p
            .post(
                "/api/v2/subscribers.json",
                &json!({"endpoint": "http://10.1.2.3/hook"}).to_string(),
            )
            .await;
        assert_eq!(status, 400);
    }
    let (status, headers, v) = p
        .post(
            "/api/v2/subscribers.json",
            &json!({"endpoint": "http://10.1.2.3/hook"}).to_string(),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "subscription_rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));

    // SQLite: this instance is the leader.
    let metrics = p
        .http
        .get(format!("{}/metrics", p.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("orinari_leader 1"), "{metrics}");
}
