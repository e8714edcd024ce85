//! The raw TOML shape, exactly as CONTRACT.md names the keys.
#![allow(
    dead_code,
    reason = "sections for TLS, providers, sources, status and backup are shape-checked now and read by later versions"
)]

use serde::Deserialize;

use crate::ConfigError;

/// Documented defaults, one constant each.
pub mod defaults {
    /// `server.listen`.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `server.admin_token_env`.
    pub const ADMIN_TOKEN_ENV: &str = "ORINARI_ADMIN_TOKEN";
    /// `server.region`.
    pub const REGION: &str = "local";
    /// `server.shutdown_timeout_ms`: how long SIGTERM waits for streams.
    pub const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
    /// `storage.url`.
    pub const STORAGE_URL: &str = "sqlite://orinari-data/orinari.db";
    /// `limits.requests_per_minute`.
    pub const REQUESTS_PER_MINUTE: u32 = 600;
    /// `limits.tokens_per_minute`.
    pub const TOKENS_PER_MINUTE: u32 = 200_000;
    /// `limits.max_concurrent_per_key`.
    pub const MAX_CONCURRENT_PER_KEY: u32 = 16;
    /// `limits.queue_depth`.
    pub const QUEUE_DEPTH: u32 = 256;
    /// `limits.queue_timeout_ms`.
    pub const QUEUE_TIMEOUT_MS: u64 = 10_000;
    /// `limits.max_body_bytes`.
    pub const MAX_BODY_BYTES: u64 = 1_048_576;
    /// `limits.max_concurrent_per_model`: answers generated at once per model
    /// (a local model is further capped by its `parallel`).
    pub const MAX_CONCURRENT_PER_MODEL: u32 = 64;
    /// `limits.default_completion_estimate`: tokens reserved for the answer
    /// when a request sets no `max_tokens` (settled with real usage after).
    pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 256;
    /// `server.max_connections`: open connections at once.
    pub const MAX_CONNECTIONS: u32 = 4096;
    /// `server.max_connections_per_ip`.
    pub const MAX_CONNECTIONS_PER_IP: u32 = 64;
    /// `server.header_read_timeout_ms`: a request head must arrive within this
    /// (slowloris); an idle HTTP/1 keep-alive connection, which is waiting
    /// for its next head, is closed after it too.
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// `server.body_read_timeout_ms`: a request body must arrive within this (slow POST).
    pub const BODY_READ_TIMEOUT_MS: u64 = 15_000;
    /// `server.max_header_bytes`: the whole request head (431 beyond).
    pub const MAX_HEADER_BYTES: u32 = 16_384;
    /// `server.max_headers`: header count (431 beyond).
    pub const MAX_HEADERS: u32 = 64;
    /// `server.http2_max_concurrent_streams`.
    pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
    /// `firewall.admin.allow`: the admin API answers loopback clients only.
    pub const ADMIN_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];
    /// `guard.prompt_injection`.
    pub const PROMPT_INJECTION: &str = "block";
    /// `guard.max_input_chars`.
    pub const MAX_INPUT_CHARS: u32 = 32_000;
    /// The embedded model's name.
    pub const LOCAL_MODEL: &str = "orinari-small";
    /// `[[models]] parallel` for a local model: sequences interleaved at once.
    pub const LOCAL_PARALLEL: u32 = 4;
    /// `[[models]] prefix_cache_mib` of an embedded model: memory for the
    /// keys and values of recent prompts, reused by the next turn.
    pub const LOCAL_PREFIX_CACHE_MIB: u32 = 128;
    /// `[[models]] cache.ttl`: how long a cached answer is served.
    pub const RESPONSE_CACHE_TTL: &str = "10m";
    /// `[[models]] cache.max_mib`: the in-memory cache's bound per model
    /// (with `[cluster] redis_url`, Redis's own `maxmemory` bounds it).
    pub const RESPONSE_CACHE_MAX_MIB: u32 = 64;
    /// `[[models]] strategy` for upstream backends.
    pub const MODEL_STRATEGY: &str = "p2c-ewma";
    /// `[[models]] connect_timeout_ms`: TCP/TLS connect to a backend.
    pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
    /// `[[models]] first_token_timeout_ms`: request sent → first token.
    pub const FIRST_TOKEN_TIMEOUT_MS: u64 = 30_000;
    /// `[[models]] idle_timeout_ms`: longest silence between two tokens.
    pub const IDLE_TIMEOUT_MS: u64 = 30_000;
    /// `[[models]] total_timeout_ms`: a whole answer, stream included.
    pub const TOTAL_TIMEOUT_MS: u64 = 600_000;
    /// `[[models]] max_attempts`: backends tried before the fallbacks.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// `[[models]] retry_backoff_ms`: base of the jittered exponential backoff.
    pub const RETRY_BACKOFF_MS: u64 = 25;
    /// Cap of one backoff.
    pub const RETRY_MAX_BACKOFF_MS: u64 = 1_000;
    /// `[[models]] retry_budget_ms`: no new attempt starts after this.
    pub const RETRY_BUDGET_MS: u64 = 10_000;
    /// `[[models]] failure_threshold`: consecutive failures that open a circuit.
    pub const FAILURE_THRESHOLD: u32 = 5;
    /// `[[models]] error_rate_threshold`: error rate over the last 20 requests that opens it.
    pub const ERROR_RATE_THRESHOLD: f64 = 0.5;
    /// Requests in the error-rate window.
    pub const ERROR_RATE_WINDOW: u32 = 20;
    /// `[[models]] open_ms`: how long a circuit stays open before a trial request.
    pub const OPEN_MS: u64 = 10_000;
    /// `[[models]] health_interval_ms`: active health check period.
    pub const HEALTH_INTERVAL_MS: u64 = 5_000;
    /// `[[models]] health_path` for `openai` and `anthropic` backends (under `base_url`).
    pub const HEALTH_PATH: &str = "models";
    /// `[[models.backends]] weight`.
    pub const BACKEND_WEIGHT: u32 = 100;
    /// `[[models.backends]] group`.
    pub const BACKEND_GROUP: &str = "default";
    /// `backup.interval`.
    pub const BACKUP_INTERVAL: &str = "5m";
    /// `backup.retention`: snapshots kept this long (the newest always).
    pub const BACKUP_RETENTION: &str = "7d";
    /// `backup.verify_interval`: restore-and-check period.
    pub const BACKUP_VERIFY_INTERVAL: &str = "24h";
    /// `backup.rpo`: alert when no backup succeeded for this long.
    pub const BACKUP_RPO: &str = "5m";
    /// `backup.key_env`.
    pub const BACKUP_KEY_ENV: &str = "ORINARI_BACKUP_KEY";
    /// `sources[].timeout_ms`: one source's deadline.
    pub const SOURCE_TIMEOUT_MS: u64 = 800;
    /// `retrieval.budget_ms`: every source of an answer, queried at once.
    pub const RETRIEVAL_BUDGET_MS: u64 = 1500;
    /// `sources[].chunk_tokens` (files): the most tokens in one indexed chunk.
    pub const SOURCE_CHUNK_TOKENS: u32 = 256;
    /// `sources[].rescan_interval` (files): full rescan, healing missed file events.
    pub const SOURCE_RESCAN_INTERVAL: &str = "30s";
    /// `sources[].max_response_bytes` (http): larger answers are refused.
    pub const SOURCE_MAX_RESPONSE_BYTES: u64 = 1_048_576;
    /// `status.page_name`.
    pub const STATUS_PAGE_NAME: &str = "ORINARI";
    /// `status.time_zone`: the zone times are shown in (IANA name).
    pub const STATUS_TIME_ZONE: &str = "Etc/UTC";
    /// `status.builtin_checks`: probe the instance's own store.
    pub const STATUS_BUILTIN_CHECKS: bool = true;
    /// `status.checks[].interval`.
    pub const CHECK_INTERVAL: &str = "30s";
    /// `status.checks[].timeout`.
    pub const CHECK_TIMEOUT: &str = "5s";
    /// `status.checks[].failure_threshold`: consecutive failures before down.
    pub const CHECK_FAILURE_THRESHOLD: u32 = 3;
    /// `status.checks[].success_threshold`: consecutive passes before up again.
    pub const CHECK_SUCCESS_THRESHOLD: u32 = 2;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub guard: RawGuard,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub retrieval: RawRetrieval,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub backup: RawBackup,
    #[serde(default)]
    pub firewall: RawFirewall,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_token_env: Option<String>,
    pub region: Option<String>,
    pub shutdown_timeout_ms: Option<u64>,
    pub inference_threads: Option<u32>,
    pub tls: Option<RawTls>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<u32>,
    pub max_headers: Option<u32>,
    pub http2_max_concurrent_streams: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub cors_allow_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub acme: Option<RawAcme>,
    pub modern: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Vec<String>,
    pub directory: Option<String>,
    pub contact: Option<String>,
    pub cache_dir: Option<String>,
    pub renew_before: Option<String>,
    pub check_interval: Option<String>,
    pub directory_ca: Option<String>,
    pub key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent_per_key: Option<u32>,
    pub queue_depth: Option<u32>,
    pub queue_timeout_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub max_concurrent_per_model: Option<u32>,
    pub default_completion_estimate: Option<u32>,
}

