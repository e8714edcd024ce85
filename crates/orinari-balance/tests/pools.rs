//! Pools against real HTTP upstreams (the in-repo fake, in-process on port 0):
//! balancing, failover when a backend dies under load, recovery, fallback,
//! circuit breaking, mid-stream failure, every timeout, and rollouts.
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
use std::time::{Duration, Instant};

use orinari_balance::{
    BackendSpec, BreakerConfig, CircuitState, Gateway, HealthConfig, PoolConfig, Retry,
    RolloutRequest, Strategy, Timeouts,
};
use orinari_fake_upstream::{FakeUpstream, Faults};
use orinari_models::anthropic::AnthropicBackend;
use orinari_models::openai::OpenAiBackend;
use orinari_models::{
    Event, GenerateRequest, HttpVersion, Message, ModelBackend, ModelError, Sampling,
    UpstreamConfig, UpstreamSecret,
};
use orinari_telemetry::models::ModelMetrics;

fn upstream(base_url: String) -> UpstreamConfig {
    UpstreamConfig {
        base_url,
        model: "fake".into(),
        api_key: Some(UpstreamSecret::new("sk-test")),
        connect_timeout: Duration::from_millis(500),
        health_path: "models".into(),
        context_window: 8192,
        http_version: orinari_models::HttpVersion::Auto,
    }
}

fn spec(name: &str, group: &str, fake: &FakeUpstream) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        provider: "openai".into(),
        group: group.into(),
        weight: 100,
        region: None,
        backend: Arc::new(OpenAiBackend::new(upstream(fake.base_url())).unwrap()),
    }
}

fn pool(name: &str, strategy: Strategy) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        strategy,
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
            consecutive_failures: 3,
            error_rate: 0.5,
            window: 20,
            open_for: Duration::from_millis(300),
        },
        // Probed often, with a timeout far from a loopback answer: one probe
        // slower than its timeout takes a backend out by design, and at
        // load average 15-20 a 100 ms timeout took out the last healthy
        // backend while its peer was dead (136 `Unavailable`s, 2 runs in 50).
        health: HealthConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        },
        region: "local".into(),
        group_weights: BTreeMap::new(),
    }
}

fn ask(stream: bool) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message::text("user", "hello")],
        sampling: Sampling::default(),
        stream,
        ..GenerateRequest::default()
    }
}

/// Read a generation to its end: the text, or the first error.
async fn read(model: &dyn ModelBackend, stream: bool) -> Result<String, ModelError> {
    Ok(model.start(ask(stream)).await?.collect().await?.text)
}

/// A fake upstream streaming `tokens` tokens `chunk_delay` apart, and a
/// backend speaking HTTP/2 to it (prior knowledge).
async fn http2_fake(tokens: usize, chunk_delay: Duration) -> (FakeUpstream, OpenAiBackend) {
    let fake = FakeUpstream::start(Faults {
        chunk_delay,
        tokens,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut config = upstream(fake.base_url());
    config.http_version = orinari_models::HttpVersion::Http2;
    let backend = OpenAiBackend::new(config).unwrap();
    (fake, backend)
}

/// 99 streams started at once, each read to its first token; then every
/// client hangs up at once, mid-answer. Every start must succeed.
async fn start_99_then_hang_up(backend: &OpenAiBackend) {
    let started = futures::future::join_all((0..99).map(|_| backend.start(ask(true)))).await;
    let mut open = Vec::new();
    for generation in started {
        let mut g = generation.unwrap();
        assert!(matches!(g.events.recv().await, Some(Ok(Event::Delta(_)))));
        open.push(g);
    }
    drop(open);
}

fn only(gw: &Gateway, name: &str) -> Arc<dyn ModelBackend> {
    gw.models().find(|(n, _)| *n == name).unwrap().1
}

#[tokio::test]
async fn round_robin_spreads_and_relays_text_and_key() {
    let a = FakeUpstream::start(Faults::default()).await.unwrap();
    let b = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        pool("m", Strategy::RoundRobin),
        vec![spec("a", "blue", &a), spec("b", "blue", &b)],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    for i in 0..20 {
        let text = read(m.as_ref(), i % 2 == 0).await.unwrap();
        assert_eq!(text, orinari_fake_upstream::wire_text(8));
    }
    assert_eq!((a.requests(), b.requests()), (10, 10));
    assert_eq!(a.last_auth().as_deref(), Some("Bearer sk-test"));
    // `http_version = "auto"` over plain http: HTTP/1.1, kept alive (a
    // health check running alongside a request may take a second one).
    assert_eq!(a.http2_requests(), 0);
    assert!(a.connections() <= 2, "{} connections", a.connections());
}

/// An `https` upstream that accepts TCP and then says nothing: the
/// connection attempt (TCP and TLS) is bounded by the connect timeout, over
/// HTTP/1.1 and HTTP/2 alike, and the next request dials anew instead of
/// waiting on the dead attempt.
#[tokio::test]
async fn a_silent_https_upstream_times_out_at_connect() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            // Held open, never answered.
            let _ = tx.send(socket);
        }
    });
    let mut held = Vec::new();
    for version in [
        orinari_models::HttpVersion::Http1,
        orinari_models::HttpVersion::Auto,
    ] {
        let mut config = upstream(format!("https://{addr}/v1"));
        config.connect_timeout = Duration::from_millis(200);
        config.http_version = version;
        let backend = OpenAiBackend::new(config).unwrap();
        for _ in 0..2 {
            let t0 = std::time::Instant::now();
            let err = backend.start(ask(true)).await.unwrap_err();
            assert!(
                matches!(err, ModelError::Timeout(_)),
                "{version:?}: {err:?}"
            );
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            held.push(accepted.recv().await.unwrap());
        }
    }
}

