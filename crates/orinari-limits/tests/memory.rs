//! The in-memory limiter and the admission queue, exercised directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orinari_limits::memory::MemoryLimiter;
use orinari_limits::queue::{Admission, Refused, Ticket};
use orinari_limits::{LimitKind, Policy};

const P30: Policy = Policy {
    requests_per_minute: 30,
    tokens_per_minute: 1_000_000,
};

#[test]
fn a_burst_of_40_against_30_passes_exactly_30() {
    let l = MemoryLimiter::new();
    let passed = (0..40).filter(|_| l.check("k", P30, 1).admitted()).count();
    assert_eq!(passed, 30);
    let d = l.check("k", P30, 1);
    assert_eq!(d.refused, Some(LimitKind::Requests));
    // One request per 2 s comes back.
    assert!(
        d.retry_after > Duration::from_millis(1500),
        "{:?}",
        d.retry_after
    );
    assert!(
        d.retry_after <= Duration::from_secs(2),
        "{:?}",
        d.retry_after
    );
    assert_eq!(d.requests.remaining, 0);
    // Another subject has its own budget.
    assert!(l.check("other", P30, 1).admitted());
}

#[test]
fn remaining_counts_down() {
    let l = MemoryLimiter::new();
    let d = l.check("k", P30, 10);
    assert_eq!(d.requests.limit, 30);
    assert_eq!(d.requests.remaining, 29);
    assert_eq!(d.tokens.remaining, 1_000_000 - 10);
    let d = l.check("k", P30, 10);
    assert_eq!(d.requests.remaining, 28);
}

#[test]
fn token_budget_reserves_and_settles() {
    let policy = Policy {
        requests_per_minute: 1000,
        tokens_per_minute: 1000,
    };
    let l = MemoryLimiter::new();
    // Reserve 400 twice: 200 left; a third 400 is refused for tokens.
    assert!(l.check("k", policy, 400).admitted());
    assert!(l.check("k", policy, 400).admitted());
    let d = l.check("k", policy, 400);
    assert_eq!(d.refused, Some(LimitKind::Tokens));
    assert!(d.tokens.remaining <= 201, "{:?}", d.tokens);
    // The first two used only 50 each: 700 come back, so 400 fits again.
    l.adjust_tokens("k", policy, -350);
    l.adjust_tokens("k", policy, -350);
    let d = l.check("k", policy, 400);
    assert!(d.admitted(), "{d:?}");
    // A request that used far more than it reserved puts the key in debt.
    l.adjust_tokens("k", policy, 1000);
    let d = l.check("k", policy, 1);
    assert_eq!(d.refused, Some(LimitKind::Tokens));
    assert_eq!(d.tokens.remaining, 0);
}

#[test]
fn an_estimate_larger_than_the_budget_is_refused() {
    let policy = Policy {
        requests_per_minute: 10,
        tokens_per_minute: 100,
    };
    let d = MemoryLimiter::new().check("k", policy, 101);
    assert_eq!(d.refused, Some(LimitKind::Tokens));
}

fn ticket(subject: &str, priority: i32, cap: usize) -> Ticket {
    Ticket {
        subject: subject.into(),
        priority,
        max_concurrent: cap,
    }
}

#[tokio::test]
async fn a_full_queue_sheds_and_a_wait_times_out() {
    let q = Admission::new(1, 1, Duration::from_millis(100));
    let running = q.acquire(&ticket("a", 0, 8)).await.unwrap();
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.acquire(&ticket("a", 0, 8)).await.map(|_| ()) });
    while q.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // Queue full: refused at once.
    assert_eq!(
        q.acquire(&ticket("b", 0, 8)).await.err(),
        Some(Refused::Full)
    );
    assert_eq!(waiter.await.unwrap(), Err(Refused::Timeout));
    assert_eq!(q.waiting(), 0);
    drop(running);
    assert_eq!(q.running(), 0);
    // A slot freed: taken at once.
    let _p = q.acquire(&ticket("b", 0, 8)).await.unwrap();
    assert_eq!(q.running(), 1);
}

#[tokio::test]
async fn a_caller_that_goes_away_leaves_the_queue() {
    let q = Admission::new(1, 4, Duration::from_secs(10));
    let running = q.acquire(&ticket("a", 0, 8)).await.unwrap();
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.acquire(&ticket("b", 0, 8)).await.map(|_| ()) });
    while q.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(q.waiting(), 0);
    drop(running);
    assert_eq!(q.running(), 0, "no slot leaked to the departed waiter");
}