/// `[retrieval]`: how grounded answers query their sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetrieval {
    /// `retrieval.budget_ms`: the whole fan-out's deadline.
    pub budget_ms: Option<u64>,
}

/// `[firewall]`: IP/CIDR lists, everywhere (`deny`) and per route group.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirewall {
    pub deny: Option<Vec<String>>,
    pub api: Option<RawIpRule>,
    pub admin: Option<RawIpRule>,
    pub pages: Option<RawIpRule>,
    pub ops: Option<RawIpRule>,
}

/// One route group's lists (an empty or missing `allow` allows everyone).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpRule {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub prompt_injection: Option<String>,
    pub max_input_chars: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub backend: Option<String>,
    pub path: Option<String>,
    pub context_size: Option<u32>,
    pub parallel: Option<u32>,
    pub requantize: Option<bool>,
    pub prefix_cache_mib: Option<u32>,
    /// `[[models]] cache`: the exact response cache (absent: off).
    pub cache: Option<RawResponseCache>,
    pub strategy: Option<String>,
    #[serde(default)]
    pub fallback: Vec<String>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub groups: Option<std::collections::BTreeMap<String, u32>>,
    /// `[[models]] sources`: a grounded model answers from these.
    #[serde(default)]
    pub sources: Vec<String>,
    pub connect_timeout_ms: Option<u64>,
    pub first_token_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub retry_budget_ms: Option<u64>,
    pub failure_threshold: Option<u32>,
    pub error_rate_threshold: Option<f64>,
    pub open_ms: Option<u64>,
    pub health_path: Option<String>,
    pub health_interval_ms: Option<u64>,
}

