//! Raw → validated. Every check names the key and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::ConfigError;
use crate::raw::{Raw, RawModel, defaults as d};

/// The validated configuration the server runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[limits] max_body_bytes`.
    pub max_body_bytes: usize,
    /// `[guard] max_input_chars`.
    pub max_input_chars: usize,
    /// `[guard] prompt_injection`.
    pub prompt_injection: PromptInjection,
    /// `[auth] required`, resolved against the listeners.
    pub auth_required: bool,
    /// `[limits] queue_depth`: waiting requests before 503.
    pub queue_depth: usize,
    /// API keys, rate limits, the admission queue, connection protection
    /// and the IP firewall.
    pub admission: crate::admission::AdmissionConfig,
    /// `[server.tls]`: the HTTPS listener, when configured.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Served models, in config order; never empty.
    pub models: Vec<ModelConfig>,
    /// `[storage] url`.
    pub storage_url: String,
    /// `[backup]`, when destinations are configured.
    pub backup: Option<BackupSettings>,
    /// `[status]`: the status page, its components and checks.
    pub status: crate::status::StatusSettings,
    /// `[[sources]]`: data sources for grounded answers, in config order.
    pub sources: Vec<crate::sources::SourceConfig>,
    /// `[retrieval] budget_ms`: one answer's whole retrieval.
    pub retrieval_budget: std::time::Duration,
    /// Configured sections this version validates but does not act on yet;
    /// `serve` warns about each.
    pub inactive: Vec<&'static str>,
}

/// `[guard] prompt_injection`: what happens to a user message the guard
/// judges to be a prompt-injection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptInjection {
    /// Refuse the request (400 `prompt_injection_detected`).
    Block,
    /// Answer, and mark the response (`x-orinari-guard: flagged`) and the metric.
    Flag,
    /// Do not screen.
    Off,
}

/// `[backup]` with destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// Local directories (from `file://` URLs).
    pub destinations: Vec<PathBuf>,
    /// Full snapshot interval (`interval`); changes in between ship every second.
    pub interval: Duration,
    /// Snapshots older than this are deleted, the newest always kept (`retention`).
    pub retention: Duration,
    /// How often a backup is restored and checked (`verify_interval`).
    pub verify_interval: Duration,
    /// Alert when no backup has succeeded for this long (`rpo`).
    pub rpo: Duration,
    /// Where the key comes from.
    pub key: KeySource,
}

/// Where a secret is read from (never inline in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable's name.
    Env(String),
    /// A file's path.
    File(PathBuf),
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The HTTP listener.
    pub listen: SocketAddr,
    /// Env var holding the admin token.
    pub admin_token_env: String,
    /// Region label.
    pub region: String,
    /// How long SIGTERM waits for in-flight requests and streams.
    pub shutdown_timeout: Duration,
    /// `inference_threads`: threads of the embedded models' matrix
    /// products (`None`: the cores this process may use, cgroup quota
    /// included, less one for the server, at least 1).
    pub inference_threads: Option<usize>,
}

/// One served model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The name clients ask for.
    pub name: String,
    /// How it is served when it is the embedded model (`upstream` is `None`).
    pub local: LocalModelConfig,
    /// Set when a pool of upstream backends serves it (`[[models.backends]]`).
    pub upstream: Option<crate::models::UpstreamModelConfig>,
    /// `sources`: the `[[sources]]` a grounded model answers from (empty:
    /// not grounded).
    pub sources: Vec<String>,
    /// `cache`: the exact response cache for deterministic requests
    /// (`None`: off, the default).
    pub cache: Option<ResponseCacheConfig>,
}

/// `[[models]] cache = { ttl = "10m", max_mib = 64 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCacheConfig {
    /// How long an answer is served from the cache after it was stored.
    pub ttl: Duration,
    /// The in-memory cache's bound in bytes (unused with Redis).
    pub max_bytes: usize,
}

/// `models[i].cache`, validated.
fn response_cache(
    name: &str,
    i: usize,
    raw: Option<&crate::raw::RawResponseCache>,
) -> Result<Option<ResponseCacheConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let ttl = duration(
        name,
        &format!("models[{i}].cache.ttl"),
        raw.ttl.as_deref().unwrap_or(d::RESPONSE_CACHE_TTL),
    )?;
    let mib = positive(
        name,
        &format!("models[{i}].cache.max_mib"),
        raw.max_mib,
        d::RESPONSE_CACHE_MAX_MIB,
    )?;
    Ok(Some(ResponseCacheConfig {
        ttl,
        max_bytes: (mib as usize).saturating_mul(1 << 20),
    }))
}

