//! `kind = "sql"`: the operator's own query against the operator's own
//! database (PostgreSQL or SQLite), the question bound as its one
//! parameter and never spliced into the text.
//!
//! This is the deliberate exception to "all SQL lives in `orinari-store`"
//! (ARCHITECTURE.md): the store owns ORINARI's database and its schema;
//! this runs a query the operator wrote, read-only, against a database
//! ORINARI does not own. Three walls keep it to reading: the config
//! accepts one `SELECT`/`WITH` statement only; PostgreSQL runs it in a
//! `BEGIN READ ONLY` transaction with `statement_timeout`, rolled back
//! after; SQLite opens the file read-only with `query_only` on, and a
//! progress handler interrupts the statement at the deadline.

use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use orinari_config::sources::{FieldMap, SqlSource};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row};

use crate::SourceStatus;
use crate::connector::{Connector, Hit, SourceError};

/// Connections kept per SQL source.
const MAX_CONNECTIONS: u32 = 4;

enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A SQL source.
pub(crate) struct SqlConnector {
    db: Db,
    query: String,
    fields: FieldMap,
}

impl SqlConnector {
    /// Prepare the pool; nothing connects until the first search.
    pub fn new(cfg: &SqlSource, timeout: Duration) -> Result<Self, String> {
        let db = if cfg.url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(&cfg.url)
                .map_err(|e| format!("the sqlite url does not parse: {e}"))?
                .read_only(true)
                .pragma("query_only", "ON")
                .busy_timeout(timeout);
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(timeout)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy_with(options),
            )
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(timeout)
                .idle_timeout(Duration::from_secs(60))
                .connect_lazy(&cfg.url)
                // sqlx's message may quote the URL; say only that it is wrong.
                .map_err(|_| "the postgres url does not parse".to_string())?;
            Db::Postgres(pool)
        };
        Ok(SqlConnector {
            db,
            query: cfg.query.clone(),
            fields: cfg.fields.clone(),
        })
    }

    async fn postgres(
        &self,
        pool: &PgPool,
        question: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, sqlx::Error> {
        let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
        let ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .max(1);
        sqlx::query(&format!("SET LOCAL statement_timeout = {ms}"))
            .execute(&mut *tx)
            .await?;
        let rows: Vec<PgRow> =
            take(sqlx::query(&self.query).bind(question).fetch(&mut *tx), k).await?;
        tx.rollback().await?;
        Ok(rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.hit(i, rows.len(), &|c| pg_text(r, c)))
            .collect())
    }

    async fn sqlite(
        &self,
        pool: &SqlitePool,
        question: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        // SQLite has no statement timeout: interrupt at the deadline.
        conn.lock_handle()
            .await?
            .set_progress_handler(1_000, move || Instant::now() < deadline);
        let rows: Vec<SqliteRow> =
            take(sqlx::query(&self.query).bind(question).fetch(&mut *conn), k).await?;
        Ok(rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.hit(i, rows.len(), &|c| sqlite_text(r, c)))
            .collect())
    }

    fn hit(&self, rank: usize, n: usize, get: &dyn Fn(&str) -> Option<String>) -> Option<Hit> {
        let text = get(&self.fields.text)?;
        if text.trim().is_empty() {
            return None;
        }
        let title = get(&self.fields.title).unwrap_or_default();
        let url = self
            .fields
            .url
            .as_deref()
            .and_then(get)
            .filter(|u| !u.is_empty());
        let document = self
            .fields
            .id
            .as_deref()
            .and_then(get)
            .or_else(|| url.clone())
            .unwrap_or_else(|| {
                if title.is_empty() {
                    format!("row {}", rank + 1)
                } else {
                    title.clone()
                }
            });
        Some(Hit {
            document,
            title,
            locator: String::new(),
            url,
            text,
            // The query's ORDER BY is its ranking.
            score: 1.0 - rank as f32 / n.max(1) as f32,
        })
    }
}

/// The first `k` rows; the rest are never read.
async fn take<T>(
    mut rows: impl futures::Stream<Item = Result<T, sqlx::Error>> + Unpin,
    k: usize,
) -> Result<Vec<T>, sqlx::Error> {
    let mut out = Vec::new();
    while out.len() < k {
        match rows.try_next().await? {
            Some(row) => out.push(row),
            None => break,
        }
    }
    Ok(out)
}

fn has_column<R: Row>(row: &R, name: &str) -> bool {
    row.columns().iter().any(|c| c.name() == name)
}

fn pg_text(row: &PgRow, col: &str) -> Option<String> {
    if !has_column(row, col) {
        return None;
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(col) {
        return v;
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(col) {
        return v.map(|n| n.to_string());
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(col) {
        return v.map(|n| n.to_string());
    }
    row.try_get::<Option<f64>, _>(col)
        .ok()
        .flatten()
        .map(|n| n.to_string())
}

fn sqlite_text(row: &SqliteRow, col: &str) -> Option<String> {
    if !has_column(row, col) {
        return None;
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(col) {
        return v;
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(col) {
        return v.map(|n| n.to_string());
    }
    row.try_get::<Option<f64>, _>(col)
        .ok()
        .flatten()
        .map(|n| n.to_string())
}

/// A database error for operators: its class and code, never a value (a
/// message may quote the parameter, which is the question).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            let what = match code.as_str() {
                "25006" => "the query tried to write (read-only transaction)",
                "57014" => "the statement timed out",
                "42P01" => "a table in the query does not exist",
                "42703" => "a column in the query does not exist",
                _ => "the database refused the query",
            };
            if code.is_empty() {
                what.to_string()
            } else {
                format!("{what} (SQLSTATE {code})")
            }
        }
        sqlx::Error::PoolTimedOut => "no database connection became free in time".into(),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "the database could not be reached".into(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => {
            "a mapped column could not be read as text".into()
        }
        _ => "the query failed".into(),
    }
}

#[async_trait]
impl Connector for SqlConnector {
    async fn search(
        &self,
        query: &str,
        k: usize,
        deadline: Instant,
    ) -> Result<Vec<Hit>, SourceError> {
        let result = match &self.db {
            Db::Postgres(pool) => self.postgres(pool, query, k, deadline).await,
            Db::Sqlite(pool) => self.sqlite(pool, query, k, deadline).await,
        };
        result.map_err(|e| match &e {
            // PostgreSQL's statement_timeout; SQLite's SQLITE_INTERRUPT (the
            // progress handler at the deadline).
            sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("57014" | "9")) => {
                SourceError::Timeout
            }
            sqlx::Error::PoolTimedOut => SourceError::Timeout,
            _ => SourceError::Failed(describe(&e)),
        })
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            kind: "sql",
            ..SourceStatus::default()
        }
    }
}
