//! A gateway replaced by the next one (a configuration reload) against
//! real HTTP upstreams: a kept model keeps its pool and health checks, a
//! rebuilt one gets new ones and the old checks stop, fallbacks resolve
//! against the new models, and gauges of removed backends go away.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orinari_balance::{
    BackendSpec, BreakerConfig, Gateway, HealthConfig, PoolConfig, Retry, Strategy, Timeouts,
};
use orinari_fake_upstream::{FakeUpstream, Faults};
use orinari_models::openai::OpenAiBackend;
use orinari_models::{GenerateRequest, Message, ModelBackend, Sampling, UpstreamConfig};
use orinari_telemetry::models::{BackendLabels, ModelMetrics};

fn spec(name: &str, fake: &FakeUpstream) -> BackendSpec {
    let upstream = UpstreamConfig {
        base_url: fake.base_url(),
        model: "fake".into(),
        api_key: None,
        connect_timeout: Duration::from_millis(500),
        health_path: "models".into(),
        context_window: 8192,
        http_version: orinari_models::HttpVersion::Auto,
    };
    BackendSpec {
        name: name.into(),
        provider: "openai".into(),
        group: "blue".into(),
        weight: 100,
        region: None,
        backend: Arc::new(OpenAiBackend::new(upstream).unwrap()),
    }
}

fn pool(name: &str, fallback: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        strategy: Strategy::RoundRobin,
        fallback: fallback.iter().map(|f| f.to_string()).collect(),
        timeouts: Timeouts {
            first_token: Duration::from_secs(2),
            idle: Duration::from_secs(2),
            total: Duration::from_secs(5),
        },
        retry: Retry {
            max_attempts: 1,
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
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(100),
        },
        region: "local".into(),
        group_weights: BTreeMap::new(),
    }
}

fn ask() -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message::text("user", "hello")],
        sampling: Sampling::default(),
        stream: false,
        ..GenerateRequest::default()
    }
}

fn served(gw: &Gateway, name: &str) -> Arc<dyn ModelBackend> {
    gw.models()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b)
        .unwrap()
}

fn gauge_exists(metrics: &ModelMetrics, model: &str, backend: &str) -> bool {
    let labels = BackendLabels {
        model: model.into(),
        backend: backend.into(),
    };
    metrics.backend_up.get(&labels).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_pools_go_on_and_replaced_ones_stop() {
    let a = FakeUpstream::start(Faults::default()).await.unwrap();
    let b = FakeUpstream::start(Faults::default()).await.unwrap();
    let c = FakeUpstream::start(Faults::default()).await.unwrap();
    let metrics = ModelMetrics::default();
    let mut builder = Gateway::builder(metrics.clone());
    builder
        .pool(pool("first", &["second"]), vec![spec("a", &a)])
        .pool(pool("second", &[]), vec![spec("b", &b)]);
    let old = builder.build();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.probes() > 0 && b.probes() > 0, "health checks run");
    assert!(gauge_exists(&metrics, "second", "b"));

    // The next configuration keeps `first` and moves `second` to c.
    let mut next = old.next();
    assert!(next.keep("first", &old));
    next.pool(pool("second", &[]), vec![spec("c", &c)]);
    let new = next.build();
    old.retire(&new);
    assert!(
        Arc::ptr_eq(&served(&old, "first"), &served(&new, "first")),
        "a kept model is the same pool"
    );
    assert!(
        !gauge_exists(&metrics, "second", "b"),
        "a removed backend leaves the gauges"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (a0, b0, c0) = (a.probes(), b.probes(), c.probes());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.probes() > a0, "the kept pool's health checks go on");
    assert_eq!(b.probes(), b0, "the replaced pool's health checks stopped");
    assert!(c.probes() > c0, "the new pool is checked");

    // The kept pool's fallback now resolves to the new `second` (c, not b).
    a.set(|f| f.fail_status = Some(500));
    let requests = (b.requests(), c.requests());
    served(&new, "first")
        .start(ask())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(b.requests(), requests.0);
    assert_eq!(c.requests(), requests.1 + 1);

    // Dropping the retired gateway does not stop what the new one kept.
    drop(old);
    let a1 = a.probes();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.probes() > a1);
    new.shutdown();
}
