//! What a configuration reload (SIGHUP, `POST /admin/v1/reload`) may apply
//! while serving, and what needs a restart.
//!
//! Applied at once: upstream models and their backends (`[[models]]` with
//! `[[models.backends]]`), `[limits]` rates and queues, `[auth]`,
//! `[firewall]`, `[guard]`, and the status page's checks, components,
//! alert rules and operator notifications (`status.checks` — the built-in
//! checks of model backends follow the backends —, `status.components`,
//! `status.connectivity_check`, `status.alerts`, `status.webhooks`,
//! `status.alert_emails`). Read at start only, each reported by its key:
//! listeners and connection settings (`server.*`), `[server.tls]` settings
//! (the certificate files themselves are reloaded), `storage.url`,
//! `cluster.redis_url`, `[backup]`, what the status page is (`page_name`,
//! `page_url`, `time_zone`, the `smtp` relay, visitors' subscriptions),
//! `limits.max_body_bytes`, `[[sources]]`, a model's response `cache`, and the embedded models (loading
//! one takes seconds and memory; a new or changed one waits for a restart).

use crate::{CheckSettings, Config, ModelConfig, StatusSettings};

/// The sections of a configuration change, by what happens to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys and sections that change now, e.g. `models.gpt-4o-mini`,
    /// `limits`, `status.checks`.
    pub applied: Vec<String>,
    /// Keys that changed but keep their current values until a restart,
    /// e.g. `server.listen`, `status.page_url`.
    pub restart_required: Vec<String>,
}

