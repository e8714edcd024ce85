//! `[status]`: the public status page, its components and the checks that
//! drive them. Validated here for shape; `orinari-status` resolves targets.

use std::time::Duration;

use crate::ConfigError;
use crate::raw::{RawStatus, defaults as d};
use crate::validate::err;

/// `[status]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSettings {
    /// `page_name`.
    pub page_name: String,
    /// `page_url`: the page's public address (default: from `server.listen`).
    pub page_url: String,
    /// `time_zone` (IANA name; checked against the zone database at start-up).
    pub time_zone: String,
    /// `connectivity_check`: probed before any component is declared down.
    pub connectivity_check: Option<String>,
    /// Components without checks of their own (and groups), in order.
    pub components: Vec<ComponentSettings>,
    /// Checks; each drives the component with its id.
    pub checks: Vec<CheckSettings>,
    /// Webhook subscribers (HMAC-SHA256 signed when a secret is named).
    pub webhooks: Vec<WebhookSettings>,
    /// `smtp` (`host:port` of a relay) and `smtp_from`: email notifications
    /// and visitor subscriptions, when set.
    pub smtp: Option<SmtpSettings>,
    /// `[[status.alerts]]`: rules on error rate and latency.
    pub alerts: Vec<AlertSettings>,
    /// `alert_emails`: operators emailed when an alert fires or resolves.
    pub alert_emails: Vec<String>,
    /// Visitors' webhook subscriptions (`webhook_subscriptions`,
    /// `webhook_allow`, `webhook_max_failures`).
    pub visitor_webhooks: VisitorWebhookSettings,
}

/// Visitors' webhook subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorWebhookSettings {
    /// `webhook_subscriptions`: visitors may subscribe a webhook (default true).
    pub enabled: bool,
    /// `webhook_allow`: non-public networks that webhooks may still reach
    /// (loopback, private…); default none.
    pub allow: Vec<ipnet::IpNet>,
    /// `webhook_max_failures`: consecutive undelivered notifications that
    /// disable a subscription (default 10).
    pub max_failures: u32,
}

/// Default `webhook_max_failures`.
pub const WEBHOOK_MAX_FAILURES: u32 = 10;

/// What an alert rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Fraction of requests answered with a 5xx.
    ErrorRate,
    /// 99th-percentile time to the response head, in seconds.
    LatencyP99,
}

/// One `[[status.alerts]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Stable id (a slug of the name).
    pub id: String,
    /// Name, in notifications.
    pub name: String,
    /// What it measures.
    pub kind: AlertKind,
    /// Only this matched route (e.g. `/v1/chat/completions`); all when unset.
    pub route: Option<String>,
    /// Fires above this (a fraction for error_rate, seconds for latency_p99).
    pub threshold: f64,
    /// Measured over this trailing window.
    pub window: Duration,
    /// Fewer requests in the window never fire.
    pub min_requests: u64,
}

/// `[status] smtp`, `smtp_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// The relay, `host:port`.
    pub relay: String,
    /// The sender address.
    pub from: String,
}

/// A component on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSettings {
    /// Stable id: `id`, else a slug of the name.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// The id of its group (a slug of `group`), if any.
    pub group: Option<(String, String)>,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    /// The component it drives.
    pub component: ComponentSettings,
    /// `url`: `http(s)://…`, `tcp://HOST:PORT` or `builtin:storage`.
    pub url: String,
    /// `interval`.
    pub interval: Duration,
    /// `timeout`.
    pub timeout: Duration,
    /// `expect_status`.
    pub expect_status: Option<u16>,
    /// `keyword`: the body must contain it.
    pub keyword: Option<String>,
    /// `json_path` and `json_equals`: the JSON body's value at the dotted
    /// path (array indices as numbers) must equal this.
    pub json: Option<(String, String)>,
    /// `degraded_after`: a slower pass counts as degraded performance.
    pub degraded_after: Option<Duration>,
    /// `failure_threshold`.
    pub failure_threshold: u32,
    /// `success_threshold`.
    pub success_threshold: u32,
    /// Derived by ORINARI rather than configured (`builtin_checks`: the
    /// store, each model backend, Redis).
    pub builtin: bool,
}

/// A webhook subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where notifications are POSTed.
    pub url: String,
    /// The environment variable holding the signing secret.
    pub secret_env: Option<String>,
}

