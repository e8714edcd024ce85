//! Admission at the edge: who is calling (an API key, or a client IP), what
//! that caller may do (limits, models, priority), the rate limiter and the
//! per-model admission queues. The layers in `layers/` are thin wrappers
//! around this.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use orinari_api::ApiError;
use orinari_config::PromptInjection;
use orinari_config::admission::{AdmissionConfig, canonical};
use orinari_limits::queue::{Admission, Ticket};
use orinari_limits::{Limiter, Policy};
use orinari_store::{ApiKey, NewApiKey, Store, StoreError};

use crate::state::hash_token;

/// How long a key lookup is trusted before the store is asked again (a key
/// revoked on another instance stops working within this).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached lookups (hits and misses) before the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;
/// The prefix of every API key.
pub const KEY_PREFIX: &str = "ork_";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Rate-limit subject: `key:<id>` or `ip:<address>`.
    pub subject: String,
    /// Limits for this caller.
    pub policy: Policy,
    /// Queue priority (higher first).
    pub priority: i32,
    /// Requests of this caller running at once.
    pub max_concurrent: usize,
    /// Models it may use; `None` = all.
    pub allowed_models: Option<Arc<[String]>>,
    /// Its prompt-injection policy; `None` = the instance's `[guard]`.
    pub prompt_injection: Option<PromptInjection>,
}

impl Caller {
    /// Whether this caller may use `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == model))
    }

    /// Its ticket for an admission queue.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            subject: self.subject.clone(),
            priority: self.priority,
            max_concurrent: self.max_concurrent,
        }
    }
}

/// Everything the edge layers share; built at start-up and again, from the
/// previous one, on a configuration reload ([`Edge::next`]).
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
    pub fn new(config: AdmissionConfig, models: &[(String, Option<usize>)]) -> Self {
        let limiter = match &config.redis_url {
            Some(url) => match orinari_limits::redis::RedisLimiter::new(url, "orinari:rl") {
                Ok(r) => Limiter::Redis(Box::new(r)),
                Err(e) => {
                    // Validated at config time; keep serving with local limits.
                    tracing::error!(error = %e, "Redis URL refused; using local limits");
                    Limiter::Memory(orinari_limits::memory::MemoryLimiter::new())
                }
            },
            None => Limiter::Memory(orinari_limits::memory::MemoryLimiter::new()),
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
    pub fn limiter(&self) -> &Limiter {
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

    /// The client's address: the peer, or — when the peer is a trusted
    /// proxy — the nearest untrusted address in `X-Forwarded-For`.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?.ip());
        let trusted = |ip: &IpAddr| {
            self.config
                .connections
                .trusted_proxies
                .iter()
                .any(|n| n.contains(ip))
        };
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        )
    }

    fn default_caller(&self, subject: String) -> Caller {
        let l = self.config.limits;
        Caller {
            subject,
            policy: Policy {
                requests_per_minute: l.requests_per_minute,
                tokens_per_minute: l.tokens_per_minute,
            },
            priority: 0,
            max_concurrent: l.max_concurrent_per_key,
            allowed_models: None,
            prompt_injection: None,
        }
    }

    /// Who is calling: the API key in `Authorization: Bearer`, or — when
    /// keys are not required and none (or one that is not ours) is sent —
    /// the client IP.
    pub async fn authenticate(
        &self,
        store: Option<&Store>,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let anonymous = |ip: Option<IpAddr>| {
            let subject = ip.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}"));
            self.default_caller(subject)
        };
        let Some(token) = bearer else {
            if self.config.auth_required {
                return Err(ApiError::unauthorized(
                    "An API key is required: send `Authorization: Bearer <key>` (create one with `orinari keys create`).",
                    "missing_api_key",
                ));
            }
            return Ok(anonymous(ip));
        };
        let key = self.lookup(store, token).await?;
        let Some(key) = key else {
            // Keys optional: OpenAI clients insist on sending some key, so
            // one that is not ours is the anonymous caller, limited by IP.
            if !self.config.auth_required {
                return Ok(anonymous(ip));
            }
            return Err(ApiError::unauthorized(
                "The API key is not valid (unknown or revoked).",
                "invalid_api_key",
            ));
        };
        let l = self.config.limits;
        Ok(Caller {
            subject: format!("key:{}", key.id),
            policy: Policy {
                requests_per_minute: key.requests_per_minute.unwrap_or(l.requests_per_minute),
                tokens_per_minute: key.tokens_per_minute.unwrap_or(l.tokens_per_minute),
            },
            priority: key.priority,
            max_concurrent: key
                .max_concurrent
                .map_or(l.max_concurrent_per_key, |n| n as usize),
            allowed_models: key.allowed_models.clone().map(Arc::from),
            prompt_injection: key.prompt_injection.as_deref().and_then(policy),
        })
    }

    async fn lookup(
        &self,
        store: Option<&Store>,
        token: &str,
    ) -> Result<Option<Arc<ApiKey>>, ApiError> {
        let hash = hash_token(token);
        let now = Instant::now();
        if let Some((key, at)) = lock(&self.keys).get(&hash)
            && now.duration_since(*at) < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        // Keys are ours only: anything else is unknown without asking the store.
        let found = match store {
            Some(store) if token.starts_with(KEY_PREFIX) => store
                .find_active_key(&hex(&hash))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "API key lookup failed");
                    ApiError::overloaded("API keys cannot be checked right now.", 1)
                })?
                .map(Arc::new),
            _ => None,
        };
        let mut cache = lock(&self.keys);
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (found.clone(), now));
        Ok(found)
    }

    /// Forget cached lookups (after a key is revoked here).
    pub fn forget_keys(&self) {
        lock(&self.keys).clear();
    }
}

