//! Limits shared by every instance through Redis: one Lua script checks the
//! request rate (GCRA) and reserves tokens atomically, on Redis's clock, in
//! one round trip.
//!
//! When Redis cannot be reached (connect or reply slower than the timeout),
//! the check falls back to this process's [`MemoryLimiter`] — each instance
//! then enforces the whole limit alone — logs the change once, and tries
//! Redis again at most once per [`RETRY_EVERY`]; no request fails because
//! Redis is down. The connection, its back-off and the reachable state are
//! [`LazyRedis`]'s, shared with the response cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use crate::lazy_redis::{LazyRedis, Taken};
pub use crate::lazy_redis::{RETRY_EVERY, TIMEOUT};
use crate::memory::MemoryLimiter;
use crate::{Decision, LimitKind, Policy, Source, TokenDecision, Window};

/// GCRA on the request key, then a token bucket on the token key, both on
/// Redis time (microseconds). Returns {outcome, retry_us, req_remaining,
/// req_reset_us, tok_remaining, tok_reset_us}; outcome 0 admitted,
/// 1 refused by requests, 2 refused by tokens.
const CHECK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local est = tonumber(ARGV[3])
local per_us = tpm / 60000000
local b = redis.call('HMGET', KEYS[2], 'a', 't')
local avail = tonumber(b[1]) or tpm
local at = tonumber(b[2]) or now
avail = math.min(tpm, avail + math.max(0, now - at) * per_us)
local function tok_window()
  return math.floor(math.max(avail, 0)), math.floor((tpm - avail) / per_us)
end
local interval = 60000000 / rpm
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - 60000000
if now < allow_at then
  local tr, tt = tok_window()
  return {1, math.floor(allow_at - now), 0, math.floor(tat - now), tr, tt}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
local req_remaining = math.floor((now + 60000000 - new_tat) / interval)
local req_reset = math.floor(new_tat - now)
if est > tpm or avail < est then
  local wait = 60000000
  if est <= tpm then wait = (est - avail) / per_us end
  redis.call('HSET', KEYS[2], 'a', tostring(avail), 't', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[2], 120000)
  local tr, tt = tok_window()
  return {2, math.floor(wait), req_remaining, req_reset, tr, tt}
end
avail = avail - est
redis.call('HSET', KEYS[2], 'a', tostring(avail), 't', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[2], 120000)
local tr, tt = tok_window()
return {0, 0, req_remaining, req_reset, tr, tt}
";

/// The token half of `CHECK` alone: reserve `est` tokens on the token key.
/// Returns {refused, wait_us, tok_remaining, tok_reset_us}.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tpm = tonumber(ARGV[1])
local est = tonumber(ARGV[2])
local per_us = tpm / 60000000
local b = redis.call('HMGET', KEYS[1], 'a', 't')
local avail = tonumber(b[1]) or tpm
local at = tonumber(b[2]) or now
avail = math.min(tpm, avail + math.max(0, now - at) * per_us)
local refused = 0
local wait = 0
if est > tpm or avail < est then
  refused = 1
  wait = 60000000
  if est <= tpm then wait = (est - avail) / per_us end
else
  avail = avail - est
end
redis.call('HSET', KEYS[1], 'a', tostring(avail), 't', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], 120000)
return {refused, math.floor(wait), math.floor(math.max(avail, 0)), math.floor((tpm - avail) / per_us)}
";

/// Charge or refund tokens on the token key (refilled first, capped at the budget).
const ADJUST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tpm = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local per_us = tpm / 60000000
local b = redis.call('HMGET', KEYS[1], 'a', 't')
local avail = tonumber(b[1]) or tpm
local at = tonumber(b[2]) or now
avail = math.min(tpm, avail + math.max(0, now - at) * per_us - delta)
redis.call('HSET', KEYS[1], 'a', tostring(avail), 't', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], 120000)
return 1
";

/// Errors reaching Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
}

/// The shared limiter.
pub struct RedisLimiter {
    redis: LazyRedis,
    fallbacks: AtomicU64,
    local: MemoryLimiter,
    check: Script,
    reserve: Script,
    adjust: Script,
    prefix: String,
}

