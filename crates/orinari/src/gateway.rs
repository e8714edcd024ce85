//! Wiring: the validated `[[models]]` → the balancer's gateway (pools of
//! upstream adapters, and the embedded models as single backends). Secrets
//! are read from the environment here, once, and never logged.

use std::sync::Arc;

use anyhow::Context;
use orinari_balance::{
    BackendSpec, BreakerConfig, Gateway, HealthConfig, PoolConfig, Retry, Strategy, Timeouts,
};
use orinari_config::defaults as d;
use orinari_config::models::{HttpVersion, Provider, StrategyName, UpstreamModelConfig};
use orinari_config::{Config, ModelConfig};
use orinari_models::anthropic::AnthropicBackend;
use orinari_models::openai::OpenAiBackend;
use orinari_models::{ModelBackend, UpstreamConfig, UpstreamSecret};
use orinari_telemetry::models::ModelMetrics;

/// Build the gateway. `single` gives the loaded embedded model of each
/// local model name. Must run inside the runtime (it starts health checks).
pub fn build(
    config: &Config,
    single: impl Fn(&str) -> Option<Arc<dyn ModelBackend>>,
    metrics: ModelMetrics,
) -> anyhow::Result<Arc<Gateway>> {
    let mut gw = Gateway::builder(metrics);
    for m in &config.models {
        match &m.upstream {
            None => {
                let backend = single(&m.name)
                    .with_context(|| format!("model `{}` was not loaded", m.name))?;
                gw.single(&m.name, backend);
            }
            Some(u) => {
                let backends = backends(m, u)?;
                gw.pool(pool_config(m, u, &config.server.region), backends);
                tracing::info!(model = %m.name, backends = u.backends.len(), "backend pool ready");
            }
        }
    }
    Ok(gw.build())
}

/// How the gateway that replaces the running one after a reload is built:
/// what [`rebuild`] decided, with every fallible step done.
pub struct Rebuild(Vec<Plan>);

enum Plan {
    Keep(String),
    New(Box<PoolConfig>, Vec<BackendSpec>),
}

/// The gateway that replaces `previous` after a reload to `next`: models
/// whose settings are unchanged since `current` keep their pools (health,
/// circuit state, weights, rollouts); changed and new upstream models get
/// new pools. Every fallible step (secrets, clients) runs here, and nothing
/// is taken from `previous` until [`Rebuild::build`], which cannot fail: a
/// reload that fails later (or here) leaves `previous` serving as it was.
pub fn rebuild(previous: &Gateway, current: &Config, next: &Config) -> anyhow::Result<Rebuild> {
    let mut plans = Vec::new();
    for m in &next.models {
        let unchanged = current.models.iter().any(|o| o == m);
        match &m.upstream {
            Some(u) if !unchanged => plans.push(Plan::New(
                Box::new(pool_config(m, u, &next.server.region)),
                backends(m, u)?,
            )),
            _ => {
                if !previous.models().any(|(n, _)| n == m.name) {
                    anyhow::bail!("model `{}` is not served now; restart to add it", m.name);
                }
                plans.push(Plan::Keep(m.name.clone()));
            }
        }
    }
    Ok(Rebuild(plans))
}

impl Rebuild {
    /// Build the new gateway (its new pools' health checks start now); serve
    /// it, then retire `previous`.
    pub fn build(self, previous: &Gateway) -> Arc<Gateway> {
        let mut gw = previous.next();
        for plan in self.0 {
            match plan {
                Plan::Keep(name) => {
                    gw.keep(&name, previous);
                }
                Plan::New(config, backends) => {
                    tracing::info!(model = %config.name, backends = backends.len(), "backend pool rebuilt");
                    gw.pool(*config, backends);
                }
            }
        }
        gw.build()
    }
}

fn backends(m: &ModelConfig, u: &UpstreamModelConfig) -> anyhow::Result<Vec<BackendSpec>> {
    u.backends
        .iter()
        .map(|b| {
            let api_key = match &b.api_key_env {
                Some(var) => Some(UpstreamSecret::new(std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "model `{}` backend `{}`: the environment variable {var} (api_key_env) is not set",
                        m.name,
                        b.name
                    )
                })?)),
                None => None,
            };
            let upstream = UpstreamConfig {
                base_url: b.base_url.clone(),
                model: b.model.clone(),
                api_key,
                connect_timeout: u.connect_timeout,
                health_path: u.health_path.clone(),
                context_window: u.context_window,
                http_version: match b.http_version {
                    HttpVersion::Auto => orinari_models::HttpVersion::Auto,
                    HttpVersion::Http1 => orinari_models::HttpVersion::Http1,
                    HttpVersion::Http2 => orinari_models::HttpVersion::Http2,
                },
            };
            let backend: Arc<dyn ModelBackend> = match b.provider {
                Provider::OpenAi => Arc::new(OpenAiBackend::new(upstream)?),
                Provider::Anthropic => Arc::new(AnthropicBackend::new(upstream)?),
            };
            Ok(BackendSpec {
                name: b.name.clone(),
                provider: b.provider.as_str().into(),
                group: b.group.clone(),
                weight: b.weight,
                region: b.region.clone(),
                backend,
            })
        })
        .collect()
}

fn pool_config(m: &ModelConfig, u: &UpstreamModelConfig, region: &str) -> PoolConfig {
    PoolConfig {
        name: m.name.clone(),
        strategy: match u.strategy {
            StrategyName::RoundRobin => Strategy::RoundRobin,
            StrategyName::Weighted => Strategy::Weighted,
            StrategyName::P2cEwma => Strategy::P2cEwma,
        },
        fallback: u.fallback.clone(),
        timeouts: Timeouts {
            first_token: u.first_token_timeout,
            idle: u.idle_timeout,
            total: u.total_timeout,
        },
        retry: Retry {
            max_attempts: u.max_attempts,
            backoff: u.retry_backoff,
            max_backoff: std::time::Duration::from_millis(d::RETRY_MAX_BACKOFF_MS),
            budget: u.retry_budget,
        },
        breaker: BreakerConfig {
            consecutive_failures: u.failure_threshold,
            error_rate: u.error_rate_threshold,
            window: d::ERROR_RATE_WINDOW,
            open_for: u.open_for,
        },
        health: HealthConfig {
            interval: u.health_interval,
            timeout: u.health_interval.min(u.connect_timeout * 2),
        },
        region: region.to_string(),
        group_weights: u.groups.clone(),
    }
}