/// What `orinari keys create` and `POST /admin/v1/keys` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// Operator-chosen name.
    pub name: String,
    /// Per-key request limit (default: `[limits] requests_per_minute`).
    pub requests_per_minute: Option<u32>,
    /// Per-key token limit (default: `[limits] tokens_per_minute`).
    pub tokens_per_minute: Option<u32>,
    /// Models the key may use (default: all).
    pub allowed_models: Option<Vec<String>>,
    /// Queue priority (default 0; higher first).
    pub priority: i32,
    /// Requests running at once (default: `[limits] max_concurrent_per_key`).
    pub max_concurrent: Option<u32>,
    /// Prompt-injection policy (default: `[guard] prompt_injection`).
    pub prompt_injection: Option<PromptInjection>,
}

/// `block`, `flag` or `off`.
pub fn policy(s: &str) -> Option<PromptInjection> {
    match s {
        "block" => Some(PromptInjection::Block),
        "flag" => Some(PromptInjection::Flag),
        "off" => Some(PromptInjection::Off),
        _ => None,
    }
}

fn policy_name(p: PromptInjection) -> &'static str {
    match p {
        PromptInjection::Block => "block",
        PromptInjection::Flag => "flag",
        PromptInjection::Off => "off",
    }
}

impl KeySpec {
    /// Check the fields; the error names the field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err((
                "name",
                "must be at most 100 characters, without control characters".into(),
            ));
        }
        for (field, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent", self.max_concurrent),
        ] {
            if v == Some(0) {
                return Err((field, "must be at least 1".into()));
            }
        }
        if let Some(models) = &self.allowed_models
            && (models.is_empty() || models.iter().any(|m| m.trim().is_empty()))
        {
            return Err((
                "allowed_models",
                "must list at least one model name, none empty (leave it out to allow every model)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A key just created: the stored record and the key itself, to show once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// As stored (hash only).
    pub record: ApiKey,
    /// The key; never stored, never logged.
    pub secret: String,
}

/// Create an API key: generate it, store only its hash.
pub async fn create_key(store: &Store, spec: KeySpec) -> Result<CreatedKey, StoreError> {
    let secret = format!(
        "{KEY_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let record = store
        .create_key(NewApiKey {
            id: format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            name: spec.name.trim().to_string(),
            key_hash: hex(&hash_token(&secret)),
            prefix: secret.chars().take(KEY_PREFIX.len() + 6).collect(),
            requests_per_minute: spec.requests_per_minute,
            tokens_per_minute: spec.tokens_per_minute,
            allowed_models: spec.allowed_models,
            priority: spec.priority,
            max_concurrent: spec.max_concurrent,
            prompt_injection: spec.prompt_injection.map(|p| policy_name(p).to_string()),
        })
        .await?;
    Ok(CreatedKey { record, secret })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
