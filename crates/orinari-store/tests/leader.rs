//! Leader election on real PostgreSQL: two contenders (two stores, as two
//! instances would have) for one role; exactly one leads; when the leader's
//! session is killed by the server or its process drops it, the other takes
//! over within a bounded time, and at no sampled moment do both lead.
//! SQLite always leads. Also webhook subscriptions' records on both backends.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use orinari_store::{LeaderLock, NewWebhook, Store};
use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database; its URL.
async fn fresh_db() -> (String, String) {
    let name = format!("orinari_l_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL is reachable (make test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').unwrap();
    (format!("{base}/{name}"), name)
}

async fn drop_db(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

const EVERY: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_millis(2_500);

/// A contender checking every [`EVERY`], publishing whether it leads.
fn contend(
    mut lock: LeaderLock,
    leads: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LeaderLock> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let l = lock.check().await;
            leads.store(l, Ordering::SeqCst);
            tokio::time::sleep(EVERY).await;
        }
        leads.store(false, Ordering::SeqCst);
        lock
    })
}

/// Samples both flags every 5 ms; counts moments where both lead.
fn monitor(
    a: Arc<AtomicBool>,
    b: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU32>) {
    let both = Arc::new(AtomicU32::new(0));
    let counter = both.clone();
    let h = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (h, both)
}

