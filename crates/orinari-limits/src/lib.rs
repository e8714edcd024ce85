//! Admission control: callers, rate limits and the fair admission queue.
//!
//! - [`callers`]: who is calling ([`Caller`]: an API key or a client IP)
//!   and what it may do; API keys are created here and stored only as
//!   SHA-256 digests.
//! - [`edge::Edge`]: one configuration's admission — its settings, the
//!   limiter chosen once at start-up, a queue per served model and the
//!   API-key cache behind authentication.
//! - [`Limiter`] enforces, per API key (or client IP without a key), a
//!   request rate (GCRA) and a token budget (reserve an estimate before the
//!   call, settle with the real usage after). It runs in memory
//!   ([`memory::MemoryLimiter`], `governor`) or shared by every instance
//!   through one atomic Redis script ([`redis::RedisLimiter`]), chosen once at
//!   start-up; when Redis is unreachable the Redis limiter falls back to local
//!   limits and goes back to Redis by itself.
//! - [`lazy_redis::LazyRedis`]: the lazy Redis connection with retry
//!   back-off that the limiter and the response cache (`orinari-chat`) share.
//! - [`queue::Admission`] bounds concurrency per model with a bounded queue
//!   that is fair across keys, honours priorities and times out; beyond it the
//!   caller sheds load (503).
//!
//! This crate knows nothing about models or HTTP: callers pass a subject, a
//! [`Policy`] and a token estimate, and map a [`Decision`] to a response.

pub mod callers;
pub mod edge;
pub mod lazy_redis;
pub mod memory;
pub mod queue;
pub mod redis;
#[cfg(feature = "test-support")]
pub mod testing;

use std::time::Duration;

pub use callers::{Caller, KeySpec, create_key, hash_token};
pub use edge::{AuthError, Edge};

/// Limits for one subject (an API key or a client IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests per minute (GCRA; the whole minute's worth may come as a burst).
    pub requests_per_minute: u32,
    /// Tokens (prompt + completion) per minute.
    pub tokens_per_minute: u32,
}

/// The state of one limit after a check, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The limit per minute.
    pub limit: u32,
    /// What is left now.
    pub remaining: u32,
    /// Time until the limit is whole again.
    pub reset: Duration,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The request rate.
    Requests,
    /// The token budget.
    Tokens,
}

impl LimitKind {
    /// `requests` or `tokens` (the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// Where a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This process alone (memory limiter, or the Redis limiter's fallback).
    Local,
    /// Shared with every instance through Redis.
    Shared,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `None` when admitted; otherwise the limit that refused it.
    pub refused: Option<LimitKind>,
    /// When a refused request may be retried.
    pub retry_after: Duration,
    /// The request limit after this check.
    pub requests: Window,
    /// The token limit after this check.
    pub tokens: Window,
    /// Where it was decided.
    pub source: Source,
}

impl Decision {
    /// Whether the request may go on.
    pub fn admitted(&self) -> bool {
        self.refused.is_none()
    }
}

/// The outcome of a token reservation ([`Limiter::reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDecision {
    /// The budget cannot take the estimate now.
    pub refused: bool,
    /// When a refused request may be retried.
    pub retry_after: Duration,
    /// The token limit after this reservation.
    pub tokens: Window,
    /// Where it was decided.
    pub source: Source,
}

/// The rate limiter, chosen once at start-up from config.
pub enum Limiter {
    /// Per-process limits.
    Memory(memory::MemoryLimiter),
    /// Limits shared through Redis (falls back to local limits while Redis is down).
    Redis(Box<redis::RedisLimiter>),
}

impl Limiter {
    /// Check one request for `subject`, reserving `estimate` tokens when admitted.
    pub async fn check(&self, subject: &str, policy: Policy, estimate: u32) -> Decision {
        match self {
            Self::Memory(m) => m.check(subject, policy, estimate),
            Self::Redis(r) => r.check(subject, policy, estimate).await,
        }
    }

    /// Reserve `estimate` tokens for a request [`Limiter::check`] already
    /// counted (with no estimate then): a chat answer's tokens are known
    /// only once its body has been read, after the edge limited the rate.
    pub async fn reserve(&self, subject: &str, policy: Policy, estimate: u32) -> TokenDecision {
        match self {
            Self::Memory(m) => m.reserve(subject, policy, estimate),
            Self::Redis(r) => r.reserve(subject, policy, estimate).await,
        }
    }

    /// [`Limiter::check`] without waiting, where that needs no I/O (the
    /// memory limiter); `None` leaves it to `check` (a Redis round trip).
    pub fn check_now(&self, subject: &str, policy: Policy, estimate: u32) -> Option<Decision> {
        match self {
            Self::Memory(m) => Some(m.check(subject, policy, estimate)),
            Self::Redis(_) => None,
        }
    }

    /// Settle a reservation: `actual` tokens were used where `estimate` were
    /// reserved (the difference is charged or refunded).
    pub async fn settle(&self, subject: &str, policy: Policy, estimate: u32, actual: u32) {
        if self.settle_now(subject, policy, estimate, actual) {
            return;
        }
        if let Self::Redis(r) = self {
            let delta = i64::from(actual) - i64::from(estimate);
            r.adjust_tokens(subject, policy, delta).await;
        }
    }

    /// Settle at once where that needs no I/O (nothing to settle, or the
    /// memory limiter) and say so; `false` leaves it to [`Limiter::settle`]
    /// (a Redis round trip), so a caller outside async code spawns only then.
    pub fn settle_now(&self, subject: &str, policy: Policy, estimate: u32, actual: u32) -> bool {
        match self {
            _ if estimate == actual => true,
            Self::Memory(m) => {
                m.adjust_tokens(subject, policy, i64::from(actual) - i64::from(estimate));
                true
            }
            Self::Redis(_) => false,
        }
    }

    /// Whether decisions are currently shared (Redis reachable); `true` for
    /// the memory limiter, which has nothing to share.
    pub fn healthy(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(r) => r.reachable(),
        }
    }
}

/// Milliseconds, rounded up, as the `x-ratelimit-reset-*` duration text
/// OpenAI uses (`1s`, `6m0s`, `120ms`).
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    let whole = secs.floor() as u64;
    let frac = secs - whole as f64;
    let (m, s) = (whole / 60, whole % 60);
    let s = if frac >= 0.0005 {
        format!("{:.3}", s as f64 + frac)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        s.to_string()
    };
    if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Whole seconds to wait, at least 1 (the `Retry-After` header).
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_text_matches_openai_style() {
        assert_eq!(reset_text(Duration::from_millis(120)), "120ms");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_millis(61_250)), "1m1.25s");
    }

    #[tokio::test]
    async fn the_memory_limiter_settles_at_once() {
        let l = Limiter::Memory(memory::MemoryLimiter::new());
        let policy = Policy {
            requests_per_minute: 100,
            tokens_per_minute: 1000,
        };
        assert!(l.check("k", policy, 600).await.admitted());
        // 400 left: another 600 does not fit until 500 of the first come back.
        assert!(!l.check("k", policy, 600).await.admitted());
        assert!(l.settle_now("k", policy, 600, 100));
        let after = l.check("k", policy, 600).await;
        assert!(after.admitted(), "{after:?}");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
