//! A sql source against real databases: SQLite (a file made here) and
//! PostgreSQL (`ORINARI_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts it).
//! The question is a parameter, so `'; DROP TABLE …` is only text; a
//! query that tries to write, even through a function, is refused by the
//! database's read-only transaction; a slow query ends at the deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use orinari_sources::{Outcome, Setup, Sources};
use sqlx::Connection;

fn sources(toml: &str) -> Sources {
    let cfg = orinari_config::parse(toml, "test.toml", []).unwrap();
    let data = std::env::temp_dir();
    Sources::new(&cfg.sources, Setup::new(&data)).0
}

const INJECTIONS: [&str; 3] = [
    "'; DROP TABLE docs; --",
    "x' OR '1'='1",
    "\"); DELETE FROM docs; SELECT (\"",
];

#[tokio::test]
async fn sqlite_reads_only_and_binds_the_question() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kb.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, link TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    for (t, b) in [
        ("Refunds", "Refunds are paid within 14 days."),
        ("Shipping", "Parcels ship on Mondays."),
        (
            "Quotes",
            "It's the customer's right; DROP TABLE docs is just text here.",
        ),
    ] {
        sqlx::query("INSERT INTO docs (title, body, link) VALUES (?, ?, 'https://kb/' || ?)")
            .bind(t)
            .bind(b)
            .bind(t)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let s = sources(&format!(
        r#"[[sources]]
name = "kb"
kind = "sql"
url = "sqlite://{}"
query = "SELECT id, title, body AS text, link AS url FROM docs WHERE body LIKE '%' || ? || '%' ORDER BY id"
fields = {{ id = "id" }}
"#,
        db.display()
    ));
    let r = s
        .retrieve(&["kb"], "Refunds", 5, Duration::from_secs(2))
        .await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    assert_eq!(r.hits.len(), 1);
    let h = &r.hits[0].hit;
    assert_eq!((h.document.as_str(), h.title.as_str()), ("1", "Refunds"));
    assert_eq!(h.url.as_deref(), Some("https://kb/Refunds"));

    for q in INJECTIONS {
        let r = s.retrieve(&["kb"], q, 5, Duration::from_secs(2)).await;
        assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{q}: {:?}", r.outcomes);
        assert!(
            r.hits.is_empty(),
            "{q}: matched as text only, and nothing holds it"
        );
    }
    let r = s
        .retrieve(&["kb"], "DROP TABLE docs", 5, Duration::from_secs(2))
        .await;
    assert_eq!(
        r.hits.len(),
        1,
        "the question is data: it matched the row holding that text"
    );
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM docs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn config_refuses_anything_but_one_select() {
    for q in [
        "DELETE FROM docs WHERE body = $1",
        "SELECT * FROM docs WHERE body = $1; DROP TABLE docs",
        "UPDATE docs SET body = $1",
        "SELECT * FROM docs",
        "SELECT * FROM docs WHERE body = '$1'",
    ] {
        let toml = format!(
            "[[sources]]\nname = \"kb\"\nkind = \"sql\"\nurl = \"postgres://u@h/db\"\nquery = \"{q}\"\n"
        );
        let e = orinari_config::parse(&toml, "t.toml", []).unwrap_err();
        assert!(e.0.contains("`sources[0].query`"), "{q}: {e}");
    }
}

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[tokio::test]
async fn postgres_runs_only_reads_and_stops_at_the_deadline() {
    let url = admin_url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let table = format!("sources_test_{}_{nanos}", std::process::id());
    for stmt in [
        format!("CREATE TABLE {table} (id serial PRIMARY KEY, title text, body text)"),
        format!(
            "INSERT INTO {table} (title, body) VALUES ('Refunds', 'Refunds are paid within 14 days.'), ('Shipping', 'Parcels ship on Mondays.')"
        ),
        // A function that writes, to try to write from a SELECT.
        format!(
            "CREATE FUNCTION {table}_evil(q text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN DELETE FROM {table}; RETURN q; END $f$"
        ),
    ] {
        sqlx::query(&stmt).execute(&mut conn).await.unwrap();
    }

    let s = sources(&format!(
        r#"[[sources]]
name = "kb"
kind = "sql"
url = "{url}"
query = "SELECT id, title, body AS text FROM {table} WHERE body ILIKE '%' || $1 || '%' ORDER BY id"
fields = {{ id = "id" }}

[[sources]]
name = "evil"
kind = "sql"
url = "{url}"
query = "SELECT {table}_evil($1) AS text"

[[sources]]
name = "slow"
kind = "sql"
url = "{url}"
timeout_ms = 300
query = "SELECT pg_sleep(10)::text AS title, $1 AS text"
"#
    ));
    let r = s
        .retrieve(&["kb"], "refunds", 5, Duration::from_secs(5))
        .await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{:?}", r.outcomes);
    assert_eq!(r.hits.len(), 1);
    assert_eq!(
        (
            r.hits[0].hit.document.as_str(),
            r.hits[0].hit.title.as_str()
        ),
        ("1", "Refunds")
    );
    for q in INJECTIONS {
        let r = s.retrieve(&["kb"], q, 5, Duration::from_secs(5)).await;
        assert_eq!(r.outcomes[0].outcome, Outcome::Ok, "{q}: {:?}", r.outcomes);
        assert!(r.hits.is_empty());
    }

    let r = s
        .retrieve(&["evil"], "'; DROP TABLE x; --", 5, Duration::from_secs(5))
        .await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Error);
    let why = r.outcomes[0].error.as_deref().unwrap();
    assert!(why.contains("read-only"), "{why}");
    assert!(!why.contains("DROP"), "the question is not echoed: {why}");

    let start = Instant::now();
    let r = s.retrieve(&["slow"], "q", 5, Duration::from_secs(5)).await;
    assert_eq!(r.outcomes[0].outcome, Outcome::Timeout);
    assert!(
        // The 300 ms deadline, with room for a loaded machine; the query
        // itself would take 10 s.
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The server cancelled the statement too (statement_timeout): the
    // pool's connections are free again, long before the 10 s sleep ends.
    let mut busy = i64::MAX;
    while busy != 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(10)%' AND state = 'active'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
    }
    assert_eq!(
        busy,
        0,
        "the statement still runs {:?} after it began",
        start.elapsed()
    );

    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2, "nothing was deleted");
    sqlx::query(&format!("DROP FUNCTION {table}_evil(text)"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}