/// `[[models]] cache = { ttl = "10m", max_mib = 64 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponseCache {
    pub ttl: Option<String>,
    pub max_mib: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: String,
    pub provider: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub weight: Option<u32>,
    pub group: Option<String>,
    pub region: Option<String>,
    pub model: Option<String>,
    pub http_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: String,
    pub kind: String,
    pub path: Option<String>,
    pub url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub chunk_tokens: Option<u32>,
    pub rescan_interval: Option<String>,
    pub retrieval: Option<String>,
    pub body: Option<String>,
    pub auth_header: Option<String>,
    pub auth_header_env: Option<String>,
    pub max_response_bytes: Option<u64>,
    pub query: Option<String>,
    pub fields: Option<RawSourceFields>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSourceFields {
    pub hits: Option<String>,
    pub title: Option<String>,
    pub text: Option<String>,
    pub url: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub page_name: Option<String>,
    pub page_url: Option<String>,
    pub time_zone: Option<String>,
    pub connectivity_check: Option<String>,
    pub builtin_checks: Option<bool>,
    pub smtp: Option<String>,
    pub smtp_from: Option<String>,
    #[serde(default)]
    pub components: Vec<RawComponent>,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub alerts: Vec<RawAlert>,
    #[serde(default)]
    pub alert_emails: Vec<String>,
    pub webhook_subscriptions: Option<bool>,
    pub webhook_allow: Option<Vec<String>>,
    pub webhook_max_failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub name: String,
    pub kind: String,
    pub route: Option<String>,
    pub threshold: f64,
    pub window: Option<String>,
    pub min_requests: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponent {
    pub name: String,
    pub id: Option<String>,
    pub description: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: String,
    pub id: Option<String>,
    pub url: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub expect_status: Option<u16>,
    pub keyword: Option<String>,
    pub json_path: Option<String>,
    pub json_equals: Option<String>,
    pub degraded_after: Option<String>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub description: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    pub secret_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub interval: Option<String>,
    pub retention: Option<String>,
    pub verify_interval: Option<String>,
    pub rpo: Option<String>,
    pub destinations: Option<Vec<String>>,
    pub key_env: Option<String>,
    pub key_file: Option<String>,
}

/// Scalar keys that `ORINARI_<SECTION>_<KEY>` may override. Other `ORINARI_*`
/// variables (`ORINARI_MODEL_PATH`, `ORINARI_ADMIN_TOKEN`…) are not overrides.
const OVERRIDABLE: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "admin_token_env",
            "region",
            "shutdown_timeout_ms",
            "inference_threads",
            "max_connections",
            "max_connections_per_ip",
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "max_header_bytes",
            "max_headers",
            "http2_max_concurrent_streams",
        ],
    ),
    ("storage", &["url"]),
    ("cluster", &["redis_url"]),
    (
        "limits",
        &[
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent_per_key",
            "queue_depth",
            "queue_timeout_ms",
            "max_body_bytes",
            "max_concurrent_per_model",
            "default_completion_estimate",
        ],
    ),
    ("auth", &["required"]),
    ("retrieval", &["budget_ms"]),
    ("guard", &["prompt_injection", "max_input_chars"]),
    (
        "status",
        &[
            "page_name",
            "page_url",
            "time_zone",
            "connectivity_check",
            "smtp",
            "smtp_from",
            "webhook_subscriptions",
            "webhook_max_failures",
        ],
    ),
    (
        "backup",
        &[
            "interval",
            "retention",
            "verify_interval",
            "key_env",
            "key_file",
        ],
    ),
];

