//! Admission settings, validated: rate limits and the queue (`[limits]`),
//! shared state (`[cluster]`), connection protection (`[server]`) and the
//! IP firewall (`[firewall]`).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::ConfigError;
use crate::raw::{Raw, RawIpRule, defaults as d};
use crate::validate::{err, positive};

/// Everything the edge needs to admit, limit or refuse a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// `[auth] required`, resolved against the listener.
    pub auth_required: bool,
    /// `[cluster] redis_url`: limits shared by every instance when set.
    pub redis_url: Option<String>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// Connection-level protection.
    pub connections: ConnectionConfig,
    /// IP allow and deny lists.
    pub firewall: FirewallConfig,
}

/// `[limits]`: defaults for every API key (a key may set its own) and for
/// clients without a key (per client IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Requests per minute.
    pub requests_per_minute: u32,
    /// Tokens per minute.
    pub tokens_per_minute: u32,
    /// Requests of one key running at once.
    pub max_concurrent_per_key: usize,
    /// Answers generated at once per model.
    pub max_concurrent_per_model: usize,
    /// Requests waiting for a slot (per model) before 503.
    pub queue_depth: usize,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// Tokens reserved for the answer when a request sets no `max_tokens`.
    pub default_completion_estimate: u32,
}

/// Connection-level protection (listener settings and edge layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Open connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections per client IP; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A request head must arrive within this (also the HTTP/1 keep-alive
    /// idle timeout: an idle connection is waiting for its next head).
    pub header_read_timeout: Duration,
    /// A request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Proxies whose `X-Forwarded-For` is believed for the client IP.
    pub trusted_proxies: Vec<IpNet>,
    /// Browser origins allowed to call `/v1/*` cross-origin (CORS); none by default.
    pub cors_allow_origins: Vec<String>,
}

/// A route group's allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRule {
    /// When non-empty, only these may connect.
    pub allow: Vec<IpNet>,
    /// Never these.
    pub deny: Vec<IpNet>,
}

impl IpRule {
    /// Whether `ip` may use routes under this rule.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `[firewall]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallConfig {
    /// `/v1/*`.
    pub api: IpRule,
    /// `/admin/*` (loopback only by default).
    pub admin: IpRule,
    /// The chat and status pages and their assets.
    pub pages: IpRule,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub ops: IpRule,
}

impl Default for AdmissionConfig {
    /// The documented defaults for a loopback-only instance.
    fn default() -> Self {
        let admin = d::ADMIN_ALLOW
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .collect();
        Self {
            auth_required: false,
            redis_url: None,
            limits: LimitsConfig {
                requests_per_minute: d::REQUESTS_PER_MINUTE,
                tokens_per_minute: d::TOKENS_PER_MINUTE,
                max_concurrent_per_key: d::MAX_CONCURRENT_PER_KEY as usize,
                max_concurrent_per_model: d::MAX_CONCURRENT_PER_MODEL as usize,
                queue_depth: d::QUEUE_DEPTH as usize,
                queue_timeout: Duration::from_millis(d::QUEUE_TIMEOUT_MS),
                default_completion_estimate: d::DEFAULT_COMPLETION_ESTIMATE,
            },
            connections: ConnectionConfig {
                max_connections: d::MAX_CONNECTIONS as usize,
                max_connections_per_ip: d::MAX_CONNECTIONS_PER_IP as usize,
                header_read_timeout: Duration::from_millis(d::HEADER_READ_TIMEOUT_MS),
                body_read_timeout: Duration::from_millis(d::BODY_READ_TIMEOUT_MS),
                max_header_bytes: d::MAX_HEADER_BYTES as usize,
                max_headers: d::MAX_HEADERS as usize,
                http2_max_concurrent_streams: d::HTTP2_MAX_CONCURRENT_STREAMS,
                trusted_proxies: Vec::new(),
                cors_allow_origins: Vec::new(),
            },
            firewall: FirewallConfig {
                admin: IpRule {
                    allow: admin,
                    deny: Vec::new(),
                },
                ..FirewallConfig::default()
            },
        }
    }
}

fn nets(name: &str, key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    err(
                        name,
                        &format!("{key}[{i}]"),
                        format!("`{s}` is not an IP address or CIDR like 10.0.0.0/8"),
                    )
                })
        })
        .collect()
}

/// `scheme://host[:port]`, exactly as browsers send `Origin` (no path, no
/// trailing slash, no wildcard).
fn origins(name: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let key = format!("server.cors_allow_origins[{i}]");
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(|| err(name, &key, format!("`{o}` must start with https:// or http://")))?;
            if rest.is_empty()
                || rest.contains(['/', '*', ' ', '?', '#'])
                || !rest.is_ascii()
            {
                return Err(err(
                    name,
                    &key,
                    format!("`{o}` must be an origin like https://app.example.org (no path, no wildcard)"),
                ));
            }
            Ok(o.to_ascii_lowercase())
        })
        .collect()
}

