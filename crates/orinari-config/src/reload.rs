//! What a configuration reload (SIGHUP, `POST /admin/v1/reload`) may apply
//! while serving, and what needs a restart.
//!
//! Applied at once: upstream models and their backends (`[[models]]` with
//! `[[models.backends]]`), `[limits]` rates and queues, `[auth]`,
//! `[firewall]`, `[guard]`. Read at start only: listeners and connection
//! settings, `[server.tls]` settings (the certificate files themselves are
//! reloaded), `[storage]`, `[cluster]`, `[backup]`, `[status]`,
//! `[limits] max_body_bytes`, and the embedded models (loading one takes
//! seconds and memory; a new or changed one waits for a restart).

use crate::{CheckSettings, Config, ModelConfig, StatusSettings};

/// The sections of a configuration change, by what happens to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Sections that change now, e.g. `models.gpt-4o-mini`, `limits`.
    pub applied: Vec<String>,
    /// Sections that changed but keep their current values until a restart.
    pub restart_required: Vec<String>,
}

/// Compare the running configuration with the one just read. Returns what
/// changes and the configuration to run on now: `next`, with every section
/// that needs a restart kept as it is in `current` (so the next reload
/// reports it again until the process restarts).
pub fn plan(current: &Config, next: &Config) -> (Changes, Config) {
    let mut c = Changes::default();
    let mut effective = next.clone();
    let mut restart = |name: &str, changed: bool| {
        if changed {
            c.restart_required.push(name.to_string());
        }
        changed
    };
    if restart("server", current.server != next.server) {
        effective.server = current.server.clone();
    }
    if restart("server.tls", current.tls != next.tls) {
        effective.tls = current.tls.clone();
    }
    if restart(
        "server (connection settings)",
        current.admission.connections != next.admission.connections,
    ) {
        effective.admission.connections = current.admission.connections.clone();
    }
    if restart("storage", current.storage_url != next.storage_url) {
        effective.storage_url = current.storage_url.clone();
    }
    if restart(
        "cluster",
        current.admission.redis_url != next.admission.redis_url,
    ) {
        effective.admission.redis_url = current.admission.redis_url.clone();
    }
    if restart("backup", current.backup != next.backup) {
        effective.backup = current.backup.clone();
    }
    // Built-in checks follow the model backends; they are reported on their
    // own, so a backend change does not read as a change of `[status]`.
    let (own, backends) = split_checks(&current.status);
    let (next_own, next_backends) = split_checks(&next.status);
    restart("status", own != next_own);
    restart("status (model backend checks)", backends != next_backends);
    effective.status = current.status.clone();
    if restart(
        "limits.max_body_bytes",
        current.max_body_bytes != next.max_body_bytes,
    ) {
        effective.max_body_bytes = current.max_body_bytes;
    }
    if restart(
        "limits.queue_depth (embedded models)",
        current.queue_depth != next.queue_depth,
    ) {
        effective.queue_depth = current.queue_depth;
    }
    // Sources are started once (files sources own indexer threads and
    // index directories): they, the retrieval budget and which models are
    // grounded change at the next restart.
    if restart(
        "sources",
        current.sources != next.sources || current.retrieval_budget != next.retrieval_budget,
    ) {
        effective.sources = current.sources.clone();
        effective.retrieval_budget = current.retrieval_budget;
    }
    let grounding = |config: &Config, name: &str| {
        config
            .models
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.sources.clone())
            .unwrap_or_default()
    };
    restart(
        "models.sources",
        next.models
            .iter()
            .any(|m| m.sources != grounding(current, &m.name)),
    );
    effective.models = models(current, next, &mut c);
    for m in &mut effective.models {
        m.sources = grounding(current, &m.name);
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
    (c, effective)
}

/// `[status]` without its built-in model backend checks, and those checks.
fn split_checks(s: &StatusSettings) -> (StatusSettings, Vec<CheckSettings>) {
    let (backends, own) = s.checks.iter().cloned().partition(|c| {
        c.component
            .group
            .as_ref()
            // The group `status.rs` gives the checks it derives from backends.
            .is_some_and(|(id, _)| id == "model-backends")
    });
    (
        StatusSettings {
            checks: own,
            ..s.clone()
        },
        backends,
    )
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
        assert_eq!(changes.applied, ["models.remote", "limits", "guard"]);
        // The status page's built-in check for the new backend waits.
        assert_eq!(changes.restart_required, ["status (model backend checks)"]);
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
    }

    #[test]
    fn listeners_storage_and_embedded_models_wait_for_a_restart() {
        let current = config(POOL);
        let next = config(&format!(
            "[server]\nlisten = \"127.0.0.1:9999\"\n\n[storage]\nurl = \"sqlite://other.db\"\n{}",
            POOL.replace("backend = \"local\"", "backend = \"local\"\nparallel = 2")
        ));
        let (changes, effective) = plan(&current, &next);
        // The page's default address follows `server.listen`: `status` too.
        assert_eq!(
            changes.restart_required,
            ["server", "storage", "status", "models.local"]
        );
        assert!(changes.applied.is_empty());
        // The running values stay, so the next reload reports them again.
        assert_eq!(effective.server, current.server);
        assert_eq!(effective.storage_url, current.storage_url);
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
        assert_eq!(changes.applied, ["models.remote (removed)"]);
        assert_eq!(
            changes.restart_required,
            ["status (model backend checks)", "models.other"]
        );
        let names: Vec<_> = effective.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["local"]);
    }
}
