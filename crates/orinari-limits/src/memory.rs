//! Per-process limits: a `governor` GCRA limiter for the request rate and a
//! token bucket that can be reserved and settled, per subject.
//!
//! Both limits of a subject are checked under one lock. The request rate is
//! checked first: a request refused by it takes no tokens; one refused by
//! the token budget still counts as a request. Idle subjects (every limit
//! whole again) are dropped by a sweep, so client IPs cannot grow the map
//! without bound.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A direct GCRA limiter that reports its remaining burst on success.
type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

use crate::{Decision, LimitKind, Policy, Source, TokenDecision, Window};

/// How long a subject may stay idle before its state is dropped (both
/// limits are per minute, so after this long they are whole again).
const IDLE: Duration = Duration::from_secs(120);
/// Sweep at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A token budget of `capacity` per minute, refilled continuously. It may go
/// into debt when a request used more than it reserved.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    capacity: f64,
    available: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            capacity: f64::from(per_minute),
            available: f64::from(per_minute),
            at: now,
        }
    }

    fn per_ms(&self) -> f64 {
        self.capacity / 60_000.0
    }

    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        self.available = (self.available + ms * self.per_ms()).min(self.capacity);
        self.at = now;
    }

    /// Time until `n` tokens are available (zero when they are now).
    pub fn wait_for(&mut self, n: u32, now: Instant) -> Duration {
        self.refill(now);
        let missing = f64::from(n) - self.available;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_ms() / 1000.0)
        }
    }

    /// Take `n` tokens (may leave the bucket in debt).
    pub fn take(&mut self, n: i64, now: Instant) {
        self.refill(now);
        self.available = (self.available - n as f64).min(self.capacity);
    }

    /// The window for the `x-ratelimit-*-tokens` headers.
    pub fn window(&self) -> Window {
        let remaining = self.available.max(0.0).floor() as u32;
        let missing = (self.capacity - self.available).max(0.0);
        Window {
            limit: self.capacity as u32,
            remaining,
            reset: Duration::from_secs_f64(missing / self.per_ms() / 1000.0),
        }
    }
}

struct Entry {
    policy: Policy,
    requests: Gcra,
    tokens: TokenBucket,
    seen: Instant,
}

impl Entry {
    fn new(policy: Policy, now: Instant) -> Self {
        let rpm = NonZeroU32::new(policy.requests_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            policy,
            requests: RateLimiter::direct(Quota::per_minute(rpm))
                .with_middleware::<StateInformationMiddleware>(),
            tokens: TokenBucket::new(policy.tokens_per_minute.max(1), now),
            seen: now,
        }
    }
}

impl Entry {
    /// How long until `estimate` tokens fit (zero: now).
    fn token_wait(&mut self, estimate: u32, now: Instant) -> Duration {
        if estimate > self.policy.tokens_per_minute {
            // Never fits; a minute is how long the budget takes to be whole.
            Duration::from_secs(60)
        } else {
            self.tokens.wait_for(estimate, now)
        }
    }
}

impl State {
    /// The subject's limits (new ones for a new subject or policy), after
    /// sweeping idle subjects when a sweep is due.
    fn entry(&mut self, subject: &str, policy: Policy, now: Instant) -> Option<&mut Entry> {
        if now.duration_since(self.swept) > SWEEP_EVERY {
            self.subjects
                .retain(|_, e| now.duration_since(e.seen) < IDLE);
            self.swept = now;
        }
        let fresh = !matches!(self.subjects.get(subject), Some(e) if e.policy == policy);
        if fresh {
            self.subjects
                .insert(subject.to_string(), Entry::new(policy, now));
        }
        let entry = self.subjects.get_mut(subject)?;
        entry.seen = now;
        Some(entry)
    }
}

/// In-memory limits for every subject this process has seen recently.
pub struct MemoryLimiter {
    state: Mutex<State>,
    clock: DefaultClock,
}

struct State {
    subjects: HashMap<String, Entry>,
    swept: Instant,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                subjects: HashMap::new(),
                swept: Instant::now(),
            }),
            clock: DefaultClock::default(),
        }
    }

    /// Check one request, reserving `estimate` tokens when admitted.
    pub fn check(&self, subject: &str, policy: Policy, estimate: u32) -> Decision {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.entry(subject, policy, now) else {
            return unlimited(policy);
        };
        let interval = Duration::from_secs(60) / policy.requests_per_minute.max(1);
        let rpm = policy.requests_per_minute;
        let requests_now = |remaining: u32| Window {
            limit: rpm,
            remaining,
            reset: interval * (rpm.saturating_sub(remaining)),
        };
        // The request rate first: every request that reaches the limiter
        // counts, including one the token budget then refuses (the Redis
        // script does the same, so both limiters agree).
        let requests = match entry.requests.check() {
            Ok(snapshot) => requests_now(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                return Decision {
                    refused: Some(LimitKind::Requests),
                    retry_after: wait,
                    requests: Window {
                        limit: rpm,
                        remaining: 0,
                        reset: wait + interval * rpm.saturating_sub(1),
                    },
                    tokens: entry.tokens.window(),
                    source: Source::Local,
                };
            }
        };
        let token_wait = entry.token_wait(estimate, now);
        if !token_wait.is_zero() {
            return Decision {
                refused: Some(LimitKind::Tokens),
                retry_after: token_wait,
                requests,
                tokens: entry.tokens.window(),
                source: Source::Local,
            };
        }
        entry.tokens.take(i64::from(estimate), now);
        Decision {
            refused: None,
            retry_after: Duration::ZERO,
            requests,
            tokens: entry.tokens.window(),
            source: Source::Local,
        }
    }

    /// Reserve `estimate` tokens for a request whose rate [`check`] has
    /// already counted (a chat answer, once its size is known); the request
    /// rate is left as it is.
    ///
    /// [`check`]: MemoryLimiter::check
    pub fn reserve(&self, subject: &str, policy: Policy, estimate: u32) -> TokenDecision {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.entry(subject, policy, now) else {
            return TokenDecision {
                refused: false,
                retry_after: Duration::ZERO,
                tokens: unlimited(policy).tokens,
                source: Source::Local,
            };
        };
        let wait = entry.token_wait(estimate, now);
        if wait.is_zero() {
            entry.tokens.take(i64::from(estimate), now);
        }
        TokenDecision {
            refused: !wait.is_zero(),
            retry_after: wait,
            tokens: entry.tokens.window(),
            source: Source::Local,
        }
    }

    /// Charge (`delta > 0`) or refund (`delta < 0`) tokens after the fact.
    pub fn adjust_tokens(&self, subject: &str, policy: Policy, delta: i64) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = state.subjects.get_mut(subject)
            && e.policy == policy
        {
            e.tokens.take(delta, now);
        }
    }
}

fn unlimited(policy: Policy) -> Decision {
    let whole = |limit| Window {
        limit,
        remaining: limit,
        reset: Duration::ZERO,
    };
    Decision {
        refused: None,
        retry_after: Duration::ZERO,
        requests: whole(policy.requests_per_minute),
        tokens: whole(policy.tokens_per_minute),
        source: Source::Local,
    }
}
