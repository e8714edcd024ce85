//! Which store errors are the environment's fault (issue #23, faults): a
//! full disk, a read-only directory, a database locked past the busy
//! timeout or one that does not answer become 503 `storage_unavailable`
//! saying so; anything else stays a 500. Regression: on a full disk about
//! half the writes failed with SQLite's "database is locked" and were
//! answered 500 "see the server log".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use orinari_store::StoreError;
use sqlx::{Connection, SqliteConnection};

#[tokio::test]
async fn sqlite_errors_from_the_environment_are_classified() {
    let path = std::env::temp_dir().join(format!(
        "orinari-unavailable-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut a = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut a)
        .await
        .unwrap();

    // Locked by another writer past the busy timeout (0 here).
    let mut b = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut b)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut a)
        .await
        .unwrap();
    let busy = StoreError::Query(
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut b)
            .await
            .unwrap_err(),
    );
    assert!(
        busy.unavailable().is_some_and(|w| w.contains("busy")),
        "{busy}: {:?}",
        busy.unavailable()
    );
    sqlx::query("ROLLBACK").execute(&mut a).await.unwrap();

    // Read-only.
    sqlx::query("PRAGMA query_only = 1")
        .execute(&mut b)
        .await
        .unwrap();
    let readonly = StoreError::Query(
        sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut b)
            .await
            .unwrap_err(),
    );
    assert!(
        readonly
            .unavailable()
            .is_some_and(|w| w.contains("read-only")),
        "{readonly}: {:?}",
        readonly.unavailable()
    );

    // The request's own fault (a duplicate) is not the environment's.
    let duplicate = StoreError::Query(
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut a)
            .await
            .unwrap_err(),
    );
    assert_eq!(duplicate.unavailable(), None, "{duplicate}");
    assert!(StoreError::Timeout.unavailable().is_some());
    assert_eq!(StoreError::Invalid("x".into()).unavailable(), None);

    drop((a, b));
    let _ = std::fs::remove_file(&path);
}
