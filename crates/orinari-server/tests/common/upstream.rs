//! A real server whose model `m` is a pool of backends in front of the
//! in-repo fake upstream (`orinari-fake-upstream`, which really emits tool
//! calls), through the OpenAI or the Anthropic adapter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orinari_balance::{
    BackendSpec, BreakerConfig, Gateway, HealthConfig, PoolConfig, Retry, Strategy, Timeouts,
};
use orinari_fake_upstream::FakeUpstream;
use orinari_models::anthropic::AnthropicBackend;
use orinari_models::openai::OpenAiBackend;
use orinari_models::{ModelBackend, UpstreamConfig};
use orinari_server::AppState;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct App {
    pub base: String,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// A backend named `name` on `fake`, speaking `provider` (`openai` or
/// `anthropic`).
pub fn spec(name: &str, provider: &str, fake: &FakeUpstream) -> BackendSpec {
    let upstream = UpstreamConfig {
        base_url: fake.base_url(),
        model: "fake".into(),
        api_key: None,
        connect_timeout: Duration::from_millis(500),
        health_path: "models".into(),
        context_window: 4096,
        http_version: orinari_models::HttpVersion::Auto,
    };
    let backend: Arc<dyn ModelBackend> = match provider {
        "anthropic" => Arc::new(AnthropicBackend::new(upstream).unwrap()),
        _ => Arc::new(OpenAiBackend::new(upstream).unwrap()),
    };
    BackendSpec {
        name: name.into(),
        provider: provider.into(),
        group: "blue".into(),
        weight: 100,
        region: None,
        backend,
    }
}

pub fn pool() -> PoolConfig {
    PoolConfig {
        name: "m".into(),
        strategy: Strategy::RoundRobin,
        fallback: Vec::new(),
        timeouts: Timeouts {
            first_token: Duration::from_secs(2),
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
            consecutive_failures: 100,
            error_rate: 1.0,
            window: 20,
            open_for: Duration::from_millis(300),
        },
        health: HealthConfig {
            interval: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
        },
        region: "local".into(),
        group_weights: BTreeMap::new(),
    }
}

/// Serve the model `m` over `backends` on port 0.
pub async fn serve(backends: Vec<BackendSpec>) -> App {
    let state = AppState::new(Vec::new(), 32_000, 1 << 20);
    let mut gw = Gateway::builder(state.metrics().models.clone());
    gw.pool(pool(), backends);
    let state = state
        .with_gateway(gw.build())
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
    /// POST `body` to `path`: the status and the body's text.
    pub async fn post_to(&self, path: &str, body: &Value) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}
