//! Overload behaviour with the real embedded model: capacity is 4 running
//! answers plus 4 queued. First a closed loop of 4 clients (exactly the
//! running capacity) measures the baseline; then 16 clients (2x the whole
//! capacity of 8) hammer it. Admitted answers should come at the same speed
//! (tokens/s while generating) and the rest be refused fast (503).
//!
//! The clients run in a child process (this example started again with
//! `--clients BASE`), so a refusal's latency is the server's and the
//! kernel's scheduling, not a wait behind the clients' own tasks on the
//! server's tokio workers. `OVERLOAD_CLIENTS=in-process` runs them on the
//! server's runtime instead, as this example did until 2026-12-07.
//! At the end it also prints the server's own view of the refusals, from
//! its `orinari_http_request_duration_seconds` histogram (arrival to
//! response head): every answered request takes hundreds of milliseconds,
//! so the chat route's requests in the 0.5 ms and 1 ms buckets are refusals.
//!
//! cargo run --release -p orinari-server --example overload
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark"
)]
#![allow(clippy::disallowed_methods, reason = "an example's tasks end with it")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use orinari_config::admission::AdmissionConfig;
use orinari_limits::Edge;
use orinari_models::local::{LocalConfig, LocalModel, default_model_path};
use orinari_server::{AppState, ServedModel};
use serde_json::json;
use tokio::sync::Mutex;

const PHASE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    ok_tokens: u64,
    refused: Vec<Duration>,
    other: usize,
}

async fn run(base: &str, clients: usize) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let http = reqwest::Client::new();
    let end = Instant::now() + PHASE;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, tally, url) = (
            http.clone(),
            tally.clone(),
            format!("{base}/v1/chat/completions"),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .json(&json!({"model": "orinari-small", "max_tokens": 32, "temperature": 0,
                        "messages": [{"role": "user", "content": "Write one sentence about the sea."}]}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let took = t.elapsed();
                let mut tl = tally.lock().await;
                match status {
                    200 => {
                        tl.ok.push(took);
                        tl.ok_tokens += body["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                    }
                    503 => {
                        tl.refused.push(took);
                        drop(tl);
                        // A well-behaved client honours Retry-After; this one
                        // retries after 50 ms to keep the pressure on.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => tl.other += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(tally).ok().unwrap().into_inner()
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn report(label: &str, mut t: Tally) {
    let secs = PHASE.as_secs_f64();
    println!(
        "{label}: {} answered ({:.2}/s, {:.1} completion tok/s), latency p50 {:.0} ms p99 {:.0} ms; {} refused (p50 {:.3} ms, p99 {:.3} ms); {} other",
        t.ok.len(),
        t.ok.len() as f64 / secs,
        t.ok_tokens as f64 / secs,
        pct(&mut t.ok, 0.5),
        pct(&mut t.ok, 0.99),
        t.refused.len(),
        pct(&mut t.refused, 0.5),
        pct(&mut t.refused, 0.99),
        t.other,
    );
}

/// The warm-up, the baseline and the overload phase against `base`.
async fn clients(base: &str) {
    let _ = run(base, 4).await; // warm-up
    report(
        "baseline, 4 clients (= running capacity)",
        run(base, 4).await,
    );
    report(
        "2x overload, 16 clients (capacity 4 running + 4 queued)",
        run(base, 16).await,
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, base] = args.as_slice()
        && flag == "--clients"
    {
        runtime().block_on(clients(base));
        return;
    }
    runtime().block_on(server());
}

async fn server() {
    let model = LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: None,
        max_active: 4,
        queue_depth: 16,
        requantize: true,
    })
    .expect("the model (run scripts/fetch-model.sh)");
    let mut admission = AdmissionConfig::default();
    admission.limits.max_concurrent_per_model = 4;
    admission.limits.queue_depth = 4;
    admission.limits.requests_per_minute = 1_000_000;
    admission.limits.tokens_per_minute = 100_000_000;
    let state = AppState::new(
        vec![ServedModel {
            name: "orinari-small".into(),
            backend: Arc::new(model),
        }],
        32_000,
        1 << 20,
    )
    .with_edge(Edge::new(admission, &[("orinari-small".into(), Some(4))]));
    let metrics = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(orinari_server::serve(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    if std::env::var("OVERLOAD_CLIENTS").as_deref() == Ok("in-process") {
        println!("clients on the server's runtime");
        clients(&base).await;
    } else {
        println!("clients in a child process");
        child_clients(base).await;
    }
    server_view(&metrics.metrics().render());
}

async fn child_clients(base: String) {
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--clients", &base])
            .status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "the clients' process failed: {status}");
}

/// The server's own timing of the refusals: the chat route's 503s next to
/// its requests answered within 0.5 ms and within 1 ms.
fn server_view(metrics: &str) {
    const ROUTE: &str = "route=\"/v1/chat/completions\"";
    let value = |prefix: &str, needle: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(ROUTE) && l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let refused = value("orinari_http_requests_total", "status=\"503\"");
    let bucket = |le: &str| {
        value(
            "orinari_http_request_duration_seconds_bucket",
            &format!("le=\"{le}\""),
        )
    };
    println!(
        "server side (arrival to response head), whole run: {refused} refused; {} requests answered within 0.5 ms, {} within 1 ms, {} within 2 ms",
        bucket("0.0005"),
        bucket("0.001"),
        bucket("0.002"),
    );
}
