//! `[[models]]` served by upstream backends (`[[models.backends]]`):
//! providers, strategy, fallbacks, timeouts, failover, circuit breakers,
//! health checks and rollout groups. Every check names the key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ConfigError;
use crate::raw::{RawModel, defaults as d};
use crate::validate::err;

/// An upstream provider's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI Chat Completions (OpenAI, vLLM, Ollama, llama.cpp server, …).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// Which HTTP version to speak to a backend (`http_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpVersion {
    /// `auto`: HTTP/2 over `https` where TLS agrees on it (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// `1.1`.
    Http1,
    /// `2`: HTTP/2 only (prior knowledge over plain `http`).
    Http2,
}

/// Backend selection (`strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyName {
    /// `round-robin`.
    RoundRobin,
    /// `weighted`.
    Weighted,
    /// `p2c-ewma`.
    P2cEwma,
}

/// One `[[models.backends]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// Unique within the model.
    pub name: String,
    /// The API it speaks.
    pub provider: Provider,
    /// Base URL including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Relative weight within its group.
    pub weight: u32,
    /// Rollout group.
    pub group: String,
    /// Region label, preferred when it matches `server.region`.
    pub region: Option<String>,
    /// The model name the upstream knows (default: the served name).
    pub model: String,
    /// `http_version`.
    pub http_version: HttpVersion,
}

/// A model served by a pool of upstream backends.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamModelConfig {
    /// `strategy`.
    pub strategy: StrategyName,
    /// `fallback`: models tried in order when every backend fails before the first token.
    pub fallback: Vec<String>,
    /// `[[models.backends]]`, at least one.
    pub backends: Vec<BackendSettings>,
    /// `groups`: initial traffic weight per group (others 100).
    pub groups: BTreeMap<String, u32>,
    /// `connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `first_token_timeout_ms`.
    pub first_token_timeout: Duration,
    /// `idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// `total_timeout_ms`.
    pub total_timeout: Duration,
    /// `max_attempts`.
    pub max_attempts: u32,
    /// `retry_backoff_ms`.
    pub retry_backoff: Duration,
    /// `retry_budget_ms`.
    pub retry_budget: Duration,
    /// `failure_threshold`.
    pub failure_threshold: u32,
    /// `error_rate_threshold`, in (0, 1].
    pub error_rate_threshold: f64,
    /// `open_ms`.
    pub open_for: Duration,
    /// `health_path`, under each backend's `base_url`.
    pub health_path: String,
    /// `health_interval_ms`.
    pub health_interval: Duration,
    /// `context_size`: reported by `/v1/models` (0 when not set).
    pub context_window: u32,
}

fn ms(name: &str, key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(err(name, key, "must be at least 1 ms")),
        n => Ok(Duration::from_millis(n)),
    }
}

/// Whether a raw model is served by upstream backends.
pub fn is_upstream(m: &RawModel) -> bool {
    !m.backends.is_empty()
}