/// Key "heavy" queues 20 requests, then "light" queues 2: light must not
/// wait behind all of heavy's (round-robin), so light's two finish within
/// the first five completions.
#[tokio::test]
async fn the_queue_is_fair_across_keys_and_honours_priority() {
    let q = Admission::new(1, 64, Duration::from_secs(10));
    let gate = q.acquire(&ticket("gate", 0, 8)).await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let spawn = |subject: &'static str, priority: i32| {
        let q = q.clone();
        let order = order.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let p = q.acquire(&ticket(subject, priority, 8)).await.unwrap();
            order.lock().unwrap().push(subject);
            done.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(p);
        })
    };
    for _ in 0..20 {
        tasks.push(spawn("heavy", 0));
    }
    while q.waiting() < 20 {
        tokio::task::yield_now().await;
    }
    for _ in 0..2 {
        tasks.push(spawn("light", 0));
    }
    tasks.push(spawn("vip", 5));
    while q.waiting() < 23 {
        tokio::task::yield_now().await;
    }
    drop(gate);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 23);
    assert_eq!(order[0], "vip", "priority first: {order:?}");
    let light: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == "light")
        .map(|(i, _)| i)
        .collect();
    assert!(light.iter().all(|&i| i <= 4), "light starved: {order:?}");
}

/// Regression (issue #23, fairness over HTTP): a key flooding a full queue
/// crowded every other key out of it — their requests were shed with 503
/// while the flooder's waited. Now the newcomer takes the place of the
/// heaviest key's newest waiter, which is refused instead.
#[tokio::test]
async fn a_flooding_key_cannot_crowd_another_out_of_a_full_queue() {
    let q = Admission::new(1, 4, Duration::from_secs(10));
    let running = q.acquire(&ticket("flood", 0, 8)).await.unwrap();
    let mut flood = Vec::new();
    for _ in 0..4 {
        let q2 = q.clone();
        flood.push(tokio::spawn(async move {
            q2.acquire(&ticket("flood", 0, 8)).await.map(|_| ())
        }));
        while q.waiting() < flood.len() {
            tokio::task::yield_now().await;
        }
    }
    // Full of the flooder's waiters: one more of its own is shed...
    assert_eq!(
        q.acquire(&ticket("flood", 0, 8)).await.err(),
        Some(Refused::Full)
    );
    // ...but another key's request is queued, in the place of the
    // flooder's newest waiter, which is refused as shed.
    let q2 = q.clone();
    let light = tokio::spawn(async move { q2.acquire(&ticket("light", 0, 8)).await.map(|_| ()) });
    let last = flood.pop().unwrap();
    assert_eq!(last.await.unwrap(), Err(Refused::Full));
    assert_eq!(q.waiting(), 4);
    // A second light request still finds room (light 1 waiting, flood 3).
    let q3 = q.clone();
    let light2 = tokio::spawn(async move { q3.acquire(&ticket("light", 0, 8)).await.map(|_| ()) });
    assert_eq!(flood.pop().unwrap().await.unwrap(), Err(Refused::Full));
    // Now light has 2 and flood 2: no more shedding between them.
    assert_eq!(
        q.acquire(&ticket("light", 0, 8)).await.err(),
        Some(Refused::Full)
    );
    drop(running);
    light.await.unwrap().unwrap();
    light2.await.unwrap().unwrap();
    for f in flood {
        f.await.unwrap().unwrap();
    }
    assert_eq!(q.waiting(), 0);
    assert_eq!(q.running(), 0);
}

#[tokio::test]
async fn a_key_at_its_cap_waits_while_others_run() {
    let q = Admission::new(4, 16, Duration::from_secs(5));
    let _a1 = q.acquire(&ticket("a", 0, 1)).await.unwrap();
    // "a" is at its cap of 1: its second request waits although slots are free...
    let q2 = q.clone();
    let a2 = tokio::spawn(async move { q2.acquire(&ticket("a", 0, 1)).await.map(|_| ()) });
    while q.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // ...and does not block "b".
    let b = tokio::time::timeout(Duration::from_millis(200), q.acquire(&ticket("b", 0, 1)))
        .await
        .expect("b must not wait behind a capped key");
    assert!(b.is_ok());
    drop(_a1);
    a2.await.unwrap().unwrap();
}
