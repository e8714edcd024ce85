//! Configuration reload (SIGHUP, `POST /admin/v1/reload`): read the file
//! again, validate it, and apply what can change while serving — upstream
//! models and backends, limits, auth, firewall, guard — in one swap.
//! Requests already running finish on what they started with; unchanged
//! models keep their pools (health, circuit state, rollouts). What needs a
//! restart is reported and keeps its running value
//! (`orinari_config::reload::plan`).

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

    /// The configuration error, without the file's path (responses never
    /// carry paths); the full text goes to the log.
    fn refused(&self, e: &orinari_config::ConfigError) -> String {
        tracing::warn!(error = %e, "configuration not reloaded; the running one stays");
        match &self.path {
            Some(p) => e.0.replace(&p.display().to_string(), "config"),
            None => e.0.clone(),
        }
    }

    async fn apply(&self, state: &AppState) -> Result<ReloadReport, String> {
        let mut current = self.current.lock().await;
        let next = orinari_config::load(self.path.as_deref(), std::env::vars())
            .map_err(|e| self.refused(&e))?;
        let (changes, effective) = orinari_config::reload::plan(&current, &next);
        let live = state.live();
        if !changes.applied.is_empty() {
            let previous = live
                .gateway
                .clone()
                .ok_or_else(|| "this server has no gateway to reload".to_string())?;
            // Everything that can fail happens before the swap.
            let gateway =
                crate::gateway::rebuild(&previous, &current, &effective).map_err(|e| {
                    tracing::warn!(error = %format!("{e:#}"), "configuration not reloaded");
                    format!("{e:#}")
                })?;
            let screening = match live.chat.screening() {
                Some(_) if effective.prompt_injection != current.prompt_injection => Some(
                    orinari_chat::Screening::embedded(effective.prompt_injection)
                        .map_err(|e| format!("[guard]: {e}"))?,
                ),
                s => s.cloned(),
            };
            let edge = live
                .edge()
                .next(effective.admission.clone(), &crate::model_caps(&effective));
            state.update(|l| {
                l.reconfigured(edge, screening, effective.max_input_chars)
                    .serve(gateway.clone())
            });
            previous.retire(&gateway);
            *current = effective;
        }
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