/// `http_version = "2"` (prior knowledge over plain http): streams share
/// connections, at most 100 each, so 150 streams open at once take two
/// (hyper-util's pool alone keeps one and would queue the streams past the
/// server's limit behind the running ones). When the upstream dies, its
/// connections are forgotten and new ones are made once it is back.
#[tokio::test]
async fn http2_streams_share_connections_and_overflow_into_new_ones() {
    let (mut fake, backend) = http2_fake(4, Duration::from_millis(20)).await;
    let started = futures::future::join_all((0..150).map(|_| backend.start(ask(true)))).await;
    let mut open = Vec::new();
    for generation in started {
        let mut g = generation.unwrap();
        assert!(matches!(g.events.recv().await, Some(Ok(Event::Delta(_)))));
        open.push(g);
    }
    assert_eq!((fake.connections(), fake.http2_requests()), (2, 150));
    for mut g in open {
        let mut events = 1;
        while let Some(e) = g.events.recv().await {
            e.unwrap();
            events += 1;
        }
        assert_eq!(events, 5, "4 tokens and the end");
    }
    // Sequential requests reuse an open connection.
    assert_eq!(
        read(&backend, false).await.unwrap(),
        orinari_fake_upstream::wire_text(4)
    );
    assert_eq!(fake.connections(), 2);

    fake.stop().await;
    assert!(read(&backend, true).await.is_err());
    fake.restart().await.unwrap();
    assert_eq!(
        read(&backend, true).await.unwrap(),
        orinari_fake_upstream::wire_text(4)
    );
    assert_eq!(fake.http2_requests(), 152);
    assert!(backend.probe().await.is_ok());
}

