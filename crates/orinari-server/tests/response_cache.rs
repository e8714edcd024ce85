//! The exact response cache through the real server, over a pool in front
//! of the in-repo fake upstream (which counts the requests it gets): a
//! deterministic request answered twice reaches the upstream once and the
//! second answer is the first one replayed (whole, and streamed in the
//! same chunks), on every API surface (Chat Completions, Responses,
//! Messages, legacy Completions); sampled requests, other parameters, an
//! opt-out (`"orinari": {"cache": false}`, on each surface) and tools miss
//! or bypass it; entries expire; a stream that failed or was
//! cancelled is never stored; in Redis only ciphertext is kept, and a
//! Redis outage is a miss, never an error.
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

use std::time::Duration;

use orinari_balance::Gateway;
use orinari_chat::ResponseCache;
use orinari_config::ResponseCacheConfig;
use orinari_fake_upstream::{FakeUpstream, Faults};
use orinari_server::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct App {
    base: String,
    client: reqwest::Client,
    state: AppState,
    _stop: oneshot::Sender<()>,
}

/// Model `m` over `fake`, caching for `ttl` (in Redis when `redis` is set).
async fn serve(fake: &FakeUpstream, ttl: Duration, redis: Option<&str>) -> App {
    let state = AppState::new(Vec::new(), 32_000, 1 << 20);
    let mut gw = Gateway::builder(state.metrics().models.clone());
    gw.pool(
        common::upstream::pool(),
        vec![common::upstream::spec("a", "openai", fake)],
    );
    let cache = ResponseCache::new(
        [(
            "m",
            ResponseCacheConfig {
                ttl,
                max_bytes: 1 << 20,
            },
        )],
        redis,
        &state.metrics().models,
    )
    .unwrap();
    let state = state
        .with_gateway(gw.build())
        .with_edge(orinari_limits::Edge::new(
            orinari_config::admission::AdmissionConfig::default(),
            &[("m".to_string(), None)],
        ))
        .with_response_cache(cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(orinari_server::serve(
        listener,
        state.clone(),
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    App {
        base,
        client: reqwest::Client::new(),
        state,
        _stop: tx,
    }
}

fn ask(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

impl App {
    /// POST a chat request: status, whether it was a cache hit, body text.
    async fn post(&self, body: &Value) -> (u16, bool, String) {
        self.post_to("/v1/chat/completions", body).await
    }

    /// POST `body` to `path`: status, whether it was a cache hit, body text.
    async fn post_to(&self, path: &str, body: &Value) -> (u16, bool, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let hit = r
            .headers()
            .get("x-orinari-cache")
            .is_some_and(|v| v == "hit");
        (r.status().as_u16(), hit, r.text().await.unwrap())
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.state.metrics().render();
        let prefix = format!("{name}{{model=\"m\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// A completion without what differs between two answers (id, time).
fn answer(text: &str) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("id");
    o.remove("created");
    v
}

/// A stream's data payloads without ids and times.
fn chunks(text: &str) -> Vec<Value> {
    common::sse_data(text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| answer(d))
        .collect()
}

#[tokio::test]
async fn a_deterministic_answer_is_generated_once_and_replayed_whole_and_streamed() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(&fake, Duration::from_secs(60), None).await;

    let body = ask("what is an exact cache?", json!({}));
    let (s1, hit1, first) = app.post(&body).await;
    let (s2, hit2, second) = app.post(&body).await;
    assert_eq!((s1, hit1, s2, hit2), (200, false, 200, true));
    assert_eq!(answer(&first), answer(&second));
    assert_eq!(fake.requests(), 1, "the upstream answered once");

    // A stream is its own entry (it is replayed in its own chunks).
    let stream = ask(
        "what is an exact cache?",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let (_, hit3, first) = app.post(&stream).await;
    let (_, hit4, second) = app.post(&stream).await;
    assert!(!hit3 && hit4);
    assert_eq!(fake.requests(), 2);
    let (a, b) = (chunks(&first), chunks(&second));
    assert!(a.len() > 3, "{first}");
    assert_eq!(a, b, "the same chunks, in the same pieces");
    assert!(second.trim_end().ends_with("data: [DONE]"));

    assert_eq!(app.counter("orinari_response_cache_hits_total"), 2);
    assert_eq!(app.counter("orinari_response_cache_misses_total"), 2);
    assert!(app.counter("orinari_response_cache_bytes") > 0);
}

#[tokio::test]
async fn sampled_requests_other_parameters_opt_outs_and_tools_are_not_served_from_it() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(&fake, Duration::from_secs(60), None).await;
    let mut expected = 0;
    let mut check = async |body: Value, hit: bool, why: &str| {
        let (status, was_hit, text) = app.post(&body).await;
        assert_eq!(status, 200, "{why}: {text}");
        assert_eq!(was_hit, hit, "{why}");
        if !hit {
            expected += 1;
        }
        assert_eq!(fake.requests(), expected, "{why}");
    };
    // Sampled without a seed: never cached.
    let sampled = ask("q", json!({"temperature": 0.7}));
    check(sampled.clone(), false, "sampled").await;
    check(sampled, false, "sampled again").await;
    // Sampled with a seed: deterministic.
    let seeded = ask("q", json!({"temperature": 0.7, "seed": 7}));
    check(seeded.clone(), false, "seeded").await;
    check(seeded, true, "seeded again").await;
    check(
        ask("q", json!({"temperature": 0.7, "seed": 8})),
        false,
        "another seed",
    )
    .await;
    // Greedy, then each parameter changed once.
    check(ask("q", json!({})), false, "greedy").await;
    check(ask("q", json!({})), true, "greedy again").await;
    check(ask("q", json!({"max_tokens": 5})), false, "max_tokens").await;
    check(ask("q", json!({"stop": ["x"]})), false, "stop").await;
    check(ask("q", json!({"top_p": 0.5})), false, "top_p").await;
    check(ask("Q", json!({})), false, "another message").await;
    check(
        ask("q", json!({"response_format": {"type": "json_object"}})),
        false,
        "response_format",
    )
    .await;
    // Opted out: neither read nor written.
    let off = ask("q", json!({"orinari": {"cache": false}}));
    check(off.clone(), false, "opted out").await;
    check(off, false, "opted out again").await;
    // Tools (whose calls may have side effects) bypass it.
    let tools = ask(
        "q",
        json!({"tools": [{"type": "function", "function": {"name": "send_mail",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}]}),
    );
    check(tools.clone(), false, "tools").await;
    check(tools, false, "tools again").await;
}

/// A deterministic request on each API surface that can hit the cache,
/// with its path. Each asks its own question (the same request on two
/// surfaces can share an entry: the answer is replayed in each one's shape).
fn surfaces() -> [(&'static str, Value); 4] {
    let q = |path: &str| format!("which surface? {path}");
    [
        (
            "/v1/chat/completions",
            ask(&q("/v1/chat/completions"), json!({})),
        ),
        (
            "/v1/responses",
            json!({"model": "m", "input": q("/v1/responses"), "temperature": 0}),
        ),
        (
            "/v1/messages",
            json!({"model": "m", "max_tokens": 32, "temperature": 0,
                "messages": [{"role": "user", "content": q("/v1/messages")}]}),
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": q("/v1/completions"), "temperature": 0}),
        ),
    ]
}

#[tokio::test]
async fn every_surface_is_answered_from_it_unless_the_request_opts_out() {
    let reply = "zq-every-surface-reply";
    let fake = FakeUpstream::start(Faults {
        reply_text: Some(reply.into()),
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(&fake, Duration::from_secs(60), None).await;
    let (mut expected, mut hits) = (0, 0);
    for (path, body) in surfaces() {
        // Asked twice: generated once, replayed once.
        let (s1, hit1, first) = app.post_to(path, &body).await;
        let (s2, hit2, second) = app.post_to(path, &body).await;
        assert_eq!(
            (s1, hit1, s2, hit2),
            (200, false, 200, true),
            "{path}: {second}"
        );
        assert!(
            first.contains(reply) && second.contains(reply),
            "{path}: {second}"
        );
        expected += 1;
        assert_eq!(
            fake.requests(),
            expected,
            "{path}: the upstream answered once"
        );
        hits += 1;
        assert_eq!(app.counter("orinari_response_cache_hits_total"), hits);

        // The same request opted out: neither read (an entry is there) nor
        // written (asked again, it still goes to the upstream).
        let mut off = body.clone();
        off["orinari"] = json!({"cache": false});
        for _ in 0..2 {
            let (status, hit, text) = app.post_to(path, &off).await;
            assert_eq!((status, hit), (200, false), "{path} opted out: {text}");
            assert!(text.contains(reply), "{path}: {text}");
            expected += 1;
            assert_eq!(fake.requests(), expected, "{path} opted out");
        }
        // `"cache": true` follows the model's setting: the stored answer.
        let mut on = body.clone();
        on["orinari"] = json!({"cache": true});
        assert!(app.post_to(path, &on).await.1, "{path}: cache true");
        hits += 1;

        // A wrong type is a 400 naming the field; nothing reaches the upstream.
        let mut bad = body.clone();
        bad["orinari"] = json!({"cache": "no"});
        let (status, _, text) = app.post_to(path, &bad).await;
        assert_eq!(status, 400, "{path}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["param"], "orinari.cache", "{path}: {text}");
        assert_eq!(fake.requests(), expected);
        assert_eq!(app.counter("orinari_response_cache_hits_total"), hits);
    }
}

#[tokio::test]
async fn an_entry_expires_after_its_ttl() {
    let fake = FakeUpstream::start(Faults::default()).await.unwrap();
    let app = serve(&fake, Duration::from_millis(300), None).await;
    let body = ask("ttl", json!({}));
    assert!(!app.post(&body).await.1);
    assert!(app.post(&body).await.1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!app.post(&body).await.1, "expired");
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn a_failed_or_cancelled_stream_is_never_stored() {
    let fake = FakeUpstream::start(Faults {
        die_after: Some(3),
        chunk_delay: Duration::from_millis(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(&fake, Duration::from_secs(60), None).await;
    let body = ask("cut", json!({"stream": true}));
    let (_, _, text) = app.post(&body).await;
    assert!(
        text.contains("tok2") && text.contains("event: error"),
        "{text}"
    );
    fake.set(|f| f.die_after = None);
    let (_, hit, _) = app.post(&body).await;
    assert!(!hit, "the failed stream was not stored");
    assert_eq!(fake.requests(), 2);

    // Cancelled: the client reads one chunk and goes away.
    fake.set(|f| f.chunk_delay = Duration::from_millis(100));
    let cancelled = ask("cancel", json!({"stream": true}));
    let mut r = app
        .client
        .post(format!("{}/v1/chat/completions", app.base))
        .json(&cancelled)
        .send()
        .await
        .unwrap();
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fake.set(|f| f.chunk_delay = Duration::ZERO);
    let (_, hit, text) = app.post(&cancelled).await;
    assert!(!hit, "the cancelled stream was not stored");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(fake.requests(), 4);
    // That one ended well: it is stored.
    assert!(app.post(&cancelled).await.1);
}

fn redis_cli(port: u16, args: &[&str]) -> Vec<u8> {
    std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap()
        .stdout
}

#[tokio::test]
async fn in_redis_an_entry_is_ciphertext_and_an_outage_is_a_miss() {
    let mut redis = orinari_limits::testing::RedisProcess::start().unwrap();
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let canary = "zq-canary-7f3a-in-the-answer";
    let fake = FakeUpstream::start(Faults {
        reply_text: Some(format!("The answer is {canary}.")),
        ..Faults::default()
    })
    .await
    .unwrap();
    let app = serve(&fake, Duration::from_secs(60), Some(&redis.url())).await;
    let question = "zq-canary-question-91c2";
    let body = ask(question, json!({}));
    let (_, hit, first) = app.post(&body).await;
    assert!(!hit && first.contains(canary), "{first}");
    // The store is a task of its own: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let keys = loop {
        let keys = String::from_utf8(redis_cli(port, &["--scan"])).unwrap();
        if !keys.trim().is_empty() || std::time::Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("orinari:rc:m:"), "{keys:?}");
    let value = redis_cli(port, &["--no-raw", "GET", keys[0]]);
    let ttl: i64 = String::from_utf8(redis_cli(port, &["PTTL", keys[0]]))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "expires with its TTL: {ttl}");
    let raw = redis_cli(port, &["--raw", "GET", keys[0]]);
    for text in [canary, question, "answer"] {
        assert!(
            !raw.windows(text.len()).any(|w| w == text.as_bytes())
                && !value.windows(text.len()).any(|w| w == text.as_bytes()),
            "`{text}` in Redis"
        );
    }

    let (_, hit, second) = app.post(&body).await;
    assert!(hit);
    assert_eq!(answer(&first), answer(&second));
    assert_eq!(fake.requests(), 1);

    // Redis gone: a miss, answered by the upstream.
    redis.down();
    let (status, hit, third) = app.post(&body).await;
    assert_eq!((status, hit), (200, false));
    assert!(third.contains(canary));
    assert_eq!(fake.requests(), 2);
}