/// `backend = "local"`: the embedded GGUF model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelConfig {
    /// GGUF path; `None` means `ORINARI_MODEL_PATH` or the fetched cache.
    pub path: Option<PathBuf>,
    /// Context window cap in tokens; `None` uses the model's own.
    pub context_size: Option<usize>,
    /// Sequences generated concurrently.
    pub parallel: usize,
    /// Re-quantize 4-bit weights to Q8_0 at load (faster on x86).
    pub requantize: bool,
    /// Memory for the prefix KV cache in MiB (0: off).
    pub prefix_cache_mib: usize,
}

/// An error naming the file, the key and why.
pub(crate) fn err(name: &str, key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{name}: `{key}`: {why}"))
}

/// `v` or its default, refused when zero.
pub(crate) fn positive<T: Into<u64> + Copy>(
    name: &str,
    key: &str,
    v: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    let v = v.unwrap_or(default);
    if v.into() == 0 {
        return Err(err(name, key, "must be at least 1"));
    }
    Ok(v)
}

pub(crate) fn duration(name: &str, key: &str, s: &str) -> Result<Duration, ConfigError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        err(
            name,
            key,
            format!("`{s}` is not a duration like 30s, 5m or 1h"),
        )
    })?;
    let too_long = || err(name, key, format!("`{s}` is too long"));
    let secs = match unit {
        "ms" if n == 0 => 0,
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(too_long)?,
        "h" => n.checked_mul(3600).ok_or_else(too_long)?,
        "d" => n.checked_mul(86_400).ok_or_else(too_long)?,
        _ => {
            return Err(err(
                name,
                key,
                format!("`{s}` is not a duration like 30s, 5m or 1h"),
            ));
        }
    };
    if secs == 0 {
        return Err(err(name, key, "must be longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}

fn local_model(name: &str, i: usize, m: RawModel) -> Result<ModelConfig, ConfigError> {
    let key = |k: &str| format!("models[{i}].{k}");
    if m.name.trim().is_empty() {
        return Err(err(name, &key("name"), "must not be empty"));
    }
    if m.strategy.is_some() || !m.fallback.is_empty() {
        return Err(err(
            name,
            &key(if m.strategy.is_some() {
                "strategy"
            } else {
                "fallback"
            }),
            "applies to models with [[models.backends]]; the embedded model has one backend",
        ));
    }
    match m.backend.as_deref() {
        Some("local") => {}
        Some(other) => {
            return Err(err(
                name,
                &key("backend"),
                format!("unknown backend `{other}`; expected `local`"),
            ));
        }
        None => {
            return Err(err(
                name,
                &key("backend"),
                "missing; expected `local`, or [[models.backends]] entries",
            ));
        }
    }
    let context_size = match m.context_size {
        Some(n) if n < 64 => {
            return Err(err(
                name,
                &key("context_size"),
                "must be at least 64 tokens",
            ));
        }
        n => n.map(|n| n as usize),
    };
    Ok(ModelConfig {
        name: m.name,
        local: LocalModelConfig {
            path: m.path.map(PathBuf::from),
            context_size,
            parallel: positive(name, &key("parallel"), m.parallel, d::LOCAL_PARALLEL)? as usize,
            requantize: m.requantize.unwrap_or(true),
            prefix_cache_mib: m.prefix_cache_mib.unwrap_or(d::LOCAL_PREFIX_CACHE_MIB) as usize,
        },
        upstream: None,
        sources: Vec::new(),
        cache: None,
    })
}

/// `models[i].sources`: each a defined `[[sources]]` name, once.
fn model_sources(
    name: &str,
    i: usize,
    names: &[String],
    defined: &[crate::sources::SourceConfig],
) -> Result<Vec<String>, ConfigError> {
    let key = format!("models[{i}].sources");
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if !defined.iter().any(|s| &s.name == n) {
            let known: Vec<&str> = defined.iter().map(|s| s.name.as_str()).collect();
            return Err(err(
                name,
                &key,
                format!(
                    "`{n}` is not a [[sources]] name (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if out.contains(n) {
            return Err(err(name, &key, format!("`{n}` is listed twice")));
        }
        out.push(n.clone());
    }
    Ok(out)
}

pub fn validate(raw: Raw, name: &str) -> Result<Config, ConfigError> {
    let listen_s = raw.server.listen.as_deref().unwrap_or(d::LISTEN);
    let listen: SocketAddr = listen_s.parse().map_err(|_| {
        err(
            name,
            "server.listen",
            format!("`{listen_s}` is not an address like 127.0.0.1:8080"),
        )
    })?;
    // Every configured section is acted on in this version.
    let inactive = Vec::new();
    let tls = raw
        .server
        .tls
        .as_ref()
        .map(|t| crate::tls::validate(t, name))
        .transpose()?;
    let loopback_only =
        listen.ip().is_loopback() && tls.as_ref().is_none_or(|t| t.listen.ip().is_loopback());
    let admission = crate::admission::validate(&raw, name, loopback_only)?;
    let auth_required = admission.auth_required;
    let admin_token_env = raw
        .server
        .admin_token_env
        .unwrap_or_else(|| d::ADMIN_TOKEN_ENV.into());
    if admin_token_env.is_empty() {
        return Err(err(
            name,
            "server.admin_token_env",
            "must name an environment variable",
        ));
    }
    let shutdown_timeout = Duration::from_millis(positive(
        name,
        "server.shutdown_timeout_ms",
        raw.server.shutdown_timeout_ms,
        d::SHUTDOWN_TIMEOUT_MS,
    )?);

    // Sections validated for shape now and acted on by later versions.
    let storage = raw.storage.url.as_deref().unwrap_or(d::STORAGE_URL);
    if !(storage.starts_with("sqlite:")
        || storage.starts_with("postgres://")
        || storage.starts_with("postgresql://"))
    {
        return Err(err(
            name,
            "storage.url",
            format!("`{storage}` must start with sqlite: or postgres://"),
        ));
    }
    let storage_url = storage.to_string();
    if !storage.starts_with("sqlite:")
        && tls
            .as_ref()
            .and_then(|t| t.acme.as_ref())
            .is_some_and(|a| a.key_env.is_none())
    {
        return Err(err(
            name,
            "server.tls.acme.key_env",
            "is required with a PostgreSQL store: the instances share the ACME account and \
             certificate through it, sealed with this key (name an environment variable holding \
             32 random bytes in base64, e.g. `openssl rand -base64 32`)",
        ));
    }
    let l = &raw.limits;
    let queue_depth = positive(name, "limits.queue_depth", l.queue_depth, d::QUEUE_DEPTH)? as usize;
    let max_body_bytes = positive(
        name,
        "limits.max_body_bytes",
        l.max_body_bytes,
        d::MAX_BODY_BYTES,
    )? as usize;
    let prompt_injection = match raw
        .guard
        .prompt_injection
        .as_deref()
        .unwrap_or(d::PROMPT_INJECTION)
    {
        "block" => PromptInjection::Block,
        "flag" => PromptInjection::Flag,
        "off" => PromptInjection::Off,
        other => {
            return Err(err(
                name,
                "guard.prompt_injection",
                format!("`{other}` must be one of block, flag, off"),
            ));
        }
    };
    let max_input_chars = positive(
        name,
        "guard.max_input_chars",
        raw.guard.max_input_chars,
        d::MAX_INPUT_CHARS,
    )? as usize;
    let sources = crate::sources::validate(name, raw.sources)?;
    let budget_ms = positive(
        name,
        "retrieval.budget_ms",
        raw.retrieval.budget_ms,
        d::RETRIEVAL_BUDGET_MS,
    )?;
    if budget_ms > 60_000 {
        return Err(err(
            name,
            "retrieval.budget_ms",
            "must be at most 60000 (a minute): it delays every grounded answer's first token",
        ));
    }
    // Built-in status checks: one per upstream model backend, and Redis.
    let backends: Vec<crate::status::BackendTarget<'_>> = raw
        .models
        .iter()
        .flat_map(|m| {
            m.backends.iter().map(|b| crate::status::BackendTarget {
                model: &m.name,
                backend: &b.name,
                base_url: &b.base_url,
                region: b.region.as_deref(),
            })
        })
        .collect();
    let status = crate::status::validate(
        raw.status,
        name,
        listen,
        duration,
        &backends,
        raw.cluster.redis_url.as_deref(),
    )?;
    let b = &raw.backup;
    let interval = duration(
        name,
        "backup.interval",
        b.interval.as_deref().unwrap_or(d::BACKUP_INTERVAL),
    )?;
    let retention = duration(
        name,
        "backup.retention",
        b.retention.as_deref().unwrap_or(d::BACKUP_RETENTION),
    )?;
    let verify_interval = duration(
        name,
        "backup.verify_interval",
        b.verify_interval
            .as_deref()
            .unwrap_or(d::BACKUP_VERIFY_INTERVAL),
    )?;
    let rpo = duration(
        name,
        "backup.rpo",
        b.rpo.as_deref().unwrap_or(d::BACKUP_RPO),
    )?;
    let key = match (&b.key_file, &b.key_env) {
        (Some(_), Some(_)) => {
            return Err(err(
                name,
                "backup.key_file",
                "set either key_env or key_file, not both",
            ));
        }
        (Some(f), None) => KeySource::File(PathBuf::from(f)),
        (None, env) => KeySource::Env(env.clone().unwrap_or_else(|| d::BACKUP_KEY_ENV.into())),
    };
    let backup = match &b.destinations {
        None => None,
        Some(dests) => {
            let mut paths = Vec::with_capacity(dests.len());
            for (i, dest) in dests.iter().enumerate() {
                let key = format!("backup.destinations[{i}]");
                match dest.strip_prefix("file://") {
                    Some(p) if p.starts_with('/') => paths.push(PathBuf::from(p)),
                    Some(_) => {
                        return Err(err(name, &key, "must be an absolute path: file:///path"));
                    }
                    None if dest.starts_with("s3://") => {
                        return Err(err(
                            name,
                            &key,
                            "S3 destinations are not available in this version; use file:// (e.g. a mounted remote disk)",
                        ));
                    }
                    None => return Err(err(name, &key, "must be a file:// URL")),
                }
            }
            if paths.is_empty() {
                return Err(err(
                    name,
                    "backup.destinations",
                    "must name at least one destination",
                ));
            }
            if !storage.starts_with("sqlite:") {
                return Err(err(
                    name,
                    "backup.destinations",
                    "built-in backups are for the embedded SQLite store; with PostgreSQL use its WAL archiving (docs/operations/postgres-pitr.md)",
                ));
            }
            Some(BackupSettings {
                destinations: paths,
                interval,
                retention,
                verify_interval,
                rpo,
                key,
            })
        }
    };

    let mut models = Vec::with_capacity(raw.models.len().max(1));
    for (i, m) in raw.models.into_iter().enumerate() {
        let grounded = model_sources(name, i, &m.sources, &sources)?;
        let cache = response_cache(name, i, m.cache.as_ref())?;
        let mut m = if crate::models::is_upstream(&m) {
            let upstream = crate::models::upstream(name, i, &m)?;
            ModelConfig {
                name: m.name,
                local: LocalModelConfig {
                    path: None,
                    context_size: None,
                    parallel: d::LOCAL_PARALLEL as usize,
                    requantize: true,
                    prefix_cache_mib: d::LOCAL_PREFIX_CACHE_MIB as usize,
                },
                upstream: Some(upstream),
                sources: Vec::new(),
                cache: None,
            }
        } else {
            local_model(name, i, m)?
        };
        m.sources = grounded;
        m.cache = cache;
        if models.iter().any(|o: &ModelConfig| o.name == m.name) {
            return Err(err(
                name,
                &format!("models[{i}].name"),
                format!("`{}` is defined twice", m.name),
            ));
        }
        models.push(m);
    }
    if models.is_empty() {
        models.push(ModelConfig {
            name: d::LOCAL_MODEL.into(),
            local: LocalModelConfig {
                path: None,
                context_size: None,
                parallel: d::LOCAL_PARALLEL as usize,
                requantize: true,
                prefix_cache_mib: d::LOCAL_PREFIX_CACHE_MIB as usize,
            },
            upstream: None,
            sources: Vec::new(),
            cache: None,
        });
    }
    crate::models::check_fallbacks(
        name,
        models.iter().enumerate().map(|(i, m)| {
            let fallback = m.upstream.as_ref().map_or(&[][..], |u| &u.fallback[..]);
            (i, m.name.as_str(), fallback)
        }),
    )?;
    Ok(Config {
        server: ServerConfig {
            listen,
            admin_token_env,
            region: raw.server.region.unwrap_or_else(|| d::REGION.into()),
            shutdown_timeout,
            inference_threads: match raw.server.inference_threads {
                None | Some(0) => None,
                Some(n) => Some(n as usize),
            },
        },
        max_body_bytes,
        max_input_chars,
        prompt_injection,
        auth_required,
        queue_depth,
        admission,
        tls,
        models,
        storage_url,
        backup,
        status,
        sources,
        retrieval_budget: std::time::Duration::from_millis(budget_ms),
        inactive,
    })
}