impl RedisLimiter {
    /// A limiter on `url` (connects lazily; never fails because Redis is down).
    /// Keys are namespaced by `prefix` (e.g. `orinari:rl`).
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisError> {
        let redis = LazyRedis::new(
            url,
            "Redis unreachable; rate limits fall back to local limits",
            "Redis reachable again; rate limits are shared again",
        )
        .map_err(|e| RedisError::Url(e.to_string()))?;
        Ok(Self {
            redis,
            fallbacks: AtomicU64::new(0),
            local: MemoryLimiter::new(),
            check: Script::new(CHECK),
            reserve: Script::new(RESERVE),
            adjust: Script::new(ADJUST),
            prefix: prefix.to_string(),
        })
    }

    /// Whether the last attempt reached Redis.
    pub fn reachable(&self) -> bool {
        self.redis.reachable()
    }

    /// Decisions taken locally because Redis was unreachable, since start.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn keys(&self, subject: &str) -> (String, String) {
        // The hash tag keeps both keys of a subject in one Redis Cluster slot.
        (
            format!("{}:{{{subject}}}:r", self.prefix),
            format!("{}:{{{subject}}}:t", self.prefix),
        )
    }

    /// Check one request, reserving `estimate` tokens when admitted.
    pub async fn check(&self, subject: &str, policy: Policy, estimate: u32) -> Decision {
        if let Some(Taken { mut conn, epoch }) = self.redis.connection().await {
            let (rk, tk) = self.keys(subject);
            let reply: Result<Vec<i64>, _> = self
                .check
                .key(rk)
                .key(tk)
                .arg(policy.requests_per_minute.max(1))
                .arg(policy.tokens_per_minute.max(1))
                .arg(estimate)
                .invoke_async(&mut conn)
                .await;
            match reply {
                Ok(v) if v.len() == 6 => {
                    self.redis.mark_up(epoch);
                    return decision(&v, policy);
                }
                Ok(v) => {
                    tracing::error!(len = v.len(), "unexpected reply from the rate-limit script");
                }
                Err(e) => self.redis.mark_down(&e),
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.local.check(subject, policy, estimate)
    }

    /// Reserve `estimate` tokens for a request already counted by
    /// [`RedisLimiter::check`].
    pub async fn reserve(&self, subject: &str, policy: Policy, estimate: u32) -> TokenDecision {
        if let Some(Taken { mut conn, epoch }) = self.redis.connection().await {
            let (_, tk) = self.keys(subject);
            let reply: Result<Vec<i64>, _> = self
                .reserve
                .key(tk)
                .arg(policy.tokens_per_minute.max(1))
                .arg(estimate)
                .invoke_async(&mut conn)
                .await;
            match reply {
                Ok(v) if v.len() == 4 => {
                    self.redis.mark_up(epoch);
                    return TokenDecision {
                        refused: v[0] != 0,
                        retry_after: micros(v[1]),
                        tokens: Window {
                            limit: policy.tokens_per_minute,
                            remaining: count(v[2]),
                            reset: micros(v[3]),
                        },
                        source: Source::Shared,
                    };
                }
                Ok(v) => {
                    tracing::error!(
                        len = v.len(),
                        "unexpected reply from the reservation script"
                    );
                }
                Err(e) => self.redis.mark_down(&e),
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.local.reserve(subject, policy, estimate)
    }

    /// Charge (`delta > 0`) or refund (`delta < 0`) tokens after the fact.
    pub async fn adjust_tokens(&self, subject: &str, policy: Policy, delta: i64) {
        if let Some(Taken { mut conn, epoch }) = self.redis.connection().await {
            let (_, tk) = self.keys(subject);
            let reply: Result<i64, _> = self
                .adjust
                .key(tk)
                .arg(policy.tokens_per_minute.max(1))
                .arg(delta)
                .invoke_async(&mut conn)
                .await;
            match reply {
                Ok(_) => return self.redis.mark_up(epoch),
                Err(e) => self.redis.mark_down(&e),
            }
        }
        self.local.adjust_tokens(subject, policy, delta);
    }
}

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn decision(v: &[i64], policy: Policy) -> Decision {
    let refused = match v[0] {
        1 => Some(LimitKind::Requests),
        2 => Some(LimitKind::Tokens),
        _ => None,
    };
    Decision {
        refused,
        retry_after: micros(v[1]),
        requests: Window {
            limit: policy.requests_per_minute,
            remaining: count(v[2]),
            reset: micros(v[3]),
        },
        tokens: Window {
            limit: policy.tokens_per_minute,
            remaining: count(v[4]),
            reset: micros(v[5]),
        },
        source: Source::Shared,
    }
}
