//! The admission edge of one configuration: its settings, the rate limiter
//! (memory or Redis, chosen once here), one fair admission queue per served
//! model, and the API-key cache behind [`Edge::authenticate`]. Built at
//! start-up and again, from the previous one, on a configuration reload
//! ([`Edge::next`]). Transport-free: the server hands in the bearer token
//! and the client address it read from the request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orinari_config::admission::AdmissionConfig;
use orinari_store::{ApiKey, Store};

use crate::Limiter;
use crate::callers::{Caller, KEY_PREFIX, hash_token, hex};
use crate::queue::Admission;

/// How long a key lookup is trusted before the store is asked again (a key
/// revoked on another instance stops working within this).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached lookups (hits and misses) before the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;

/// Why a caller was not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Keys are required and none was sent.
    #[error("an API key is required")]
    Missing,
    /// The key is unknown or revoked (and keys are required).
    #[error("the API key is not valid")]
    Invalid,
    /// The store could not be asked.
    #[error("API keys cannot be checked right now")]
    Unavailable,
}

/// Everything admission shares for one configuration.
pub struct Edge {
    config: AdmissionConfig,
    limiter: Arc<Limiter>,
    queues: HashMap<String, Admission>,
    keys: Mutex<KeyCache>,
}

/// Key lookups by SHA-256: the key (or `None` for unknown) and when it was read.
type KeyCache = HashMap<[u8; 32], (Option<Arc<ApiKey>>, Instant)>;

impl Edge {
    /// The edge for these settings. `models` names each served model with
    /// its own concurrency cap, if it has one (a local model's `parallel`).
    /// The limiter is chosen here, once: Redis when `redis_url` is set,
    /// else memory.
    pub fn new(config: AdmissionConfig, models: &[(String, Option<usize>)]) -> Self {
        let limiter = match &config.redis_url {
            Some(url) => match crate::redis::RedisLimiter::new(url, "orinari:rl") {
                Ok(r) => Limiter::Redis(Box::new(r)),
                Err(e) => {
                    // Validated at config time; keep serving with local limits.
                    tracing::error!(error = %e, "Redis URL refused; using local limits");
                    Limiter::Memory(crate::memory::MemoryLimiter::new())
                }
            },
            None => Limiter::Memory(crate::memory::MemoryLimiter::new()),
        };
        Self::with_limiter(config, Arc::new(limiter), models, &HashMap::new())
    }

    fn with_limiter(
        config: AdmissionConfig,
        limiter: Arc<Limiter>,
        models: &[(String, Option<usize>)],
        previous: &HashMap<String, Admission>,
    ) -> Self {
        let l = config.limits;
        let queues = models
            .iter()
            .map(|(name, cap)| {
                let concurrent = cap
                    .map_or(l.max_concurrent_per_model, |c| {
                        c.min(l.max_concurrent_per_model)
                    })
                    .max(1);
                let wanted = (concurrent, l.queue_depth, l.queue_timeout);
                let queue = match previous.get(name) {
                    Some(q) if q.settings() == wanted => q.clone(),
                    _ => Admission::new(concurrent, l.queue_depth, l.queue_timeout),
                };
                (name.clone(), queue)
            })
            .collect();
        Self {
            config,
            limiter,
            queues,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The edge for new settings (a configuration reload), keeping what
    /// callers have used so far: the rate limiter and its counts (so
    /// `redis_url` must not change; that takes a restart) and each model's
    /// queue whose settings did not change (its running and waiting requests
    /// stay in it). A queue whose settings changed starts empty; requests
    /// already admitted to the old one finish there.
    pub fn next(&self, config: AdmissionConfig, models: &[(String, Option<usize>)]) -> Self {
        Self::with_limiter(config, self.limiter.clone(), models, &self.queues)
    }

    /// The settings.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// The admission queue of `model`, if it is served.
    pub fn queue(&self, model: &str) -> Option<&Admission> {
        self.queues.get(model)
    }

    /// Requests waiting in every queue.
    pub fn queue_depth(&self) -> usize {
        self.queues.values().map(Admission::waiting).sum()
    }

    /// Who is calling: the API key sent as a bearer token, or — when keys
    /// are not required and none (or one that is not ours) is sent — the
    /// client IP.
    pub async fn authenticate(
        &self,
        store: Option<&Store>,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        if let Some(decided) = self.authenticate_now(store.is_some(), bearer, ip) {
            return decided;
        }
        let found = match (store, bearer) {
            (Some(store), Some(token)) => self.lookup(store, token).await?,
            _ => None,
        };
        self.resolve(found.as_deref(), ip)
    }

    /// [`Edge::authenticate`] without waiting, when that needs no store
    /// round trip (no key sent, a key that is not ours, a cached lookup);
    /// `None` when the store must be asked.
    pub fn authenticate_now(
        &self,
        has_store: bool,
        bearer: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Option<Result<Caller, AuthError>> {
        let Some(token) = bearer else {
            if self.config.auth_required {
                return Some(Err(AuthError::Missing));
            }
            return Some(Ok(self.anonymous(ip)));
        };
        let hash = hash_token(token);
        let now = Instant::now();
        if let Some((key, at)) = lock(&self.keys).get(&hash)
            && now.duration_since(*at) < KEY_CACHE_TTL
        {
            return Some(self.resolve(key.as_deref(), ip));
        }
        // Keys are ours only: anything else is unknown without asking the store.
        if has_store && token.starts_with(KEY_PREFIX) {
            return None;
        }
        self.remember(hash, None, now);
        Some(self.resolve(None, ip))
    }

    fn anonymous(&self, ip: Option<IpAddr>) -> Caller {
        let subject = ip.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"));
        Caller::anonymous(subject, &self.config.limits)
    }

    /// The caller for a looked-up key (`None`: unknown or revoked).
    fn resolve(&self, key: Option<&ApiKey>, ip: Option<IpAddr>) -> Result<Caller, AuthError> {
        match key {
            Some(key) => Ok(Caller::of_key(key, &self.config.limits)),
            // Keys optional: OpenAI clients insist on sending some key, so
            // one that is not ours is the anonymous caller, limited by IP.
            None if !self.config.auth_required => Ok(self.anonymous(ip)),
            None => Err(AuthError::Invalid),
        }
    }

    async fn lookup(&self, store: &Store, token: &str) -> Result<Option<Arc<ApiKey>>, AuthError> {
        let hash = hash_token(token);
        let found = store
            .find_active_key(&hex(&hash))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "API key lookup failed");
                AuthError::Unavailable
            })?
            .map(Arc::new);
        self.remember(hash, found.clone(), Instant::now());
        Ok(found)
    }

    fn remember(&self, hash: [u8; 32], key: Option<Arc<ApiKey>>, at: Instant) {
        let mut cache = lock(&self.keys);
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (key, at));
    }

    /// Forget cached lookups (after a key is revoked here).
    pub fn forget_keys(&self) {
        lock(&self.keys).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
