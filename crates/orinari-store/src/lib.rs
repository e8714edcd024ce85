//! All SQL lives here. One [`Store`] over two real backends — SQLite (the
//! embedded default, WAL mode, one writer) and PostgreSQL (for several
//! instances) — chosen once from `[storage] url`.
//!
//! Both backends run the same portable SQL through sqlx's `Any` driver:
//! integers are `BIGINT`, times are Unix milliseconds, booleans are 0/1, and
//! placeholders are `$1, $2…` (which SQLite also understands). Schema
//! migrations are kept per backend in `migrations/{sqlite,postgres}` and run
//! at start-up. Conversation text is never stored.

pub mod acme;
pub mod backup;
mod crypt;
pub mod instances;
mod journal;
mod keys;
pub mod leader;
mod migrations;
mod probes;
mod status;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;

pub use acme::SealedSecret;
pub use crypt::{AcmeKey, BackupKey};
pub use instances::{ClusterView, InstanceRow, InstanceState, InstanceView, Registration};
pub use journal::Change;
pub use keys::{ApiKey, NewApiKey};
pub use leader::LeaderLock;
pub use probes::{DailyUptime, ProbeResult, PruneStats, Retention};
pub use status::{
    ComponentDef, ComponentRow, IncidentRow, NewIncident, NewSubscription, NewUpdate, Subscriber,
    UpdateRow,
};
pub use webhooks::{NewWebhook, WebhookRow};

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not `sqlite:` or `postgres://`.
    #[error("unsupported storage url `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open the store: {0}")]
    Open(String),
    /// A migration failed.
    #[error("cannot migrate the store: {0}")]
    Migrate(String),
    /// A query failed.
    #[error("storage query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A value in the store is out of range (corruption or a bug).
    #[error("invalid stored value: {0}")]
    Invalid(String),
    /// The database did not answer within [`QUERY_TIMEOUT`] (a dead link or
    /// a stuck server); the write may or may not have been applied.
    #[error("the database did not answer within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
}

impl StoreError {
    /// Why the store cannot take writes now, in words for an operator or
    /// client, when the cause is the environment rather than the request: a
    /// full disk, a read-only data directory, a database that does not
    /// answer. `None` for anything else.
    pub fn unavailable(&self) -> Option<&'static str> {
        let e = match self {
            Self::Timeout => return Some("the database does not answer"),
            Self::Query(e) => e,
            _ => return None,
        };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Some("the database does not answer")
            }
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite's primary result codes (extended codes keep
                    // them in the low byte): 13 FULL, 8 READONLY, 10 IOERR,
                    // 14 CANTOPEN, 5 BUSY and 6 LOCKED (still held after the
                    // busy timeout, or at once while a failed write's
                    // transaction holds the file on a full disk).
                    match code.parse::<i64>().map(|c| c & 0xff) {
                        Ok(13) => Some("the disk holding the database is full"),
                        Ok(5 | 6) => Some("the database is busy (locked by another write)"),
                        Ok(8) => Some("the data directory is read-only"),
                        Ok(10 | 14) => Some(
                            "the database file cannot be written (disk full, read-only or failing)",
                        ),
                        _ => None,
                    }
                } else {
                    // PostgreSQL's SQLSTATE: 53100 disk_full, 25006
                    // read_only_sql_transaction, 08… connection exceptions,
                    // 57P… the server shutting down or unavailable.
                    match code.as_ref() {
                        "53100" => Some("the disk holding the database is full"),
                        "25006" => Some("the database is read-only"),
                        c if c.starts_with("08") || c.starts_with("57P") => {
                            Some("the database does not answer")
                        }
                        _ => None,
                    }
                }
            }
            _ => None,
        }
    }
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The store: a connection pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// SQLite has one writer; more connections only queue on its lock.
const SQLITE_POOL: u32 = 4;
const POSTGRES_POOL: u32 = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a write or a read may take, connection included. A dead link
/// under an open connection (the peer never answers, no reset) would
/// otherwise keep the caller waiting forever: sqlx puts no deadline on a
/// query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection handed back to the pool may take to show it still
/// answers; one that does not is closed instead of pooled.
const RELEASE_CHECK: Duration = Duration::from_secs(2);

/// A deadline on one statement run outside [`Store::write`] (which bounds
/// its whole transaction): `query.fetch_all(pool).bounded().await?` fails
/// with [`StoreError::Timeout`] after [`QUERY_TIMEOUT`] instead of waiting
/// on a dead link for good — a key lookup on the request path, the status
/// page, the admin API. The connection it gave up on goes back through the
/// pool's bounded release check.
pub(crate) trait Bounded<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    async fn bounded(self) -> Result<T, StoreError> {
        tokio::time::timeout(QUERY_TIMEOUT, self)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(StoreError::from)
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Bounded<T> for F {}

impl Store {
    /// Open (creating an SQLite file and its directory if needed) and migrate.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, options, size) = if url.starts_with("sqlite:") {
            let path =
                sqlite_path(url).ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
            }
            // Create the file if missing; WAL and the other pragmas are set per
            // connection below.
            let url = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            let any =
                AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Open(e.to_string()))?;
            (Backend::Sqlite, any, SQLITE_POOL)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let any =
                AnyConnectOptions::from_str(url).map_err(|e| StoreError::Open(e.to_string()))?;
            (Backend::Postgres, any, POSTGRES_POOL)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(CONNECT_TIMEOUT)
            // sqlx pings every connection handed back, with no deadline: on a
            // connection whose peer went silent (a query cut off by
            // [`QUERY_TIMEOUT`], a half-open link) that ping never returns
            // and the pool slot is lost for good. A bounded ping first: a
            // connection that fails it is closed, and its slot reopened.
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(matches!(
                        tokio::time::timeout(RELEASE_CHECK, conn.ping()).await,
                        Ok(Ok(()))
                    ))
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Pragmas are per connection; the Any driver does not carry them over.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrations::migrator(self.backend)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .bounded()
            .await?;
        Ok(())
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The SQLite file behind a `sqlite:` URL, if any (for backups).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let opts = SqliteConnectOptions::from_str(url).ok()?;
    let p: &Path = opts.get_filename();
    Some(p.to_path_buf())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
