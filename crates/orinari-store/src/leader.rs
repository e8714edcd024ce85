//! Leader election for singleton jobs among instances sharing one store.
//!
//! On PostgreSQL the leader holds a session-level advisory lock on a
//! connection of its own (outside the pool, so nothing else ever runs on it
//! or returns it). The lock lives exactly as long as that session:
//! - the leader's process dies → its socket closes → PostgreSQL ends the
//!   session and frees the lock at once;
//! - the leader hangs or is cut off without a close → the session is set to
//!   `idle_session_timeout` ([`SESSION_IDLE`]), so PostgreSQL ends it within
//!   that time, while the leader, which checks its session every few seconds
//!   with a short deadline ([`CHECK_TIMEOUT`]), has already stepped down:
//!   it gives up well before the lock can pass to anyone else.
//!
//! A lock can also pass while its old holder still believes it leads (an
//! operator terminates the session; the old holder only learns at its next
//! check). So a new holder waits a grace period — longer than the old
//! holder's check period plus [`CHECK_TIMEOUT`] — before it reports itself
//! leader: by then the old one has stepped down.
//!
//! SQLite is one instance by construction: it always leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection};

use crate::{Backend, Store, StoreError};

/// Deadline for each query on the lock's session; a leader that cannot get
/// an answer within it steps down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL ends the lock's session after this long without a query (the
/// leader queries every few seconds), freeing the lock of a vanished leader.
pub const SESSION_IDLE: Duration = Duration::from_secs(15);

/// One contender for leadership of a named role.
pub struct LeaderLock {
    backend: Backend,
    options: Arc<AnyConnectOptions>,
    key: i64,
    conn: Option<AnyConnection>,
    held: bool,
    since: Option<Instant>,
    grace: Duration,
}

impl std::fmt::Debug for LeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLock")
            .field("backend", &self.backend)
            .field("key", &self.key)
            .field("held", &self.held)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A contender for the role `name` (instances contending for the same
    /// name elect one leader) that reports leadership only once it has held
    /// the lock for `grace` (use more than every contender's check period
    /// plus [`CHECK_TIMEOUT`]). Connects nothing until [`LeaderLock::check`].
    pub fn leader_lock(&self, name: &str, grace: Duration) -> LeaderLock {
        LeaderLock {
            backend: self.backend(),
            options: self.pool().connect_options(),
            key: lock_key(name),
            conn: None,
            held: false,
            since: None,
            grace,
        }
    }
}

impl LeaderLock {
    /// Whether this contender leads now: acquires the lock when free, and
    /// when held, proves that the session holding it is still alive; true
    /// once held for the grace period. Any error or timeout means "not
    /// leader" (and drops the session, so the lock is freed if it still was
    /// held).
    pub async fn check(&mut self) -> bool {
        if self.backend == Backend::Sqlite {
            return true;
        }
        match tokio::time::timeout(CHECK_TIMEOUT, self.try_check()).await {
            Ok(Ok(held)) => {
                self.held = held;
                if !held {
                    self.since = None;
                    return false;
                }
                let since = *self.since.get_or_insert_with(Instant::now);
                since.elapsed() >= self.grace
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader lock check failed: not leading");
                self.abandon();
                false
            }
            Err(_) => {
                tracing::warn!("leader lock check timed out: not leading");
                self.abandon();
                false
            }
        }
    }

    /// Whether the last [`LeaderLock::check`] found the lock held (perhaps
    /// still within the grace period).
    pub fn held(&self) -> bool {
        self.backend == Backend::Sqlite || self.held
    }

    /// The backend process id of the lock's session (PostgreSQL), for tests
    /// and diagnostics.
    pub async fn session_pid(&mut self) -> Option<i64> {
        let conn = self.conn.as_mut()?;
        let row: (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .ok()?;
        Some(i64::from(row.0))
    }

    /// Give the role up now: the lock is released explicitly, so another
    /// instance can take it as soon as this returns (a closed session frees
    /// it too, but only once the server has noticed the close, which on a
    /// loaded server comes later), then the session is closed.
    pub async fn release(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.since = None;
        if let Some(mut conn) = self.conn.take() {
            if held {
                let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(self.key)
                    .execute(&mut conn);
                let _ = tokio::time::timeout(CHECK_TIMEOUT, unlock).await;
            }
            let _ = tokio::time::timeout(CHECK_TIMEOUT, conn.close()).await;
        }
    }

    fn abandon(&mut self) {
        self.held = false;
        self.since = None;
        self.conn = None;
    }

    async fn try_check(&mut self) -> Result<bool, StoreError> {
        if self.conn.is_none() {
            let mut conn = self
                .options
                .connect()
                .await
                .map_err(|e| StoreError::Open(e.to_string()))?;
            let idle = format!("SET idle_session_timeout = {}", SESSION_IDLE.as_millis());
            // PostgreSQL 14+; on older servers only a closed socket frees
            // the lock, so a leader that hangs without exiting keeps it.
            if let Err(e) = sqlx::query(&idle).execute(&mut conn).await {
                tracing::warn!(error = %e, "idle_session_timeout not available (PostgreSQL < 14)");
            }
            self.conn = Some(conn);
            self.held = false;
            self.since = None;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        if self.held {
            // A session-level advisory lock is released only by its session
            // ending or an explicit unlock: a live session still holds it.
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            return Ok(true);
        }
        let row: (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.0)
    }
}

/// A stable 64-bit lock key from a role name (FNV-1a).
fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"orinari.leader.".iter().chain(name.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}
