//! A dead link to PostgreSQL (issue #23, faults): a proxy in front of the
//! real server stops passing bytes while connections stay open — the peer
//! neither answers nor resets, as behind a dead route. Regressions:
//!
//! * a write on a pooled connection whose link went dead waited forever
//!   (sqlx puts no deadline on a query): now it fails with
//!   [`StoreError::Timeout`] within [`QUERY_TIMEOUT`], and so does a read
//!   (a key lookup on the request path also waited forever);
//! * the connection it gave up on went back to the pool through sqlx's own
//!   release ping, which has no deadline either and never returned: each
//!   such write lost a pool slot for good, and once the link was back the
//!   store still failed every query. Now a bounded check closes it, and
//!   writes work again as soon as the link does.
//!
//! Needs PostgreSQL at `ORINARI_TEST_POSTGRES_URL` or
//! `postgres://postgres@127.0.0.1:5432/postgres` (`make test` starts it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the proxy's tasks end with the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orinari_store::{NewApiKey, QUERY_TIMEOUT, Store, StoreError};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Copy one direction, 300 ms late while `slow` is set, swallowing
/// everything once `dead` was set (for good: the link stays half-open).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16384];
    let mut was_dead = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        was_dead |= dead.load(Ordering::SeqCst);
        if !was_dead && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy to `target` on a free port; setting the flag kills the link.
async fn proxy(target: String, dead: Arc<AtomicBool>, slow: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let dead = dead.clone();
            let slow = slow.clone();
            let target = target.clone();
            tokio::spawn(async move {
                if dead.load(Ordering::SeqCst) {
                    // Accepted, never answered.
                    let (mut r, _w) = client.into_split();
                    let mut buf = [0u8; 1024];
                    while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(
                    pump(cr, sw, dead.clone(), slow.clone()),
                    pump(sr, cw, dead, slow)
                );
            });
        }
    });
    port
}

fn key(n: u32) -> NewApiKey {
    NewApiKey {
        id: format!("dead_link_{n}"),
        name: format!("k{n}"),
        key_hash: format!("hash-{n}"),
        prefix: "ork_dead".into(),
        requests_per_minute: None,
        tokens_per_minute: None,
        allowed_models: None,
        priority: 0,
        max_concurrent: None,
        prompt_injection: None,
        allowed_sources: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_link_fails_reads_and_writes_in_time_and_the_pool_recovers() {
    let name = format!("orinari_dl_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL is reachable (make test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = admin_url();
    let (base, _) = url.rsplit_once('/').unwrap();
    let host = base.rsplit_once('@').map_or(base, |(_, h)| h);
    let host = host.trim_start_matches("postgres://");
    let dead = Arc::new(AtomicBool::new(false));
    let slow = Arc::new(AtomicBool::new(false));
    let port = proxy(host.to_string(), dead.clone(), slow.clone()).await;
    let user = base
        .trim_start_matches("postgres://")
        .rsplit_once('@')
        .map_or("postgres", |(u, _)| u);
    let store = Store::open(&format!("postgres://{user}@127.0.0.1:{port}/{name}"))
        .await
        .unwrap();
    // Fill the pool: its 8 connections open and idle.
    let warm: Vec<_> = (200..212)
        .map(|n| {
            let s = store.clone();
            tokio::spawn(async move { s.create_key(key(n)).await })
        })
        .collect();
    for w in warm {
        w.await.unwrap().unwrap();
    }

    // Writes already on the wire when the link dies (a slow link holds
    // them there), more than the pool has connections (8): each must fail
    // within the deadline.
    slow.store(true, Ordering::SeqCst);
    // Every other one a read (a key lookup, as on the request path), which
    // waited forever too before reads got the deadline.
    let mut writes = Vec::new();
    for n in 1..=12 {
        let s = store.clone();
        writes.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = if n % 2 == 0 {
                s.create_key(key(n)).await.map(drop)
            } else {
                s.find_active_key("hash-200").await.map(drop)
            };
            (result, t.elapsed())
        }));
    }
    // Past the pool's check of each connection (one round trip, 600 ms
    // here): the writes' statements are on the wire when the link dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dead.store(true, Ordering::SeqCst);
    let limit = QUERY_TIMEOUT + Duration::from_secs(10);
    for w in writes {
        let (result, took) = tokio::time::timeout(limit + Duration::from_secs(5), w)
            .await
            .expect("a query on a dead link must not hang")
            .unwrap();
        assert!(took < limit, "a query took {took:?}");
        if let Err(e) = result {
            assert!(
                matches!(e, StoreError::Timeout | StoreError::Query(_)),
                "{e}"
            );
            assert!(e.unavailable().is_some(), "{e} is not classified");
        }
    }

    // The link is back: writes work again on new connections.
    dead.store(false, Ordering::SeqCst);
    slow.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let mut ok = false;
    while back.elapsed() < Duration::from_secs(30) {
        if store.create_key(key(100)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok,
        "writes did not recover within 30 s of the link coming back"
    );
    for n in 101..=110 {
        store.create_key(key(n)).await.unwrap();
    }
    assert!(store.find_active_key("hash-110").await.unwrap().is_some());
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