/// A stable id from a name: lowercase letters and digits, `-` between words.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn id_of(name: &str, key: &str, id: Option<&str>, display: &str) -> Result<String, ConfigError> {
    let id = id.map_or_else(|| slug(display), str::to_string);
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            name,
            key,
            format!("`{id}` must be letters, digits, - or _ (set `id` when the name has none)"),
        ));
    }
    Ok(id)
}

fn group(name: &str, key: &str, g: Option<&str>) -> Result<Option<(String, String)>, ConfigError> {
    g.map(|g| Ok((id_of(name, key, None, g)?, g.to_string())))
        .transpose()
}

/// `HOST:PORT` of a URL with one of `schemes` (default port per scheme);
/// credentials and path are dropped.
fn host_port(url: &str, schemes: &[(&str, u16)]) -> Option<String> {
    let (rest, port) = schemes
        .iter()
        .find_map(|(s, p)| url.strip_prefix(s).map(|r| (r, *p)))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    if host.is_empty() {
        return None;
    }
    let has_port = if host.starts_with('[') {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    Some(if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    })
}

/// An upstream model backend, for its built-in status check.
pub(crate) struct BackendTarget<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub base_url: &'a str,
    /// Its `region`: the page groups backends by region when they have one.
    pub region: Option<&'a str>,
}

/// The group id of built-in backend checks (`model-backends`, or
/// `model-backends-REGION` for a backend with a region).
pub(crate) const BACKENDS_GROUP: &str = "model-backends";

