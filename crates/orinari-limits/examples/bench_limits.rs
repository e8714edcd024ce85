//! The cost of one limit check: in memory (governor + token bucket) and
//! through Redis (one script call), next to a bare Redis PING on the same
//! connection kind — the floor for "one round trip".
//!
//! cargo run --release -p orinari-limits --example bench_limits [redis://127.0.0.1:6379]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::time::{Duration, Instant};

use orinari_limits::memory::MemoryLimiter;
use orinari_limits::redis::RedisLimiter;
use orinari_limits::{Limiter, Policy};

const POLICY: Policy = Policy {
    requests_per_minute: u32::MAX / 2,
    tokens_per_minute: u32::MAX / 2,
};

fn pct(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    (
        at(0.5),
        at(0.99),
        v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let subjects: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();

    // Memory: batches of 1,000 checks timed together (a single check is
    // shorter than the clock's resolution is useful for).
    let mem = MemoryLimiter::new();
    for s in &subjects {
        mem.check(s, POLICY, 100);
    }
    let mut batches = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        for s in &subjects {
            std::hint::black_box(mem.check(s, POLICY, 100));
        }
        batches.push(t.elapsed() / subjects.len() as u32);
    }
    let (p50, p99, mean) = pct(batches);
    println!(
        "memory check (1,000 keys, 2M checks): p50 {p50:.3} µs  p99 {p99:.3} µs  mean {mean:.3} µs per check"
    );

    // Redis: one script call per check, sequential, so each is one round trip.
    let redis = Limiter::Redis(Box::new(RedisLimiter::new(&url, "bench").unwrap()));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for s in subjects.iter().take(100) {
        redis.check(s, POLICY, 100).await;
    }
    let n = 20_000;
    let mut pings = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        pings.push(t.elapsed());
    }
    let mut checks = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let d = redis
            .check(&subjects[i % subjects.len()], POLICY, 100)
            .await;
        checks.push(t.elapsed());
        assert_eq!(
            d.source,
            orinari_limits::Source::Shared,
            "Redis must be reachable at {url}"
        );
    }
    let (p50, p99, mean) = pct(pings);
    println!(
        "redis PING round trip ({n}):          p50 {p50:.1} µs  p99 {p99:.1} µs  mean {mean:.1} µs"
    );
    let (p50, p99, mean) = pct(checks);
    println!(
        "redis limit check, one script ({n}):  p50 {p50:.1} µs  p99 {p99:.1} µs  mean {mean:.1} µs"
    );
}