/// Compare the running configuration with the one just read. Returns what
/// changes and the configuration to run on now: `next`, with every key
/// that needs a restart kept as it is in `current` (so the next reload
/// reports it again until the process restarts).
pub fn plan(current: &Config, next: &Config) -> (Changes, Config) {
    let mut c = Changes::default();
    let mut effective = next.clone();
    // `keep!(key, field)`: a changed field that waits for a restart keeps
    // its running value and is reported by its key.
    macro_rules! keep {
        ($key:expr, $($field:tt)+) => {
            if current.$($field)+ != next.$($field)+ {
                c.restart_required.push($key.to_string());
                effective.$($field)+ = current.$($field)+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.admin_token_env", server.admin_token_env);
    keep!("server.region", server.region);
    keep!("server.shutdown_timeout_ms", server.shutdown_timeout);
    keep!("server.inference_threads", server.inference_threads);
    keep!(
        "server.max_connections",
        admission.connections.max_connections
    );
    keep!(
        "server.max_connections_per_ip",
        admission.connections.max_connections_per_ip
    );
    keep!(
        "server.header_read_timeout_ms",
        admission.connections.header_read_timeout
    );
    keep!(
        "server.body_read_timeout_ms",
        admission.connections.body_read_timeout
    );
    keep!(
        "server.max_header_bytes",
        admission.connections.max_header_bytes
    );
    keep!("server.max_headers", admission.connections.max_headers);
    keep!(
        "server.http2_max_concurrent_streams",
        admission.connections.http2_max_concurrent_streams
    );
    keep!(
        "server.trusted_proxies",
        admission.connections.trusted_proxies
    );
    keep!(
        "server.cors_allow_origins",
        admission.connections.cors_allow_origins
    );
    keep!("server.tls", tls);
    keep!("storage.url", storage_url);
    keep!("cluster.redis_url", admission.redis_url);
    keep!("backup", backup);
    keep!("limits.max_body_bytes", max_body_bytes);
    keep!("limits.queue_depth (embedded models)", queue_depth);
    // What the status page is: its identity, clock and where it sends
    // email and visitors' webhooks from.
    keep!("status.page_name", status.page_name);
    keep!("status.page_url", status.page_url);
    keep!("status.time_zone", status.time_zone);
    let relay = |cfg: &Config| cfg.status.smtp.as_ref().map(|s| s.relay.clone());
    let from = |cfg: &Config| cfg.status.smtp.as_ref().map(|s| s.from.clone());
    if relay(current) != relay(next) {
        c.restart_required.push("status.smtp".into());
    }
    if from(current) != from(next) {
        c.restart_required.push("status.smtp_from".into());
    }
    effective.status.smtp = current.status.smtp.clone();
    keep!(
        "status.webhook_subscriptions",
        status.visitor_webhooks.enabled
    );
    keep!("status.webhook_allow", status.visitor_webhooks.allow);
    keep!(
        "status.webhook_max_failures",
        status.visitor_webhooks.max_failures
    );
    // Sources are started once (files sources own indexer threads and
    // index directories): they, the retrieval budget and which models are
    // grounded change at the next restart.
    keep!("sources", sources);
    keep!("retrieval.budget_ms", retrieval_budget);
    let grounding = |config: &Config, name: &str| {
        config
            .models
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.sources.clone())
            .unwrap_or_default()
    };
    for m in &next.models {
        if m.sources != grounding(current, &m.name) {
            c.restart_required
                .push(format!("models.{}.sources", m.name));
        }
    }
    // The response cache's stores are built at start (an in-memory one
    // per model, or the Redis client): a model's `cache` changes at the
    // next restart too.
    let caching = |config: &Config, name: &str| {
        config
            .models
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.cache)
    };
    for m in &next.models {
        if m.cache != caching(current, &m.name) {
            c.restart_required.push(format!("models.{}.cache", m.name));
        }
    }
    effective.models = models(current, next, &mut c);
    for m in &mut effective.models {
        m.sources = grounding(current, &m.name);
        m.cache = caching(current, &m.name);
    }
    // The built-in Redis check follows `cluster.redis_url`, which waits.
    if effective.admission.redis_url != next.admission.redis_url {
        keep_redis_check(&mut effective.status, &current.status);
    }
    let mut apply = |name: &str, changed: bool| {
        if changed {
            c.applied.push(name.to_string());
        }
    };
    apply("limits", current.admission.limits != next.admission.limits);
    apply(
        "auth",
        current.admission.auth_required != next.admission.auth_required,
    );
    apply(
        "firewall",
        current.admission.firewall != next.admission.firewall,
    );
    apply(
        "guard",
        current.prompt_injection != next.prompt_injection
            || current.max_input_chars != next.max_input_chars,
    );
    let (s, e) = (&current.status, &effective.status);
    let (own, backends) = split_checks(&s.checks);
    let (next_own, next_backends) = split_checks(&e.checks);
    apply("status.components", s.components != e.components);
    apply("status.checks", own != next_own);
    apply("status.checks (model backends)", backends != next_backends);
    apply(
        "status.connectivity_check",
        s.connectivity_check != e.connectivity_check,
    );
    apply("status.alerts", s.alerts != e.alerts);
    apply("status.webhooks", s.webhooks != e.webhooks);
    apply("status.alert_emails", s.alert_emails != e.alert_emails);
    (c, effective)
}

/// Whether a reload with these changes touches the status service.
pub fn touches_status(c: &Changes) -> bool {
    c.applied.iter().any(|k| k.starts_with("status."))
}

/// Whether a reload with these changes touches the request path (models,
/// limits, auth, firewall, guard).
pub fn touches_gateway(c: &Changes) -> bool {
    c.applied.iter().any(|k| !k.starts_with("status."))
}

/// The checks of `s` (`[[status.checks]]` and the built-in ones) and, apart,
/// the built-in checks of model backends.
fn split_checks(checks: &[CheckSettings]) -> (Vec<&CheckSettings>, Vec<&CheckSettings>) {
    let (backends, own) = checks.iter().partition(|c| {
        c.builtin
            && c.component
                .group
                .as_ref()
                // The groups `status.rs` gives the checks it derives from
                // backends: one, or one per region.
                .is_some_and(|(id, _)| {
                    id.strip_prefix(crate::status::BACKENDS_GROUP)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
                })
    });
    (own, backends)
}

/// `s` with the built-in Redis check as in `running`.
fn keep_redis_check(s: &mut StatusSettings, running: &StatusSettings) {
    let redis = |c: &CheckSettings| c.builtin && c.component.id == "redis";
    let at = s.checks.iter().position(redis);
    s.checks.retain(|c| !redis(c));
    if let Some(r) = running.checks.iter().find(|c| redis(c)) {
        let at = at.unwrap_or(s.checks.len()).min(s.checks.len());
        s.checks.insert(at, r.clone());
    }
}

/// The models to serve after the reload, in the new order: upstream models
/// as configured now; embedded models only as they were loaded.
fn models(current: &Config, next: &Config, c: &mut Changes) -> Vec<ModelConfig> {
    let find = |name: &str| current.models.iter().find(|m| m.name == name);
    let mut out = Vec::new();
    for m in &next.models {
        let old = find(&m.name);
        let key = format!("models.{}", m.name);
        match (old, m.upstream.is_some()) {
            (Some(o), _) if o == m => out.push(m.clone()),
            (_, true) => {
                c.applied.push(key);
                out.push(m.clone());
            }
            // An embedded model whose settings changed: served as loaded.
            (Some(o), false) if o.upstream.is_none() => {
                c.restart_required.push(key);
                out.push(o.clone());
            }
            // A new embedded model (or an upstream one turned embedded):
            // not served until a restart loads it.
            (_, false) => c.restart_required.push(key),
        }
    }
    for o in &current.models {
        if !next.models.iter().any(|m| m.name == o.name) {
            c.applied.push(format!("models.{} (removed)", o.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn config(text: &str) -> Config {
        crate::parse(text, "test.toml", std::iter::empty()).unwrap()
    }

    const POOL: &str = r#"
[[models]]
name = "local"
backend = "local"

[[models]]
name = "remote"
fallback = ["local"]
[[models.backends]]
name = "a"
provider = "openai"
base_url = "http://127.0.0.1:9001/v1"
"#;

    #[test]
    fn the_same_file_changes_nothing() {
        let c = config(POOL);
        let (changes, effective) = plan(&c, &config(POOL));
        assert_eq!(changes, Changes::default());
        assert_eq!(effective, c);
    }

    #[test]
    fn backends_limits_and_guard_apply_now() {
        let next = format!(
            "{POOL}[[models.backends]]\nname = \"b\"\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9002/v1\"\n\n[limits]\nrequests_per_minute = 5\n\n[guard]\nprompt_injection = \"flag\"\n"
        );
        let (changes, effective) = plan(&config(POOL), &config(&next));
        // The status page's built-in check of the new backend follows it.
        assert_eq!(
            changes.applied,
            [
                "models.remote",
                "limits",
                "guard",
                "status.checks (model backends)"
            ]
        );
        assert!(changes.restart_required.is_empty());
        assert_eq!(
            effective.models[1]
                .upstream
                .as_ref()
                .unwrap()
                .backends
                .len(),
            2
        );
        assert_eq!(effective.admission.limits.requests_per_minute, 5);
        assert!(
            effective
                .status
                .checks
                .iter()
                .any(|c| c.url == "tcp://127.0.0.1:9002")
        );
        assert!(touches_gateway(&changes) && touches_status(&changes));
    }

    #[test]
    fn listeners_storage_and_embedded_models_wait_for_a_restart() {
        let current = config(POOL);
        let next = config(&format!(
            "[server]\nlisten = \"127.0.0.1:9999\"\n\n[storage]\nurl = \"sqlite://other.db\"\n{}",
            POOL.replace("backend = \"local\"", "backend = \"local\"\nparallel = 2")
        ));
        let (changes, effective) = plan(&current, &next);
        // The page's default address follows `server.listen`: named too.
        assert_eq!(
            changes.restart_required,
            [
                "server.listen",
                "storage.url",
                "status.page_url",
                "models.local"
            ]
        );
        assert!(changes.applied.is_empty());
        // The running values stay, so the next reload reports them again.
        assert_eq!(effective.server, current.server);
        assert_eq!(effective.storage_url, current.storage_url);
        assert_eq!(effective.status, current.status);
        assert_eq!(effective.models[0], current.models[0]);
        let (again, _) = plan(&effective, &next);
        assert_eq!(again.restart_required, changes.restart_required);
    }

    #[test]
    fn models_can_be_removed_but_a_new_embedded_one_waits() {
        let current = config(POOL);
        let next = config(
            "[[models]]\nname = \"local\"\nbackend = \"local\"\n\n[[models]]\nname = \"other\"\nbackend = \"local\"\n",
        );
        let (changes, effective) = plan(&current, &next);
        assert_eq!(
            changes.applied,
            ["models.remote (removed)", "status.checks (model backends)"]
        );
        assert_eq!(changes.restart_required, ["models.other"]);
        let names: Vec<_> = effective.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["local"]);
        assert!(
            effective
                .status
                .checks
                .iter()
                .all(|c| !c.url.contains("9001"))
        );
    }

    const STATUS: &str = r#"
[status]
page_name = "Acme"
time_zone = "UTC"
smtp = "127.0.0.1:2525"
smtp_from = "status@example.org"
alert_emails = ["ops@example.org"]

[[status.components]]
name = "Docs"

[[status.checks]]
name = "API"
url = "http://127.0.0.1:9100/health"

[[status.alerts]]
name = "Errors"
kind = "error_rate"
threshold = 0.1

[[status.webhooks]]
url = "http://127.0.0.1:9200/hook"
"#;

    #[test]
    fn status_checks_alerts_and_webhooks_apply_now() {
        let current = config(&format!("{POOL}{STATUS}"));
        let changed = STATUS
            .replace("Docs", "Handbook")
            .replace("9100/health", "9101/health")
            .replace("threshold = 0.1", "threshold = 0.2")
            .replace("9200/hook", "9201/hook")
            .replace("ops@", "oncall@")
            .replace(
                "[[status.components]]",
                "connectivity_check = \"tcp://127.0.0.1:53\"\n\n[[status.components]]",
            );
        let next = config(&format!("{POOL}{changed}"));
        let (changes, effective) = plan(&current, &next);
        assert_eq!(
            changes.applied,
            [
                "status.components",
                "status.checks",
                "status.connectivity_check",
                "status.alerts",
                "status.webhooks",
                "status.alert_emails"
            ]
        );
        assert!(changes.restart_required.is_empty(), "{changes:?}");
        assert_eq!(effective.status, next.status);
        assert!(touches_status(&changes) && !touches_gateway(&changes));
    }

    #[test]
    fn what_the_status_page_is_waits_for_a_restart_each_key_named() {
        let current = config(&format!("{POOL}{STATUS}"));
        let changed = STATUS
            .replace("\"Acme\"", "\"Acme Inc\"")
            .replace("\"UTC\"", "\"Europe/Paris\"")
            .replace("2525", "2526")
            .replace("status@", "noreply@")
            .replace(
                "[[status.components]]",
                "page_url = \"https://status.example.org\"\nwebhook_allow = [\"127.0.0.1\"]\nwebhook_max_failures = 3\nwebhook_subscriptions = false\n\n[[status.components]]",
            )
            .replace("9100/health", "9101/health");
        let next = config(&format!("{POOL}{changed}"));
        let (changes, effective) = plan(&current, &next);
        assert_eq!(
            changes.restart_required,
            [
                "status.page_name",
                "status.page_url",
                "status.time_zone",
                "status.smtp",
                "status.smtp_from",
                "status.webhook_subscriptions",
                "status.webhook_allow",
                "status.webhook_max_failures"
            ]
        );
        // The checks still apply; the rest of `[status]` runs as it was.
        assert_eq!(changes.applied, ["status.checks"]);
        assert_eq!(effective.status.checks, next.status.checks);
        let kept = StatusSettings {
            checks: current.status.checks.clone(),
            ..effective.status.clone()
        };
        assert_eq!(kept, current.status);
        let (again, _) = plan(&effective, &next);
        assert_eq!(again.restart_required, changes.restart_required);
        assert!(again.applied.is_empty(), "{again:?}");
    }

    #[test]
    fn the_redis_check_follows_cluster_redis_url_at_restart() {
        let current = config(&format!(
            "[cluster]\nredis_url = \"redis://10.0.0.1\"\n{POOL}"
        ));
        let next = config(&format!(
            "[cluster]\nredis_url = \"redis://10.0.0.2\"\n{POOL}"
        ));
        let (changes, effective) = plan(&current, &next);
        assert_eq!(changes.restart_required, ["cluster.redis_url"]);
        assert!(changes.applied.is_empty(), "{changes:?}");
        assert_eq!(effective.status, current.status);
        assert!(
            effective
                .status
                .checks
                .iter()
                .any(|c| c.url == "tcp://10.0.0.1:6379")
        );
    }
}