/// `[status]` → [`StatusSettings`]. `duration` is the config's parser;
/// `backends` and `redis_url` get built-in checks.
pub(crate) fn validate(
    raw: RawStatus,
    name: &str,
    listen: std::net::SocketAddr,
    duration: impl Fn(&str, &str, &str) -> Result<Duration, ConfigError>,
    backends: &[BackendTarget<'_>],
    redis_url: Option<&str>,
) -> Result<StatusSettings, ConfigError> {
    let mut ids = std::collections::HashSet::new();
    let mut components = Vec::new();
    for (i, c) in raw.components.into_iter().enumerate() {
        let key = |k: &str| format!("status.components[{i}].{k}");
        if c.name.trim().is_empty() {
            return Err(err(name, &key("name"), "must not be empty"));
        }
        let id = id_of(name, &key("id"), c.id.as_deref(), &c.name)?;
        if !ids.insert(id.clone()) {
            return Err(err(name, &key("id"), format!("`{id}` is used twice")));
        }
        components.push(ComponentSettings {
            id,
            name: c.name,
            description: c.description,
            group: group(name, &key("group"), c.group.as_deref())?,
        });
    }
    let mut checks = Vec::new();
    for (i, c) in raw.checks.into_iter().enumerate() {
        let key = |k: &str| format!("status.checks[{i}].{k}");
        if c.name.trim().is_empty() {
            return Err(err(name, &key("name"), "must not be empty"));
        }
        let id = id_of(name, &key("id"), c.id.as_deref(), &c.name)?;
        if !ids.insert(id.clone()) {
            return Err(err(name, &key("id"), format!("`{id}` is used twice")));
        }
        let scheme_ok = c.url.starts_with("http://")
            || c.url.starts_with("https://")
            || c.url.starts_with("tcp://")
            || c.url.starts_with("tls://")
            || c.url == "builtin:storage";
        if !scheme_ok {
            return Err(err(
                name,
                &key("url"),
                "must be an http:// or https:// URL, tcp://HOST:PORT, tls://HOST:PORT, or builtin:storage",
            ));
        }
        let interval = duration(
            name,
            &key("interval"),
            c.interval.as_deref().unwrap_or(d::CHECK_INTERVAL),
        )?;
        let timeout = duration(
            name,
            &key("timeout"),
            c.timeout.as_deref().unwrap_or(d::CHECK_TIMEOUT),
        )?;
        if timeout > interval {
            return Err(err(
                name,
                &key("timeout"),
                "must not be longer than the interval",
            ));
        }
        if let Some(s) = c.expect_status
            && !(100..=599).contains(&s)
        {
            return Err(err(
                name,
                &key("expect_status"),
                format!("{s} is not an HTTP status"),
            ));
        }
        let json = match (c.json_path, c.json_equals) {
            (None, None) => None,
            (Some(p), Some(v)) if !p.is_empty() => {
                if !c.url.starts_with("http") {
                    return Err(err(
                        name,
                        &key("json_path"),
                        "applies to http(s) checks only",
                    ));
                }
                Some((p, v))
            }
            (Some(_), Some(_)) => return Err(err(name, &key("json_path"), "must not be empty")),
            (Some(_), None) => {
                return Err(err(name, &key("json_equals"), "is required with json_path"));
            }
            (None, Some(_)) => {
                return Err(err(name, &key("json_path"), "is required with json_equals"));
            }
        };
        let degraded_after = c
            .degraded_after
            .as_deref()
            .map(|s| duration(name, &key("degraded_after"), s))
            .transpose()?;
        let positive = |k: &str, v: Option<u32>, dflt: u32| {
            let v = v.unwrap_or(dflt);
            if v == 0 {
                return Err(err(name, &key(k), "must be at least 1"));
            }
            Ok(v)
        };
        checks.push(CheckSettings {
            failure_threshold: positive(
                "failure_threshold",
                c.failure_threshold,
                d::CHECK_FAILURE_THRESHOLD,
            )?,
            success_threshold: positive(
                "success_threshold",
                c.success_threshold,
                d::CHECK_SUCCESS_THRESHOLD,
            )?,
            component: ComponentSettings {
                id,
                name: c.name,
                description: c.description,
                group: group(name, &key("group"), c.group.as_deref())?,
            },
            url: c.url,
            interval,
            timeout,
            expect_status: c.expect_status,
            keyword: c.keyword,
            json,
            degraded_after,
            builtin: false,
        });
    }
    let builtin = raw.builtin_checks.unwrap_or(d::STATUS_BUILTIN_CHECKS);
    if builtin && !ids.contains("storage") {
        checks.push(CheckSettings {
            component: ComponentSettings {
                id: "storage".into(),
                name: "Storage".into(),
                description: Some("The database behind the service".into()),
                group: None,
            },
            url: "builtin:storage".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            expect_status: None,
            keyword: None,
            json: None,
            degraded_after: Some(Duration::from_secs(1)),
            failure_threshold: d::CHECK_FAILURE_THRESHOLD,
            success_threshold: d::CHECK_SUCCESS_THRESHOLD,
            builtin: true,
        });
    }
    if builtin {
        let mut builtin_check =
            |id: String, name: String, group: Option<(String, String)>, url: String| {
                if ids.insert(id.clone()) {
                    checks.push(CheckSettings {
                        component: ComponentSettings {
                            id,
                            name,
                            description: None,
                            group,
                        },
                        url,
                        interval: Duration::from_secs(30),
                        timeout: Duration::from_secs(5),
                        expect_status: None,
                        keyword: None,
                        json: None,
                        degraded_after: None,
                        failure_threshold: d::CHECK_FAILURE_THRESHOLD,
                        success_threshold: d::CHECK_SUCCESS_THRESHOLD,
                        builtin: true,
                    });
                }
            };
        for b in backends {
            if let Some(addr) = host_port(b.base_url, &[("http://", 80), ("https://", 443)]) {
                let group = match b.region {
                    Some(r) => (
                        format!("{BACKENDS_GROUP}-{}", slug(r)),
                        format!("Model backends · {r}"),
                    ),
                    None => (BACKENDS_GROUP.into(), "Model backends".into()),
                };
                builtin_check(
                    slug(&format!("backend {} {}", b.model, b.backend)),
                    format!("{} · {}", b.model, b.backend),
                    Some(group),
                    format!("tcp://{addr}"),
                );
            }
        }
        if let Some(addr) =
            redis_url.and_then(|u| host_port(u, &[("redis://", 6379), ("rediss://", 6379)]))
        {
            builtin_check(
                "redis".into(),
                "Redis".into(),
                None,
                format!("tcp://{addr}"),
            );
        }
    }
    if let Some(c) = &raw.connectivity_check
        && !(c.starts_with("http://") || c.starts_with("https://") || c.starts_with("tcp://"))
    {
        return Err(err(
            name,
            "status.connectivity_check",
            "must be an http:// or https:// URL or tcp://HOST:PORT",
        ));
    }
    let mut webhooks = Vec::new();
    for (i, w) in raw.webhooks.into_iter().enumerate() {
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            return Err(err(
                name,
                &format!("status.webhooks[{i}].url"),
                "must be an http:// or https:// URL",
            ));
        }
        webhooks.push(WebhookSettings {
            url: w.url,
            secret_env: w.secret_env,
        });
    }
    let page_url = raw
        .page_url
        .unwrap_or_else(|| format!("http://{listen}/status"));
    if !(page_url.starts_with("http://") || page_url.starts_with("https://")) {
        return Err(err(
            name,
            "status.page_url",
            "must be an http:// or https:// URL",
        ));
    }
    let smtp = match (raw.smtp, raw.smtp_from) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                name,
                "status.smtp_from",
                "is required with status.smtp",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                name,
                "status.smtp",
                "is required with status.smtp_from (host:port of a relay)",
            ));
        }
        (Some(relay), Some(from)) => {
            let port_ok = relay
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(err(
                    name,
                    "status.smtp",
                    format!("`{relay}` must be HOST:PORT of an SMTP relay"),
                ));
            }
            if from.split('@').count() != 2 || from.contains(char::is_whitespace) {
                return Err(err(
                    name,
                    "status.smtp_from",
                    format!("`{from}` is not an email address"),
                ));
            }
            Some(SmtpSettings { relay, from })
        }
    };
    let mut alerts = Vec::new();
    for (i, a) in raw.alerts.into_iter().enumerate() {
        let key = |k: &str| format!("status.alerts[{i}].{k}");
        let id = id_of(name, &key("name"), None, &a.name)?;
        let kind = match a.kind.as_str() {
            "error_rate" => AlertKind::ErrorRate,
            "latency_p99" => AlertKind::LatencyP99,
            other => {
                return Err(err(
                    name,
                    &key("kind"),
                    format!("`{other}` must be error_rate or latency_p99"),
                ));
            }
        };
        let valid = a.threshold.is_finite()
            && a.threshold > 0.0
            && (kind != AlertKind::ErrorRate || a.threshold < 1.0);
        if !valid {
            return Err(err(
                name,
                &key("threshold"),
                "must be a fraction between 0 and 1 for error_rate, or seconds above 0 for latency_p99",
            ));
        }
        alerts.push(AlertSettings {
            id,
            name: a.name,
            kind,
            route: a.route,
            threshold: a.threshold,
            window: duration(name, &key("window"), a.window.as_deref().unwrap_or("5m"))?,
            min_requests: a.min_requests.unwrap_or(20),
        });
    }
    for (i, e) in raw.alert_emails.iter().enumerate() {
        if e.split('@').count() != 2 || e.contains(char::is_whitespace) {
            return Err(err(
                name,
                &format!("status.alert_emails[{i}]"),
                format!("`{e}` is not an email address"),
            ));
        }
    }
    if !raw.alert_emails.is_empty() && smtp.is_none() {
        return Err(err(
            name,
            "status.alert_emails",
            "needs status.smtp and status.smtp_from",
        ));
    }
    let mut allow = Vec::new();
    for (i, a) in raw.webhook_allow.unwrap_or_default().iter().enumerate() {
        let net = a
            .parse::<ipnet::IpNet>()
            .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                err(
                    name,
                    &format!("status.webhook_allow[{i}]"),
                    format!("`{a}` must be an IP address or a network like 10.0.0.0/8 or fd00::/8"),
                )
            })?;
        allow.push(net.trunc());
    }
    let max_failures = raw.webhook_max_failures.unwrap_or(WEBHOOK_MAX_FAILURES);
    if max_failures == 0 {
        return Err(err(
            name,
            "status.webhook_max_failures",
            "must be at least 1",
        ));
    }
    let visitor_webhooks = VisitorWebhookSettings {
        enabled: raw.webhook_subscriptions.unwrap_or(true),
        allow,
        max_failures,
    };
    let page_name = raw.page_name.unwrap_or_else(|| d::STATUS_PAGE_NAME.into());
    if page_name.trim().is_empty() {
        return Err(err(name, "status.page_name", "must not be empty"));
    }
    Ok(StatusSettings {
        page_name,
        page_url,
        time_zone: raw.time_zone.unwrap_or_else(|| d::STATUS_TIME_ZONE.into()),
        connectivity_check: raw.connectivity_check,
        components,
        checks,
        webhooks,
        smtp,
        alerts,
        alert_emails: raw.alert_emails,
        visitor_webhooks,
    })
}
