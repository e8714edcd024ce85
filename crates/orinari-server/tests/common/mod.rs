//! A real server on port 0 with the real embedded model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(dead_code)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

pub mod status_page;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use orinari_models::local::{LocalConfig, LocalModel, default_model_path};
use orinari_server::{AppState, ServedModel};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub struct Options {
    pub parallel: usize,
    pub context_size: Option<usize>,
    pub max_body_bytes: usize,
    pub max_input_chars: usize,
    pub queue_depth: usize,
    pub drain: Duration,
    pub store: Option<orinari_store::Store>,
    /// Admission settings (keys, limits, queue, connections, firewall);
    /// `None` keeps the loopback defaults.
    pub admission: Option<orinari_config::admission::AdmissionConfig>,
    /// Prompt-injection screening with this instance-wide action.
    pub screening: Option<orinari_config::PromptInjection>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            parallel: 4,
            context_size: None,
            max_body_bytes: 1 << 20,
            max_input_chars: 32_000,
            queue_depth: 16,
            drain: Duration::from_secs(30),
            store: None,
            admission: None,
            screening: None,
        }
    }
}

pub async fn start(o: Options) -> Server {
    let model = LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: o.context_size,
        max_active: o.parallel,
        queue_depth: o.queue_depth,
        requantize: true,
    })
    .expect("the model loads (run scripts/fetch-model.sh)");
    let state = AppState::new(
        vec![ServedModel {
            name: "orinari-small".into(),
            backend: Arc::new(model),
        }],
        o.max_input_chars,
        o.max_body_bytes,
    );
    let state = match o.store {
        Some(store) => state.with_store(store),
        None => state,
    };
    let state = match o.screening {
        Some(action) => state
            .with_screening(orinari_chat::Screening::embedded(action).expect("the guard loads")),
        None => state,
    };
    let state = match o.admission {
        Some(c) => state.with_edge(orinari_limits::Edge::new(
            c,
            &[("orinari-small".to_string(), Some(o.parallel))],
        )),
        None => state,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(orinari_server::serve(
        listener,
        state.clone(),
        async move {
            let _ = rx.await;
        },
        o.drain,
    ));
    Server {
        base,
        client: reqwest::Client::new(),
        state,
        stop: Some(tx),
        task,
    }
}

impl Server {
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` exposition, as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POST a streaming request and return the raw SSE events' data lines.
    pub async fn stream(&self, body: &Value) -> Vec<String> {
        let r = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        sse_data(&text)
    }
}

/// A `logit_bias` that bans the embedded model's end-of-text tokens, for
/// tests that need an answer to run to its `max_tokens` (to hold a slot, or
/// still be running at a drain) however soon the weights would end it.
pub fn no_end_of_text() -> serde_json::Value {
    serde_json::json!({"0": -100, "2": -100})
}

/// The `data:` payloads of an SSE body, in order (events must be `\n\n` framed).
pub fn sse_data(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "SSE body must end with a blank line"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

pub fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "orinari-small",
        "messages": [{"role": "user", "content": content}],
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}
