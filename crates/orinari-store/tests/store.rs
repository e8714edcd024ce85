//! The store's behaviour, run against both real backends: an SQLite file and
//! a fresh PostgreSQL database (`ORINARI_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts the server).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::future::Future;

use orinari_store::{Backend, DailyUptime, NewApiKey, ProbeResult, Retention, Store, StoreError};
use sqlx::Connection;

const DAY_MS: i64 = 86_400_000;

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Run `test` against a new SQLite file and a new PostgreSQL database.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(format!("orinari-store-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/nested/orinari.db", dir.display());
    let store = Store::open(&url).await.expect("sqlite store opens");
    assert_eq!(store.backend(), Backend::Sqlite);
    test(store.clone()).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();

    let name = format!("orinari_t_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL is reachable (make test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let store = Store::open(&format!("{base}/{name}"))
        .await
        .expect("postgres store opens");
    assert_eq!(store.backend(), Backend::Postgres);
    test(store.clone()).await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

fn key(id: &str, hash: &str) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        name: format!("name-{id}"),
        key_hash: hash.into(),
        prefix: "ork_abcd".into(),
        requests_per_minute: Some(30),
        tokens_per_minute: None,
        allowed_models: Some(vec!["orinari-small".into(), "gpt-4o-mini".into()]),
        priority: 2,
        max_concurrent: Some(4),
        prompt_injection: Some("flag".into()),
        allowed_sources: Some(vec!["handbook".into()]),
    }
}

#[tokio::test]
async fn api_keys_lifecycle() {
    on_both(|s| async move {
        s.ping().await.unwrap();
        let a = s.create_key(key("key_a", "hash-a")).await.unwrap();
        assert_eq!(a.requests_per_minute, Some(30));
        s.create_key(key("key_b", "hash-b")).await.unwrap();
        // The hash is unique: a second key with it is refused.
        assert!(matches!(
            s.create_key(key("key_c", "hash-a")).await,
            Err(StoreError::Query(_))
        ));
        let all = s.list_keys().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(s.find_active_key("hash-a").await.unwrap(), Some(a.clone()));
        assert!(s.revoke_key("key_a").await.unwrap());
        assert!(
            !s.revoke_key("key_a").await.unwrap(),
            "revoking twice is a no-op"
        );
        assert!(!s.revoke_key("missing").await.unwrap());
        assert_eq!(s.find_active_key("hash-a").await.unwrap(), None);
        assert_eq!(s.setting("admin_token_sha256").await.unwrap(), None);
        s.set_setting("admin_token_sha256", "abc").await.unwrap();
        s.set_setting("admin_token_sha256", "def").await.unwrap();
        assert_eq!(
            s.setting("admin_token_sha256").await.unwrap().as_deref(),
            Some("def")
        );
        let listed = s.list_keys().await.unwrap();
        assert!(
            listed
                .iter()
                .any(|k| k.id == "key_a" && k.revoked_at.is_some())
        );
    })
    .await;
}

#[tokio::test]
async fn probe_history_and_retention() {
    on_both(|s| async move {
        let now = 100 * DAY_MS + 5_000;
        for (at, up) in [
            (now - 20 * DAY_MS, true),
            (now - 2 * DAY_MS, false),
            (now - 1_000, true),
        ] {
            s.record_probe(ProbeResult {
                check_id: "chat-api",
                at,
                up,
                latency_ms: 12,
            })
            .await
            .unwrap();
        }
        let all = s.probe_results("chat-api", 0).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], (now - 2 * DAY_MS, false, 12));
        for day in [99 - 401, 99 - 10, 99] {
            s.upsert_daily(&DailyUptime {
                check_id: "chat-api".into(),
                day,
                observed_ms: DAY_MS,
                up_ms: DAY_MS - 60_000,
            })
            .await
            .unwrap();
        }
        // Upsert replaces.
        s.upsert_daily(&DailyUptime {
            check_id: "chat-api".into(),
            day: 99,
            observed_ms: 1_000,
            up_ms: 1_000,
        })
        .await
        .unwrap();
        // Impossible values are refused, not stored.
        assert!(matches!(
            s.upsert_daily(&DailyUptime {
                check_id: "chat-api".into(),
                day: 98,
                observed_ms: 10,
                up_ms: 11
            })
            .await,
            Err(StoreError::Invalid(_))
        ));
        let pruned = s.prune(now, Retention::default()).await.unwrap();
        assert_eq!((pruned.raw, pruned.daily), (1, 1));
        assert_eq!(s.probe_results("chat-api", 0).await.unwrap().len(), 2);
        let days = s.daily_uptime("chat-api", 0).await.unwrap();
        assert_eq!(days.iter().map(|d| d.day).collect::<Vec<_>>(), vec![89, 99]);
        assert_eq!(days[1].observed_ms, 1_000);
    })
    .await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = std::env::temp_dir().join(format!("orinari-store-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/orinari.db", dir.display());
    let s = Store::open(&url).await.unwrap();
    s.create_key(key("key_a", "hash-a")).await.unwrap();
    s.close().await;
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.list_keys().await.unwrap().len(), 1);
    s.close().await;
    // The embedded store runs in WAL mode (persisted in the file itself).
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}/orinari.db", dir.display()))
            .await
            .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
    let unreachable = Store::open("postgres://nobody@127.0.0.1:1/none").await;
    assert!(
        matches!(unreachable, Err(StoreError::Open(_))),
        "{unreachable:?}"
    );
}
