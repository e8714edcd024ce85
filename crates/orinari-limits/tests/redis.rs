//! The shared limiter against a real `redis-server` that each test starts on
//! its own port (so it can stop and restart it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use orinari_limits::redis::RedisLimiter;
use orinari_limits::testing::RedisProcess;
use orinari_limits::{LimitKind, Limiter, Policy, Source};

const P30: Policy = Policy {
    requests_per_minute: 30,
    tokens_per_minute: 1_000_000,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit() {
    let redis = RedisProcess::start().unwrap();
    let a = Limiter::Redis(Box::new(RedisLimiter::new(&redis.url(), "t").unwrap()));
    let b = Limiter::Redis(Box::new(RedisLimiter::new(&redis.url(), "t").unwrap()));
    // 40 requests alternating between the two instances: 30 pass in all.
    let mut passed = 0;
    for i in 0..40 {
        let l = if i % 2 == 0 { &a } else { &b };
        let d = l.check("key_1", P30, 1).await;
        assert_eq!(d.source, Source::Shared);
        if d.admitted() {
            passed += 1;
        } else {
            assert_eq!(d.refused, Some(LimitKind::Requests));
            assert!(d.retry_after > Duration::from_millis(1000), "{d:?}");
        }
    }
    assert_eq!(passed, 30);
    // Another key is untouched.
    assert!(a.check("key_2", P30, 1).await.admitted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reserve_and_settle_through_redis() {
    let redis = RedisProcess::start().unwrap();
    let l = Limiter::Redis(Box::new(RedisLimiter::new(&redis.url(), "t").unwrap()));
    let policy = Policy {
        requests_per_minute: 1000,
        tokens_per_minute: 1000,
    };
    let d = l.check("k", policy, 600).await;
    assert!(d.admitted());
    assert!((399..=401).contains(&d.tokens.remaining), "{d:?}");
    let d = l.check("k", policy, 600).await;
    assert_eq!(d.refused, Some(LimitKind::Tokens));
    // The first request used only 100: 500 come back.
    l.settle("k", policy, 600, 100).await;
    let d = l.check("k", policy, 600).await;
    assert!(d.admitted(), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_locally_and_recovers() {
    let mut redis = RedisProcess::start().unwrap();
    let l = Limiter::Redis(Box::new(RedisLimiter::new(&redis.url(), "t").unwrap()));
    assert_eq!(l.check("k", P30, 1).await.source, Source::Shared);
    redis.down();
    // Every request still gets a decision, quickly, from local limits.
    for _ in 0..5 {
        let t = Instant::now();
        let d = l.check("k", P30, 1).await;
        assert!(d.admitted());
        assert_eq!(d.source, Source::Local);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }
    assert!(!l.healthy());
    redis.up().unwrap();
    // Within the retry period the shared limiter is back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = l.check("k", P30, 1).await;
        if d.source == Source::Shared {
            break;
        }
        assert!(Instant::now() < deadline, "never went back to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(l.healthy());
}

/// A reservation alone (a chat answer's tokens, after its request was
/// counted) takes tokens from the shared budget and counts no request,
/// on Redis as in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_takes_tokens_and_counts_no_request() {
    let redis = RedisProcess::start().unwrap();
    let policy = Policy {
        requests_per_minute: 2,
        tokens_per_minute: 1000,
    };
    for limiter in [
        Limiter::Redis(Box::new(RedisLimiter::new(&redis.url(), "r").unwrap())),
        Limiter::Memory(orinari_limits::memory::MemoryLimiter::new()),
    ] {
        let first = limiter.reserve("k", policy, 600).await;
        assert!(!first.refused, "{first:?}");
        assert!(first.tokens.remaining <= 400, "{first:?}");
        let second = limiter.reserve("k", policy, 600).await;
        assert!(second.refused, "{second:?}");
        assert!(second.retry_after > Duration::ZERO);
        let never = limiter.reserve("k", policy, 1001).await;
        assert!(never.refused && never.retry_after >= Duration::from_secs(60));
        // Settled with what was used, the budget takes it again.
        limiter.settle("k", policy, 600, 10).await;
        assert!(!limiter.reserve("k", policy, 600).await.refused);
        // No request was counted: both of this minute's are still there.
        assert!(limiter.check("k", policy, 0).await.admitted());
        assert!(limiter.check("k", policy, 0).await.admitted());
        assert!(!limiter.check("k", policy, 0).await.admitted());
    }
}
