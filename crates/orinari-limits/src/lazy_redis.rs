//! One lazy Redis connection with retry back-off, for every part of the
//! process that talks to Redis (the shared limiter here, the response
//! cache in `orinari-chat`): it connects on first use, under [`TIMEOUT`];
//! after a failure it waits [`RETRY_EVERY`] before trying again, and only
//! one task connects at a time (the others carry on without Redis
//! meanwhile). Whether Redis is reachable is tracked here and each change
//! is logged once, in the words its user gives.
//!
//! Failures are counted (an epoch): a reply marks Redis reachable again
//! only when no failure came after the connection it used was taken
//! ([`LazyRedis::mark_up`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

/// How long a connect or a command may take before Redis counts as
/// unreachable.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// How often to try Redis again while it is unreachable.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A lazily opened, shared Redis connection and whether Redis answers.
pub struct LazyRedis {
    client: Client,
    /// The connection in use, and how many times Redis was marked
    /// unreachable: a reply counts as Redis being back only when no failure
    /// came after the connection it used was taken (see [`Taken`]).
    conn: Mutex<(Option<MultiplexedConnection>, u64)>,
    retry_at: Mutex<Option<Instant>>,
    connecting: AtomicBool,
    reachable: AtomicBool,
    /// Logged (with the error) when Redis becomes unreachable.
    down: &'static str,
    /// Logged when it is reachable again.
    up: &'static str,
}

/// A connection, and the failure count when it was taken (hand it back to
/// [`LazyRedis::mark_up`] with the reply).
pub struct Taken {
    /// The connection (cheap to clone; requests on it are pipelined).
    pub conn: MultiplexedConnection,
    /// Failures counted before it was taken.
    pub epoch: u64,
}

impl LazyRedis {
    /// A connection to `url`, opened on first use (never fails because
    /// Redis is down, only for a URL that is not Redis's). `down` and `up`
    /// are the log lines for the two changes, in what they mean to the
    /// user ("…; rate limits fall back to local limits").
    pub fn new(url: &str, down: &'static str, up: &'static str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: Client::open(url)?,
            conn: Mutex::new((None, 0)),
            retry_at: Mutex::new(None),
            connecting: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            down,
            up,
        })
    }

    /// Whether the last attempt reached Redis.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// A connection, or `None` while Redis is unreachable (at most one task
    /// tries to connect at a time, at most once per [`RETRY_EVERY`]).
    pub async fn connection(&self) -> Option<Taken> {
        {
            let guard = lock(&self.conn);
            if let Some(c) = &guard.0 {
                return Some(Taken {
                    conn: c.clone(),
                    epoch: guard.1,
                });
            }
        }
        if lock(&self.retry_at).is_some_and(|at| Instant::now() < at) {
            return None;
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return None;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let result = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        self.connecting.store(false, Ordering::Release);
        match result {
            Ok(c) => {
                // Taken at the count now: a late failure of a command on
                // the old connection (before this one existed) is no
                // reason to doubt this one's replies.
                let mut guard = lock(&self.conn);
                guard.0 = Some(c.clone());
                Some(Taken {
                    conn: c,
                    epoch: guard.1,
                })
            }
            Err(e) => {
                self.mark_down(&e);
                None
            }
        }
    }

    /// A connect or a command failed: drop the connection, wait
    /// [`RETRY_EVERY`] before the next try, log the change once.
    pub fn mark_down(&self, e: &redis::RedisError) {
        let was = {
            let mut guard = lock(&self.conn);
            guard.0 = None;
            guard.1 = guard.1.wrapping_add(1);
            self.reachable.swap(false, Ordering::AcqRel)
        };
        *lock(&self.retry_at) = Some(Instant::now() + RETRY_EVERY);
        if was {
            tracing::warn!(error = %e, "{}", self.down);
        }
    }

    /// A reply came on a connection taken at `epoch`. It shows Redis is
    /// reachable only if nothing failed since: with many requests on one
    /// connection, a reply Redis sent just before it went away can be
    /// handled after another request's failure, and must not mark Redis
    /// back (that logged "reachable again" while it was down, and the
    /// decisions taken locally until the next try went uncounted).
    pub fn mark_up(&self, epoch: u64) {
        if self.reachable.load(Ordering::Acquire) {
            return;
        }
        let now_up = {
            let guard = lock(&self.conn);
            guard.1 == epoch && !self.reachable.swap(true, Ordering::AcqRel)
        };
        if now_up {
            tracing::info!("{}", self.up);
        }
    }

    /// Failures counted so far (the epoch a connection taken now gets).
    #[cfg(test)]
    fn epoch(&self) -> u64 {
        lock(&self.conn).1
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn failure() -> redis::RedisError {
        redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// Regression (make cluster, Redis stopped under load): a reply taken
    /// on a connection before a later failure marked Redis reachable again
    /// while it was down.
    #[test]
    fn a_reply_from_before_a_failure_does_not_mark_redis_back() {
        let r = LazyRedis::new("redis://127.0.0.1:1", "down", "up").unwrap();
        assert!(r.reachable());
        let before = r.epoch();
        r.mark_down(&failure());
        assert!(!r.reachable());
        // The reply to a command sent on the connection taken before.
        r.mark_up(before);
        assert!(!r.reachable(), "an old reply marked Redis reachable");
        // A reply on a connection taken after the failure does.
        let after = r.epoch();
        r.mark_up(after);
        assert!(r.reachable());
        // And a failure after that is one change again.
        r.mark_down(&failure());
        assert!(!r.reachable());
    }

    #[tokio::test]
    async fn while_redis_is_down_one_try_per_back_off() {
        // Nothing listens on port 1: the connect fails at once.
        let r = LazyRedis::new("redis://127.0.0.1:1", "down", "up").unwrap();
        assert!(r.connection().await.is_none());
        assert!(!r.reachable());
        let failures = r.epoch();
        // Within the back-off no connect is tried (no failure counted).
        assert!(r.connection().await.is_none());
        assert_eq!(r.epoch(), failures);
        // After it, one is.
        *lock(&r.retry_at) = Some(Instant::now());
        assert!(r.connection().await.is_none());
        assert_eq!(r.epoch(), failures + 1);
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused() {
        assert!(LazyRedis::new("http://127.0.0.1:1", "down", "up").is_err());
    }
}
