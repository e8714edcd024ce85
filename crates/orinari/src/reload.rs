//! Configuration reload (SIGHUP, `POST /admin/v1/reload`): read the file
//! again, validate it whole, and apply what can change while serving —
//! upstream models and backends, limits, auth, firewall, guard, and the
//! status page's checks, components, alert rules and operator webhooks —
//! all or nothing. Requests already running finish on what they started
//! with; unchanged models keep their pools (health, circuit state,
//! rollouts) and unchanged checks their probe loops. What needs a restart
//! is reported by key and keeps its running value
//! (`orinari_config::reload::plan`).
//!
//! The order makes it atomic: every step that can fail (the guard's
//! screening, the backends' secrets and clients, the status checks'
//! targets, then the status components' definitions in the store) runs
//! before anything serving is replaced; the swaps after it cannot fail.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use orinari_config::Config;
use orinari_server::{AppState, Reload, ReloadReport};

/// Reloads the configuration the server was started with.
pub struct Reloader {
    path: Option<PathBuf>,
    /// The configuration running now; the lock also makes reloads one at a time.
    current: tokio::sync::Mutex<Config>,
}

impl Reloader {
    /// A reloader for the configuration read from `path` (`None`: the
    /// embedded defaults plus environment overrides).
    pub fn new(path: Option<PathBuf>, current: Config) -> Self {
        Self {
            path,
            current: tokio::sync::Mutex::new(current),
        }
    }

    /// The configuration error (`file:line:col: why`) with the file's name
    /// in place of its path (responses never carry paths); the full text
    /// goes to the log.
    fn refused(&self, e: &orinari_config::ConfigError) -> String {
        tracing::warn!(error = %e, "configuration not reloaded; the running one stays");
        match &self.path {
            Some(p) => {
                let name = p
                    .file_name()
                    .map_or_else(|| "config".into(), |n| n.to_string_lossy());
                e.0.replace(&p.display().to_string(), &name)
            }
            None => e.0.clone(),
        }
    }

    async fn apply(&self, state: &AppState) -> Result<ReloadReport, String> {
        let mut current = self.current.lock().await;
        let next = orinari_config::load(self.path.as_deref(), std::env::vars())
            .map_err(|e| self.refused(&e))?;
        let (changes, effective) = orinari_config::reload::plan(&current, &next);
        let not_reloaded = |e: String| {
            tracing::warn!(error = %e, "configuration not reloaded; the running one stays");
            e
        };
        let live = state.live();
        // 1. Everything that can fail, changing nothing.
        let gateway = if orinari_config::reload::touches_gateway(&changes) {
            let previous = live
                .gateway
                .clone()
                .ok_or_else(|| "this server has no gateway to reload".to_string())?;
            let screening = match live.chat.screening() {
                Some(_) if effective.prompt_injection != current.prompt_injection => Some(
                    orinari_chat::Screening::embedded(effective.prompt_injection)
                        .map_err(|e| not_reloaded(format!("[guard]: {e}")))?,
                ),
                s => s.cloned(),
            };
            let rebuild = crate::gateway::rebuild(&previous, &current, &effective)
                .map_err(|e| not_reloaded(format!("{e:#}")))?;
            Some((previous, rebuild, screening))
        } else {
            None
        };
        let status = match state.status() {
            Some(svc) if orinari_config::reload::touches_status(&changes) => {
                let prepared = svc
                    .prepare(&effective.status)
                    .map_err(|e| not_reloaded(format!("[status]: {e}")))?;
                Some((svc, prepared))
            }
            _ => None,
        };
        // 2. The status components' definitions (a store write: the last
        // step that can fail), then the status service's swap.
        if let Some((svc, prepared)) = status {
            svc.apply(prepared, orinari_store::now_ms())
                .await
                .map_err(|e| not_reloaded(format!("[status]: {e}")))?;
        }
        // 3. The request path, in one swap.
        if let Some((previous, rebuild, screening)) = gateway {
            let gateway = rebuild.build(&previous);
            let edge = live
                .edge()
                .next(effective.admission.clone(), &crate::model_caps(&effective));
            state.update(|l| {
                l.reconfigured(edge, screening, effective.max_input_chars)
                    .serve(gateway.clone())
            });
            previous.retire(&gateway);
        }
        *current = effective;
        tracing::info!(
            applied = ?changes.applied,
            restart_required = ?changes.restart_required,
            "configuration reloaded"
        );
        Ok(ReloadReport {
            applied: changes.applied,
            restart_required: changes.restart_required,
            ..ReloadReport::default()
        })
    }
}

impl Reload for Reloader {
    fn reload<'a>(
        &'a self,
        state: &'a AppState,
    ) -> Pin<Box<dyn Future<Output = Result<ReloadReport, String>> + Send + 'a>> {
        Box::pin(self.apply(state))
    }
}

/// The reloader, shared.
pub fn reloader(path: Option<PathBuf>, current: Config) -> Arc<dyn Reload> {
    Arc::new(Reloader::new(path, current))
}