/// Byte offset → 1-based line and column.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn toml_error(text: &str, name: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            ConfigError(format!("{name}:{line}:{col}: {msg}"))
        }
        None => ConfigError(format!("{name}: {msg}")),
    }
}

/// The raw configuration, and the keys (`section.key`) that environment
/// variables set over the file's values.
pub fn parse(
    text: &str,
    name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Raw, Vec<String>), ConfigError> {
    // Parse once with spans for precise file errors, then re-deserialize with
    // environment overrides applied on top.
    let raw: Raw = toml::from_str(text).map_err(|e| toml_error(text, name, &e))?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, name, &e))?;
    let mut overridden = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("ORINARI_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        for (section, keys) in OVERRIDABLE {
            let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) else {
                continue;
            };
            if !keys.contains(&key) {
                continue;
            }
            let parsed = env_value(&var, section, key, &value)?;
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(t) = entry.as_table_mut() else {
                return Err(ConfigError(format!("{name}: `{section}` must be a table")));
            };
            t.insert(key.to_string(), parsed);
            overridden.push(format!("{section}.{key}"));
        }
    }
    if overridden.is_empty() {
        return Ok((raw, overridden));
    }
    Raw::deserialize(toml::Value::Table(table))
        .map(|raw| (raw, overridden))
        .map_err(|e| ConfigError(format!("environment override: {}", e.message().trim_end())))
}

/// The value of one override, checked on its own so that a bad value names
/// its variable and key. `8080` is tried as an integer and `true` as a bool
/// first, then as a string (so `ORINARI_SERVER_REGION=2` is the string "2").
fn env_value(var: &str, section: &str, key: &str, value: &str) -> Result<toml::Value, ConfigError> {
    let check = |v: &toml::Value| {
        let mut inner = toml::Table::new();
        inner.insert(key.to_string(), v.clone());
        let mut outer = toml::Table::new();
        outer.insert(section.to_string(), toml::Value::Table(inner));
        Raw::deserialize(toml::Value::Table(outer)).map(|_| ())
    };
    let parsed = parse_env_value(value);
    let first = match check(&parsed) {
        Ok(()) => return Ok(parsed),
        Err(e) => e,
    };
    let as_string = toml::Value::String(value.to_string());
    if !parsed.is_str() && check(&as_string).is_ok() {
        return Ok(as_string);
    }
    Err(ConfigError(format!(
        "environment variable {var} (`{section}.{key}`): {}",
        first.message().trim_end()
    )))
}

/// `8080` → integer, `true` → bool, anything else → string.
fn parse_env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_string()),
    }
}