/// Validate a model with `[[models.backends]]`.
pub fn upstream(name: &str, i: usize, m: &RawModel) -> Result<UpstreamModelConfig, ConfigError> {
    let key = |k: &str| format!("models[{i}].{k}");
    if let Some(b) = &m.backend {
        return Err(err(
            name,
            &key("backend"),
            format!(
                "`{b}` and [[models.backends]] exclude each other: a model is either the embedded one or a pool of upstream backends"
            ),
        ));
    }
    for k in ["path", "parallel", "requantize", "prefix_cache_mib"] {
        let set = match k {
            "path" => m.path.is_some(),
            "parallel" => m.parallel.is_some(),
            "requantize" => m.requantize.is_some(),
            _ => m.prefix_cache_mib.is_some(),
        };
        if set {
            return Err(err(name, &key(k), "applies only to `backend = \"local\"`"));
        }
    }
    let strategy = match m.strategy.as_deref().unwrap_or(d::MODEL_STRATEGY) {
        "round-robin" => StrategyName::RoundRobin,
        "weighted" => StrategyName::Weighted,
        "p2c-ewma" => StrategyName::P2cEwma,
        other => {
            return Err(err(
                name,
                &key("strategy"),
                format!("unknown strategy `{other}`; expected round-robin, weighted or p2c-ewma"),
            ));
        }
    };
    let mut backends: Vec<BackendSettings> = Vec::with_capacity(m.backends.len());
    for (j, b) in m.backends.iter().enumerate() {
        let bkey = |k: &str| format!("models[{i}].backends[{j}].{k}");
        if b.name.trim().is_empty() {
            return Err(err(name, &bkey("name"), "must not be empty"));
        }
        if backends.iter().any(|o| o.name == b.name) {
            return Err(err(
                name,
                &bkey("name"),
                format!("`{}` is used twice in this model", b.name),
            ));
        }
        let provider = match b.provider.as_str() {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => {
                return Err(err(
                    name,
                    &bkey("provider"),
                    format!("unknown provider `{other}`; expected openai or anthropic"),
                ));
            }
        };
        let url = b.base_url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| {
                err(
                    name,
                    &bkey("base_url"),
                    format!("`{url}` is not an http:// or https:// URL"),
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(err(name, &bkey("base_url"), format!("`{url}` has no host")));
        }
        if rest
            .split('/')
            .next()
            .is_some_and(|host| host.contains('@'))
        {
            return Err(err(
                name,
                &bkey("base_url"),
                "must not carry credentials; put the key in the variable named by `api_key_env`",
            ));
        }
        if let Some(env) = &b.api_key_env
            && (env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(err(
                name,
                &bkey("api_key_env"),
                format!("`{env}` is not an environment variable name"),
            ));
        }
        let http_version = match b.http_version.as_deref().unwrap_or("auto") {
            "auto" => HttpVersion::Auto,
            "1.1" => HttpVersion::Http1,
            "2" => HttpVersion::Http2,
            other => {
                return Err(err(
                    name,
                    &bkey("http_version"),
                    format!("unknown HTTP version `{other}`; expected auto, 1.1 or 2"),
                ));
            }
        };
        let group = b.group.clone().unwrap_or_else(|| d::BACKEND_GROUP.into());
        if group.trim().is_empty() {
            return Err(err(name, &bkey("group"), "must not be empty"));
        }
        backends.push(BackendSettings {
            name: b.name.clone(),
            provider,
            base_url: url.trim_end_matches('/').to_string(),
            api_key_env: b.api_key_env.clone(),
            weight: b.weight.unwrap_or(d::BACKEND_WEIGHT),
            group,
            region: b.region.clone(),
            model: b.model.clone().unwrap_or_else(|| m.name.clone()),
            http_version,
        });
    }
    let groups = m.groups.clone().unwrap_or_default();
    for g in groups.keys() {
        if !backends.iter().any(|b| &b.group == g) {
            return Err(err(
                name,
                &key("groups"),
                format!("no backend is in group `{g}`"),
            ));
        }
    }
    let first_token_timeout = ms(
        name,
        &key("first_token_timeout_ms"),
        m.first_token_timeout_ms,
        d::FIRST_TOKEN_TIMEOUT_MS,
    )?;
    let total_timeout = ms(
        name,
        &key("total_timeout_ms"),
        m.total_timeout_ms,
        d::TOTAL_TIMEOUT_MS,
    )?;
    if total_timeout < first_token_timeout {
        return Err(err(
            name,
            &key("total_timeout_ms"),
            "must not be shorter than `first_token_timeout_ms`",
        ));
    }
    let error_rate_threshold = m.error_rate_threshold.unwrap_or(d::ERROR_RATE_THRESHOLD);
    if !(error_rate_threshold > 0.0 && error_rate_threshold <= 1.0) {
        return Err(err(name, &key("error_rate_threshold"), "must be in (0, 1]"));
    }
    let max_attempts = m.max_attempts.unwrap_or(d::MAX_ATTEMPTS);
    if !(1..=10).contains(&max_attempts) {
        return Err(err(name, &key("max_attempts"), "must be from 1 to 10"));
    }
    let failure_threshold = m.failure_threshold.unwrap_or(d::FAILURE_THRESHOLD);
    if failure_threshold == 0 {
        return Err(err(name, &key("failure_threshold"), "must be at least 1"));
    }
    if m.context_size.is_some_and(|n| n < 64) {
        return Err(err(
            name,
            &key("context_size"),
            "must be at least 64 tokens",
        ));
    }
    Ok(UpstreamModelConfig {
        strategy,
        fallback: m.fallback.clone(),
        backends,
        groups,
        connect_timeout: ms(
            name,
            &key("connect_timeout_ms"),
            m.connect_timeout_ms,
            d::CONNECT_TIMEOUT_MS,
        )?,
        first_token_timeout,
        idle_timeout: ms(
            name,
            &key("idle_timeout_ms"),
            m.idle_timeout_ms,
            d::IDLE_TIMEOUT_MS,
        )?,
        total_timeout,
        max_attempts,
        retry_backoff: ms(
            name,
            &key("retry_backoff_ms"),
            m.retry_backoff_ms,
            d::RETRY_BACKOFF_MS,
        )?,
        retry_budget: ms(
            name,
            &key("retry_budget_ms"),
            m.retry_budget_ms,
            d::RETRY_BUDGET_MS,
        )?,
        failure_threshold,
        error_rate_threshold,
        open_for: ms(name, &key("open_ms"), m.open_ms, d::OPEN_MS)?,
        health_path: m
            .health_path
            .clone()
            .unwrap_or_else(|| d::HEALTH_PATH.into()),
        health_interval: ms(
            name,
            &key("health_interval_ms"),
            m.health_interval_ms,
            d::HEALTH_INTERVAL_MS,
        )?,
        context_window: m.context_size.unwrap_or(0),
    })
}

/// Every fallback names another defined model.
pub fn check_fallbacks<'a>(
    name: &str,
    models: impl Iterator<Item = (usize, &'a str, &'a [String])> + Clone,
) -> Result<(), ConfigError> {
    for (i, model, fallback) in models.clone() {
        for (j, f) in fallback.iter().enumerate() {
            let key = format!("models[{i}].fallback[{j}]");
            if f == model {
                return Err(err(name, &key, "a model cannot fall back to itself"));
            }
            if !models.clone().any(|(_, n, _)| n == f) {
                return Err(err(name, &key, format!("there is no model `{f}`")));
            }
        }
    }
    Ok(())
}
