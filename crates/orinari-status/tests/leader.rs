//! Two instances of the status service on one real PostgreSQL database:
//! exactly one (the elected leader) probes; when it stops, the other takes
//! over within the bound, and the two never lead at the same moment.
//! PostgreSQL: `ORINARI_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts it).
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use orinari_status::StatusService;
use orinari_store::Store;
use tokio::sync::watch;

type Hits = Arc<Mutex<HashMap<String, u32>>>;

async fn probe(State(hits): State<Hits>, Query(q): Query<HashMap<String, String>>) -> &'static str {
    let who = q.get("i").cloned().unwrap_or_default();
    *hits.lock().unwrap().entry(who).or_insert(0) += 1;
    "ok"
}

fn count(hits: &Hits, who: &str) -> u32 {
    hits.lock().unwrap().get(who).copied().unwrap_or(0)
}

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn instance(url: &str, port: u16, who: &str) -> (Arc<StatusService>, watch::Sender<bool>) {
    let toml = format!(
        r#"
[status]
builtin_checks = false
[[status.checks]]
name = "API"
url = "http://127.0.0.1:{port}/probe?i={who}"
interval = "200ms"
timeout = "150ms"
"#
    );
    let settings = orinari_config::parse(&toml, "t.toml", std::iter::empty())
        .unwrap()
        .status;
    let store = Store::open(url).await.unwrap();
    let svc = Arc::new(
        StatusService::open(store, &settings, orinari_store::now_ms())
            .await
            .unwrap(),
    );
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(svc.clone().run(stopped));
    (svc, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_probes_and_leadership_moves_on_stop() {
    let name = format!("orinari_sl_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");

    let hits = Hits::default();
    let app = axum::Router::new()
        .route("/probe", axum::routing::get(probe))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (a, stop_a) = instance(&url, port, "a").await;
    let (b, stop_b) = instance(&url, port, "b").await;
    assert!(
        !a.is_leader() && !b.is_leader(),
        "PostgreSQL: nobody leads before the election"
    );

    // Watch both all along: never two leaders.
    let both = Arc::new(Mutex::new(0u32));
    let (ma, mb, mboth) = (a.clone(), b.clone(), both.clone());
    let monitor = tokio::spawn(async move {
        for _ in 0..6000 {
            if ma.is_leader() && mb.is_leader() {
                *mboth.lock().unwrap() += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let start = Instant::now();
    while !(a.is_leader() || b.is_leader()) {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "a leader is elected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (leader, follower, stop_leader, stop_follower, lw, fw) = if a.is_leader() {
        (a, b, stop_a, stop_b, "a", "b")
    } else {
        (b, a, stop_b, stop_a, "b", "a")
    };
    // Only the leader probes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (l0, f0) = (count(&hits, lw), count(&hits, fw));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(count(&hits, lw) >= l0 + 5, "the leader probes");
    assert_eq!(count(&hits, fw), f0, "the follower does not probe");
    assert_eq!(f0, 0);

    // The leader stops (it steps down and frees the lock); the other leads.
    stop_leader.send(true).unwrap();
    let stopped = Instant::now();
    while !follower.is_leader() {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the follower takes over within the bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!leader.is_leader());
    eprintln!(
        "the follower led {:?} after the leader stopped",
        stopped.elapsed()
    );
    let f1 = count(&hits, fw);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(count(&hits, fw) > f1, "the new leader probes");

    monitor.abort();
    assert_eq!(*both.lock().unwrap(), 0, "two leaders at once");
    stop_follower.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop((leader, follower));
    psql(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"));
}

/// One statement through `psql` (this crate has no SQL client of its own).
fn psql(url: &str, sql: &str) {
    let ok = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .status()
        .expect("psql is installed (make test uses it)")
        .success();
    assert!(ok, "psql: {sql}");
}