/// Cancelled streams are reset; the frames the upstream had already sent
/// for them keep arriving. h2 closes a connection after 1,024 such frames on
/// streams it no longer remembers, with every stream on it, so it must
/// remember all the streams a connection can carry.
#[tokio::test]
async fn cancelled_http2_streams_never_cost_the_connection() {
    let (fake, backend) = http2_fake(300, Duration::from_millis(1)).await;
    let rounds = async {
        for _ in 0..30 {
            start_99_then_hang_up(&backend).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .unwrap();
    assert_eq!(fake.connections(), 1, "the connection was closed");
    assert_eq!(
        read(&backend, true).await.unwrap(),
        orinari_fake_upstream::wire_text(300)
    );
}

/// A strict upstream closes connections on purpose: after a number of
/// requests (nginx's `keepalive_requests`), with `GOAWAY` over HTTP/2 and
/// `Connection: close` over HTTP/1.1. Requests it did not process (above
/// the `GOAWAY`'s last stream id, sent after it, or never written on a
/// connection that had closed) go again at once on a new connection, and no
/// client sees an error.
async fn closing_connections_mid_load_cost_no_client_request(version: HttpVersion, every: u64) {
    let fake = FakeUpstream::start(Faults {
        tokens: 6,
        chunk_delay: Duration::from_millis(2),
        max_requests_per_connection: Some(every),
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut config = upstream(fake.base_url());
    config.http_version = version;
    let backend = Arc::new(OpenAiBackend::new(config).unwrap());
    let clients = (0..16).map(|i| {
        let backend = backend.clone();
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for j in 0..25 {
                if let Err(e) = read(backend.as_ref(), (i + j) % 3 != 0).await {
                    failed.push(e);
                }
            }
            failed
        })
    });
    let mut failed = Vec::new();
    for c in futures::future::join_all(clients).await {
        failed.extend(c.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    // 400 requests, `every` a connection before it closes (an HTTP/2
    // graceful close still takes the streams that arrive within one round
    // trip, so a connection may carry up to about twice as many).
    let closes = 400 / every / 2;
    assert!(
        fake.goaways() >= closes,
        "{} closed by the limit",
        fake.goaways()
    );
    assert!(
        fake.connections() > closes,
        "{} connections",
        fake.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_mid_load_costs_no_client_request() {
    closing_connections_mid_load_cost_no_client_request(HttpVersion::Http2, 50).await;
}

/// The same with a `GOAWAY` every 10 requests: 40 closes racing 16 clients.
/// A request handed to a connection just as its task ended used to wait for
/// ever (about once in 50 to 300 runs under load): hyper's request channel
/// keeps such a request until every sender of the channel is dropped, and
/// the pool held one (`orinari-upstream`'s `Link::sender`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_every_10_requests_costs_no_client_request() {
    closing_connections_mid_load_cost_no_client_request(HttpVersion::Http2, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_closed_mid_load_cost_no_client_request() {
    closing_connections_mid_load_cost_no_client_request(HttpVersion::Http1, 10).await;
}

/// An upstream with a reset-flood limit (the CVE-2023-44487 defence) says
/// `GOAWAY` once clients have cancelled enough streams on a connection: the
/// streams it already accepted finish, and the requests after it open a new
/// connection instead of failing.
#[tokio::test]
async fn a_reset_flood_limit_upstream_costs_no_request() {
    let (fake, backend) = http2_fake(300, Duration::from_millis(1)).await;
    fake.set(|f| f.max_cancelled_per_connection = Some(150));
    for _ in 0..10 {
        start_99_then_hang_up(&backend).await;
    }
    // 990 streams cancelled; the server counts those it saw cancelled
    // before the end of its answer, at most 99 a round.
    assert!(fake.goaways() >= 2, "{} GOAWAYs", fake.goaways());
    assert!(
        fake.connections() > fake.goaways(),
        "{} connections, {} GOAWAYs",
        fake.connections(),
        fake.goaways()
    );
    assert_eq!(
        read(&backend, true).await.unwrap(),
        orinari_fake_upstream::wire_text(300)
    );
}

#[tokio::test]
async fn a_backend_killed_under_load_costs_no_client_errors_and_comes_back() {
    let slow = Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    };
    let mut a = FakeUpstream::start(slow.clone()).await.unwrap();
    let b = FakeUpstream::start(slow).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        pool("m", Strategy::P2cEwma),
        vec![spec("a", "blue", &a), spec("b", "blue", &b)],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    let load = |n: usize| {
        let m = m.clone();
        tokio::spawn(async move {
            let mut errors = 0;
            for i in 0..n {
                if read(m.as_ref(), i % 2 == 0).await.is_err() {
                    errors += 1;
                }
            }
            errors
        })
    };
    let clients: Vec<_> = (0..16).map(|_| load(30)).collect();
    // Kill `a` once it is serving, not after a fixed time (a loaded machine
    // may not have reached it yet).
    let started = std::time::Instant::now();
    while a.requests() < 3 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.stop().await;
    let before_restart = a.requests();
    let mut errors = 0;
    for c in clients {
        errors += c.await.unwrap();
    }
    assert_eq!(errors, 0, "client errors while a backend died");
    assert!(before_restart > 0, "a served traffic before it died");
    let status = gw.model_status("m").unwrap();
    assert!(!status.backends[0].up || status.backends[0].circuit != CircuitState::Closed);

    // Back up: probes and the half-open trial bring traffic back by itself.
    a.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let served = a.requests();
    for _ in 0..40 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert!(
        a.requests() > served,
        "traffic returned to the restarted backend"
    );
    let status = gw.model_status("m").unwrap();
    assert!(status.backends[0].up);
    assert_eq!(status.backends[0].circuit, CircuitState::Closed);
}

#[tokio::test]
async fn every_backend_failing_falls_back_to_the_next_model() {
    let broken = FakeUpstream::start(Faults {
        fail_status: Some(503),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let good = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    let mut main = pool("main", Strategy::Weighted);
    main.fallback = vec!["spare".into()];
    gw.pool(main, vec![spec("x", "blue", &broken)]);
    gw.pool(
        pool("spare", Strategy::Weighted),
        vec![spec("y", "blue", &good)],
    );
    let gw = gw.build();
    let m = only(&gw, "main");
    assert!(read(m.as_ref(), true).await.is_ok());
    assert!(read(m.as_ref(), false).await.is_ok());
    assert_eq!(good.requests(), 2);
    // Three attempts on the one broken backend (retry with backoff) open its
    // circuit; the second request goes straight to the fallback.
    assert_eq!(broken.requests(), 3);
    assert_eq!(
        gw.model_status("main").unwrap().backends[0].circuit,
        CircuitState::Open
    );
    // Ready, through its fallback.
    assert!(m.ready());
}

/// Panic routing: with no backend passing its health check (here the probe
/// path does not exist, so every probe fails), requests still go to the
/// backends whose circuits are closed and are answered; `ready()` keeps
/// following the checks. When the backend fails its requests too, those
/// failures are the answers until three of them open its circuit; then
/// requests are refused at once with `Unavailable`, as without panic routing.
#[tokio::test]
async fn with_every_health_check_failing_requests_still_reach_a_backend_that_answers() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut config = upstream(fake.base_url());
    config.health_path = "no-such-endpoint".into();
    let mut pool_config = pool("m", Strategy::RoundRobin);
    pool_config.breaker.open_for = Duration::from_secs(30);
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        pool_config,
        vec![BackendSpec {
            backend: Arc::new(OpenAiBackend::new(config).unwrap()),
            ..spec("a", "blue", &fake)
        }],
    );
    let gw = gw.build();
    let started = Instant::now();
    while gw.model_status("m").unwrap().backends[0].up {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failing probe never marked the backend down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = only(&gw, "m");
    assert!(!m.ready(), "readiness follows the health checks");
    let before = fake.requests();
    assert!(read(m.as_ref(), false).await.is_ok());
    assert!(read(m.as_ref(), true).await.is_ok());
    assert_eq!(fake.requests() - before, 2);

    fake.set(|f| f.fail_status = Some(500));
    let before = fake.requests();
    // One request: three attempts (max_attempts), each a 500.
    let err = read(m.as_ref(), false).await.unwrap_err();
    assert!(matches!(err, ModelError::Upstream(_)), "{err:?}");
    for _ in 0..4 {
        let err = read(m.as_ref(), false).await.unwrap_err();
        assert!(matches!(err, ModelError::Unavailable), "{err:?}");
    }
    assert_eq!(
        fake.requests() - before,
        3,
        "three failed attempts open the circuit; the rest are refused without one"
    );
    assert_eq!(
        gw.model_status("m").unwrap().backends[0].circuit,
        CircuitState::Open
    );
}

#[tokio::test]
async fn a_refused_request_is_not_retried() {
    let refusing = FakeUpstream::start(Faults {
        fail_status: Some(400),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let other = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        pool("m", Strategy::RoundRobin),
        vec![spec("a", "blue", &refusing), spec("b", "blue", &other)],
    );
    let gw = gw.build();
    let err = read(only(&gw, "m").as_ref(), false).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Rejected(ref m) if m.contains("injected failure 400")),
        "{err:?}"
    );
    assert_eq!(other.requests(), 0);
}

#[tokio::test]
async fn failures_open_the_circuit_and_it_closes_after_recovery() {
    let flaky = FakeUpstream::start(Faults {
        fail_status: Some(500),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let good = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    // Open for 2 s: the 10 reads below must all fall within it, and with
    // 300 ms a loaded machine (load average 15-20) once let the circuit
    // turn half-open before the last of them (4 requests to `a`, 1 run in 50).
    let mut config = pool("m", Strategy::RoundRobin);
    config.breaker.open_for = Duration::from_secs(2);
    gw.pool(
        config,
        vec![spec("a", "blue", &flaky), spec("b", "blue", &good)],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!(flaky.requests(), 3, "the circuit opened after 3 failures");
    assert_eq!(
        gw.model_status("m").unwrap().backends[0].circuit,
        CircuitState::Open
    );
    flaky.set(|f| f.fail_status = None);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert!(
        flaky.requests() > 4,
        "traffic came back after the half-open trial"
    );
    assert_eq!(
        gw.model_status("m").unwrap().backends[0].circuit,
        CircuitState::Closed
    );
}

#[tokio::test]
async fn death_mid_stream_ends_with_an_error_after_the_tokens() {
    let dying = FakeUpstream::start(Faults {
        die_after: Some(3),
        chunk_delay: Duration::from_millis(1),
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        pool("m", Strategy::RoundRobin),
        vec![spec("a", "blue", &dying)],
    );
    let gw = gw.build();
    let mut g = only(&gw, "m").start(ask(true)).await.unwrap();
    let mut deltas = 0;
    let err = loop {
        match g.events.recv().await.unwrap() {
            Ok(Event::Delta(_)) => deltas += 1,
            Ok(Event::Done { .. }) => panic!("a dead stream cannot finish"),
            Ok(Event::ToolCall(_) | Event::Logprobs(_)) => {
                panic!("no tool or logprobs were asked for")
            }
            Err(e) => break e,
        }
    };
    assert_eq!(deltas, 3);
    assert!(matches!(err, ModelError::Upstream(_)), "{err:?}");
    assert!(g.events.recv().await.is_none());
}

async fn single(faults: Faults, timeouts: Timeouts) -> (FakeUpstream, Arc<Gateway>) {
    let fake = FakeUpstream::start(faults).await.unwrap();
    let mut config = pool("m", Strategy::RoundRobin);
    config.timeouts = timeouts;
    config.retry.max_attempts = 1;
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(config, vec![spec("a", "blue", &fake)]);
    (fake, gw.build())
}

const T: Timeouts = Timeouts {
    first_token: Duration::from_millis(150),
    idle: Duration::from_millis(150),
    total: Duration::from_millis(600),
};

#[tokio::test]
async fn first_token_timeout() {
    let slow = Faults {
        first_token_delay: Duration::from_secs(10),
        ..Faults::default()
    };
    let (_f, gw) = single(slow, T).await;
    let t = std::time::Instant::now();
    let err = only(&gw, "m").start(ask(true)).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Timeout(ref m) if m.contains("first token")),
        "{err:?}"
    );
    // The 150 ms deadline ended it, not the upstream's 10 s (with room for
    // a loaded machine).
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn idle_timeout_on_a_stalled_stream() {
    let stall = Faults {
        stall_after: Some(2),
        chunk_delay: Duration::from_millis(1),
        ..Faults::default()
    };
    let (_f, gw) = single(stall, T).await;
    let err = read(only(&gw, "m").as_ref(), true).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Timeout(ref m) if m.contains("no token")),
        "{err:?}"
    );
}

#[tokio::test]
async fn total_timeout_on_a_slow_stream() {
    let slow = Faults {
        chunk_delay: Duration::from_millis(100),
        tokens: 20,
        ..Faults::default()
    };
    // Tokens every 100 ms for 2 s: the 600 ms total ends it. The idle and
    // first-token timeouts are far from the token gap and a loopback first
    // token, so a loaded machine stretching one gap past 150 ms (it did, one
    // run in 50) or the first token past 150 ms (load average 15-20, one
    // run in 50) cannot end it first.
    let timeouts = Timeouts {
        first_token: Duration::from_secs(1),
        idle: Duration::from_secs(1),
        ..T
    };
    let (_f, gw) = single(slow, timeouts).await;
    let err = read(only(&gw, "m").as_ref(), true).await.unwrap_err();
    assert!(
        matches!(err, ModelError::Timeout(ref m) if m.contains("longer than")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connect_failures_and_resets_fail_over() {
    let reset = FakeUpstream::start(Faults {
        reset: true,
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut dead = FakeUpstream::start(Faults::default()).await.unwrap();
    dead.stop().await;
    let good = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut config = pool("m", Strategy::RoundRobin);
    config.retry.max_attempts = 3;
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(
        config,
        vec![
            spec("reset", "blue", &reset),
            spec("dead", "blue", &dead),
            spec("good", "blue", &good),
        ],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    for i in 0..6 {
        read(m.as_ref(), i % 2 == 0).await.unwrap();
    }
    assert_eq!(good.requests(), 6);
}

#[tokio::test]
async fn rollout_moves_traffic_and_rollback_restores_it() {
    let blue = FakeUpstream::start(Faults::default()).await.unwrap();
    let green = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    let mut config = pool("m", Strategy::Weighted);
    config.group_weights = BTreeMap::from([("blue".into(), 100), ("green".into(), 0)]);
    gw.pool(
        config,
        vec![spec("b", "blue", &blue), spec("g", "green", &green)],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!(green.requests(), 0);
    let s = gw
        .rollout(
            "m",
            RolloutRequest {
                weights: BTreeMap::from([("blue".into(), 0), ("green".into(), 100)]),
                steps: 1,
                step_interval: Duration::ZERO,
                max_error_rate: None,
            },
        )
        .unwrap();
    assert_eq!(s.groups["green"], 100);
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!((blue.requests(), green.requests()), (10, 10));
    let s = gw.rollback("m").unwrap();
    assert_eq!(s.groups["blue"], 100);
    assert_eq!(s.groups["green"], 0);
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!((blue.requests(), green.requests()), (20, 10));
    // Bad input names the field.
    let err = gw
        .rollout(
            "m",
            RolloutRequest {
                weights: BTreeMap::from([("purple".into(), 5)]),
                steps: 1,
                step_interval: Duration::ZERO,
                max_error_rate: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("unknown group `purple`"), "{err}");
}

#[tokio::test]
async fn a_stepped_rollout_halts_and_rolls_back_on_errors() {
    let blue = FakeUpstream::start(Faults::default()).await.unwrap();
    let green = FakeUpstream::start(Faults {
        fail_status: Some(500),
        health_follows_failures: false,
        ..Faults::default()
    })
    .await
    .unwrap();
    let mut gw = Gateway::builder(ModelMetrics::default());
    let mut config = pool("m", Strategy::Weighted);
    config.group_weights = BTreeMap::from([("blue".into(), 100), ("green".into(), 0)]);
    config.breaker.consecutive_failures = 1000;
    config.breaker.error_rate = 1.1;
    gw.pool(
        config,
        vec![spec("b", "blue", &blue), spec("g", "green", &green)],
    );
    let gw = gw.build();
    let m = only(&gw, "m");
    gw.rollout(
        "m",
        RolloutRequest {
            weights: BTreeMap::from([("blue".into(), 0), ("green".into(), 100)]),
            steps: 4,
            step_interval: Duration::from_millis(300),
            max_error_rate: Some(0.1),
        },
    )
    .unwrap();
    assert_eq!(gw.model_status("m").unwrap().rollout.state, "running");
    // Clients see no errors (green's failures fail over to blue) …
    // The first step is judged after 300 ms, if green saw enough requests
    // by then; on a loaded machine that can take a step or two more (one
    // run in 50 was still running at 700 ms), so wait for the outcome.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while gw.model_status("m").unwrap().rollout.state == "running"
        && std::time::Instant::now() < until
    {
        read(m.as_ref(), false).await.unwrap();
    }
    // … and the rollout rolled itself back.
    let s = gw.model_status("m").unwrap();
    assert_eq!(s.rollout.state, "rolled_back", "{s:?}");
    assert!(s.rollout.reason.unwrap().contains("group `green`"));
    assert_eq!(s.groups["green"], 0);
    assert_eq!(s.groups["blue"], 100);
}

#[tokio::test]
async fn anthropic_backends_stream_and_answer_whole() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let backend = AnthropicBackend::new(upstream(fake.base_url())).unwrap();
    assert_eq!(
        read(&backend, true).await.unwrap(),
        orinari_fake_upstream::wire_text(8)
    );
    let answer = backend
        .start(ask(false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(answer.usage.completion_tokens, 8);
    assert_eq!(fake.last_auth().as_deref(), Some("sk-test"));
    assert!(backend.probe().await.is_ok());
}

#[tokio::test]
async fn backends_in_our_region_are_preferred_until_they_fail() {
    let near = FakeUpstream::start(Faults::default()).await.unwrap();
    let far = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut config = pool("m", Strategy::P2cEwma);
    config.region = "eu".into();
    let mut n = spec("near", "blue", &near);
    n.region = Some("eu".into());
    let mut f = spec("far", "blue", &far);
    f.region = Some("us".into());
    let mut gw = Gateway::builder(ModelMetrics::default());
    gw.pool(config, vec![f, n]);
    let gw = gw.build();
    let m = only(&gw, "m");
    for _ in 0..10 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!((near.requests(), far.requests()), (10, 0));
    near.set(|f| f.fail_status = Some(502));
    for _ in 0..5 {
        read(m.as_ref(), false).await.unwrap();
    }
    assert_eq!(far.requests(), 5, "failover leaves the region when it must");
}