fn rule(
    name: &str,
    group: &str,
    raw: Option<&RawIpRule>,
    global_deny: &[IpNet],
    default_allow: &[&str],
) -> Result<IpRule, ConfigError> {
    let allow = match raw.and_then(|r| r.allow.as_ref()) {
        Some(list) => nets(name, &format!("firewall.{group}.allow"), list)?,
        None => nets(
            name,
            &format!("firewall.{group}.allow"),
            &default_allow
                .iter()
                .map(|s| (*s).to_string())
                .collect::<Vec<_>>(),
        )?,
    };
    let mut deny = match raw.and_then(|r| r.deny.as_ref()) {
        Some(list) => nets(name, &format!("firewall.{group}.deny"), list)?,
        None => Vec::new(),
    };
    deny.extend_from_slice(global_deny);
    Ok(IpRule { allow, deny })
}

/// Validate the admission settings; `loopback_only` says whether every
/// listener is on a loopback address (the default for `[auth] required`).
pub fn validate(
    raw: &Raw,
    name: &str,
    loopback_only: bool,
) -> Result<AdmissionConfig, ConfigError> {
    let l = &raw.limits;
    let ms = |key: &str, v: Option<u64>, default: u64| {
        positive(name, key, v, default).map(Duration::from_millis)
    };
    let limits = LimitsConfig {
        requests_per_minute: positive(
            name,
            "limits.requests_per_minute",
            l.requests_per_minute,
            d::REQUESTS_PER_MINUTE,
        )?,
        tokens_per_minute: positive(
            name,
            "limits.tokens_per_minute",
            l.tokens_per_minute,
            d::TOKENS_PER_MINUTE,
        )?,
        max_concurrent_per_key: positive(
            name,
            "limits.max_concurrent_per_key",
            l.max_concurrent_per_key,
            d::MAX_CONCURRENT_PER_KEY,
        )? as usize,
        max_concurrent_per_model: positive(
            name,
            "limits.max_concurrent_per_model",
            l.max_concurrent_per_model,
            d::MAX_CONCURRENT_PER_MODEL,
        )? as usize,
        queue_depth: positive(name, "limits.queue_depth", l.queue_depth, d::QUEUE_DEPTH)? as usize,
        queue_timeout: ms(
            "limits.queue_timeout_ms",
            l.queue_timeout_ms,
            d::QUEUE_TIMEOUT_MS,
        )?,
        default_completion_estimate: positive(
            name,
            "limits.default_completion_estimate",
            l.default_completion_estimate,
            d::DEFAULT_COMPLETION_ESTIMATE,
        )?,
    };
    let s = &raw.server;
    let connections = ConnectionConfig {
        max_connections: positive(
            name,
            "server.max_connections",
            s.max_connections,
            d::MAX_CONNECTIONS,
        )? as usize,
        max_connections_per_ip: positive(
            name,
            "server.max_connections_per_ip",
            s.max_connections_per_ip,
            d::MAX_CONNECTIONS_PER_IP,
        )? as usize,
        header_read_timeout: ms(
            "server.header_read_timeout_ms",
            s.header_read_timeout_ms,
            d::HEADER_READ_TIMEOUT_MS,
        )?,
        body_read_timeout: ms(
            "server.body_read_timeout_ms",
            s.body_read_timeout_ms,
            d::BODY_READ_TIMEOUT_MS,
        )?,
        max_header_bytes: {
            let v = positive(
                name,
                "server.max_header_bytes",
                s.max_header_bytes,
                d::MAX_HEADER_BYTES,
            )?;
            if v < 1024 {
                return Err(err(
                    name,
                    "server.max_header_bytes",
                    "must be at least 1024",
                ));
            }
            v as usize
        },
        max_headers: positive(name, "server.max_headers", s.max_headers, d::MAX_HEADERS)? as usize,
        http2_max_concurrent_streams: positive(
            name,
            "server.http2_max_concurrent_streams",
            s.http2_max_concurrent_streams,
            d::HTTP2_MAX_CONCURRENT_STREAMS,
        )?,
        trusted_proxies: nets(
            name,
            "server.trusted_proxies",
            s.trusted_proxies.as_deref().unwrap_or_default(),
        )?,
        cors_allow_origins: origins(name, s.cors_allow_origins.as_deref().unwrap_or_default())?,
    };
    let f = &raw.firewall;
    let global_deny = nets(name, "firewall.deny", f.deny.as_deref().unwrap_or_default())?;
    let firewall = FirewallConfig {
        api: rule(name, "api", f.api.as_ref(), &global_deny, &[])?,
        admin: rule(
            name,
            "admin",
            f.admin.as_ref(),
            &global_deny,
            d::ADMIN_ALLOW,
        )?,
        pages: rule(name, "pages", f.pages.as_ref(), &global_deny, &[])?,
        ops: rule(name, "ops", f.ops.as_ref(), &global_deny, &[])?,
    };
    let redis_url = match &raw.cluster.redis_url {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(url.clone())
        }
        Some(url) => {
            return Err(err(
                name,
                "cluster.redis_url",
                format!("`{url}` must start with redis:// or rediss://"),
            ));
        }
        None => None,
    };
    Ok(AdmissionConfig {
        auth_required: raw.auth.required.unwrap_or(!loopback_only),
        redis_url,
        limits,
        connections,
        firewall,
    })
}