async fn wait_for(flag: &AtomicBool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if flag.load(Ordering::SeqCst) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Which of the flags is set first, and when.
async fn wait_any(flags: &[Arc<AtomicBool>; 2], limit: Duration) -> Option<(usize, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(i) = flags.iter().position(|f| f.load(Ordering::SeqCst)) {
            return Some((i, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The bound on a takeover: the lock is free at once (the session ended),
/// taken within one period, and led after the grace period.
fn bound() -> Duration {
    GRACE + EVERY * 3 + Duration::from_secs(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_takeover_when_the_leader_dies() {
    let (url, name) = fresh_db().await;
    let role = format!("test-{}", uuid::Uuid::new_v4().simple());
    let stores = [
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    ];
    let flags = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];
    let stop_all = Arc::new(AtomicBool::new(false));
    let (mon, both) = monitor(flags[0].clone(), flags[1].clone(), stop_all.clone());
    let stops = [
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    ];

    // The first contender takes the lock, and leads after the grace period;
    // the second stays a follower.
    let h0 = contend(
        stores[0].leader_lock(&role, GRACE),
        flags[0].clone(),
        stops[0].clone(),
    );
    let t = wait_for(&flags[0], Duration::from_secs(10))
        .await
        .expect("the first contender leads");
    assert!(
        t >= GRACE - EVERY,
        "leads only after the grace period ({t:?})"
    );
    let h1 = contend(
        stores[1].leader_lock(&role, GRACE),
        flags[1].clone(),
        stops[1].clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(flags[0].load(Ordering::SeqCst) && !flags[1].load(Ordering::SeqCst));

    // The server ends the leader's session (as when its host vanishes and
    // idle_session_timeout fires, or an operator kills it): the leader steps
    // down at its next check and the lock passes.
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let pid: (i32,) = sqlx::query_as(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid.0)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    tokio::time::sleep(EVERY * 2).await;
    assert!(
        !flags[0].load(Ordering::SeqCst),
        "the old leader stepped down"
    );
    let (now_leader, took) = wait_any(&flags, bound())
        .await
        .expect("a leader again within the bound");
    assert!(took < bound(), "takeover took {took:?}");
    eprintln!("leader after the session was killed: {took:?}");

    // Now the leader's process "dies": its task and its lock's connection
    // are dropped; the other takes over.
    let other = 1 - now_leader;
    let [h0, h1] = [h0, h1];
    let (dead, alive) = if now_leader == 0 { (h0, h1) } else { (h1, h0) };
    dead.abort();
    let _ = dead.await;
    flags[now_leader].store(false, Ordering::SeqCst);
    let took = wait_for(&flags[other], Duration::from_secs(10))
        .await
        .expect("the survivor takes over");
    assert!(took < bound(), "takeover took {took:?}");
    eprintln!("leader after the leader's process died: {took:?}");

    stops[other].store(true, Ordering::SeqCst);
    let mut lock = alive.await.unwrap();
    lock.release().await;
    stop_all.store(true, Ordering::SeqCst);
    mon.await.unwrap();
    assert_eq!(
        both.load(Ordering::SeqCst),
        0,
        "two leaders were seen at once"
    );
    for s in &stores {
        s.close().await;
    }
    drop_db(&name).await;
}

#[tokio::test]
async fn released_lock_passes_and_sqlite_always_leads() {
    let (url, name) = fresh_db().await;
    let role = format!("test-{}", uuid::Uuid::new_v4().simple());
    let s1 = Store::open(&url).await.unwrap();
    let s2 = Store::open(&url).await.unwrap();
    let mut a = s1.leader_lock(&role, Duration::ZERO);
    let mut b = s2.leader_lock(&role, Duration::ZERO);
    assert!(a.check().await);
    assert!(!b.check().await);
    assert!(a.check().await, "a leader keeps leading");
    assert!(a.session_pid().await.is_some());
    // Another role is independent.
    let mut other = s2.leader_lock(&format!("{role}-other"), Duration::ZERO);
    assert!(other.check().await);
    a.release().await;
    assert!(b.check().await, "a released lock is taken at once");
    assert!(!a.check().await);
    b.release().await;
    other.release().await;
    s1.close().await;
    s2.close().await;
    drop_db(&name).await;

    let dir = std::env::temp_dir().join(format!("orinari-l-{}", uuid::Uuid::new_v4().simple()));
    let lite = Store::open(&format!("sqlite://{}/s.db", dir.display()))
        .await
        .unwrap();
    let mut x = lite.leader_lock("status", Duration::from_secs(60));
    let mut y = lite.leader_lock("status", Duration::from_secs(60));
    assert!(x.check().await && y.check().await, "SQLite is one instance");
    lite.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn webhook_records(s: Store) {
    let w = NewWebhook {
        id: "w1".into(),
        url: "https://hooks.example.org/a".into(),
        components: vec!["api".into(), "db".into()],
        secret: "whsec_0123456789abcdef".into(),
        unsubscribe_token: "tok-1".into(),
        at: 1_000,
    };
    s.subscribe_webhook(&w).await.unwrap();
    s.subscribe_webhook(&NewWebhook {
        id: "w2".into(),
        components: Vec::new(),
        unsubscribe_token: "tok-2".into(),
        ..w.clone()
    })
    .await
    .unwrap();
    let all = s.webhooks().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].components, vec!["api", "db"]);
    assert!(all[1].components.is_empty());
    assert_eq!(s.webhook_count().await.unwrap(), 2);
    // Failures count up and disable at the limit; a success clears them.
    assert!(!s.webhook_delivered("w1", false, 2_000, 3).await.unwrap());
    assert!(!s.webhook_delivered("w1", false, 3_000, 3).await.unwrap());
    assert!(!s.webhook_delivered("w1", true, 4_000, 3).await.unwrap());
    assert_eq!(s.webhook("w1").await.unwrap().unwrap().failures, 0);
    for at in [5_000, 6_000] {
        assert!(!s.webhook_delivered("w1", false, at, 3).await.unwrap());
    }
    assert!(s.webhook_delivered("w1", false, 7_000, 3).await.unwrap());
    let row = s.webhook("w1").await.unwrap().unwrap();
    assert_eq!((row.failures, row.disabled_at), (3, Some(7_000)));
    assert_eq!(row.last_failure_at, Some(7_000));
    assert!(
        !format!("{row:?}").contains("whsec_"),
        "the secret is not in Debug"
    );
    assert_eq!(s.webhooks().await.unwrap().len(), 1);
    // Unsubscribe once.
    assert!(s.unsubscribe_webhook("tok-2", 8_000).await.unwrap());
    assert!(!s.unsubscribe_webhook("tok-2", 9_000).await.unwrap());
    assert!(!s.unsubscribe_webhook("nope", 9_000).await.unwrap());
    assert!(s.webhooks().await.unwrap().is_empty());
    assert_eq!(s.webhook_count().await.unwrap(), 0);
}

#[tokio::test]
async fn webhook_subscriptions_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("orinari-w-{}", uuid::Uuid::new_v4().simple()));
    let lite = Store::open(&format!("sqlite://{}/s.db", dir.display()))
        .await
        .unwrap();
    webhook_records(lite.clone()).await;
    lite.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
    let (url, name) = fresh_db().await;
    let pg = Store::open(&url).await.unwrap();
    webhook_records(pg.clone()).await;
    pg.close().await;
    drop_db(&name).await;
}
