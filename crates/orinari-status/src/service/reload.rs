//! A new `[status]` applied while running (SIGHUP, `POST /admin/v1/reload`):
//! its checks (the scheduler starts, stops or replaces each probe loop),
//! components, the connectivity check, alert rules, and the operators'
//! subscribers (webhooks, alert emails). History, incidents, maintenances,
//! subscribers and uptime are untouched: they live in the store, by
//! component id. What the page is (its name, address, time zone, email
//! relay, visitors' subscriptions) is read at start only; the binary keeps
//! those settings as they run (`orinari_config::reload::plan`).
//!
//! In two steps, so a reload is all or nothing: [`StatusService::prepare`]
//! checks everything and changes nothing; [`StatusService::apply`] writes
//! the component definitions (the one step that can fail, first) and then
//! swaps the rest in at once.

use std::sync::Arc;

use orinari_config::{AlertSettings, StatusSettings};

use super::StatusService;
use super::probes::Probes;
use crate::StatusError;
use crate::notify::Operators;

/// A new `[status]`, checked and ready to apply.
pub struct StatusReload {
    settings: StatusSettings,
    probes: Probes,
    rules: Vec<AlertSettings>,
    operators: Operators,
}

impl std::fmt::Debug for StatusReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusReload")
            .field("checks", &self.probes.checks.len())
            .field("rules", &self.rules.len())
            .field("webhooks", &self.operators.hooks.len())
            .finish()
    }
}

impl StatusService {
    /// Check a new `[status]` without changing anything: every check's
    /// target and the connectivity check parse; webhook secrets are read
    /// from their environment variables now.
    pub fn prepare(&self, settings: &StatusSettings) -> Result<StatusReload, StatusError> {
        Ok(StatusReload {
            probes: Probes::of(settings)?,
            rules: settings.alerts.clone(),
            operators: Operators::of(settings),
            settings: settings.clone(),
        })
    }

    /// Apply a prepared `[status]`: define its components in the store (an
    /// error here changes nothing else), then swap in the checks, alert
    /// rules and operators' subscribers, and publish. A check whose settings
    /// are unchanged keeps probing on its own schedule; a new one is probed
    /// at once (on the leader); a removed one stops, and its component stays
    /// on the page with its history, as after a restart.
    pub async fn apply(&self, r: StatusReload, now: i64) -> Result<(), StatusError> {
        let _w = self.writing.lock().await;
        super::define(&self.store, &r.settings, now).await?;
        self.probes.send_replace(Arc::new(r.probes));
        self.alerts.set_rules(r.rules);
        self.notifier.set_operators(r.operators);
        if let Err(e) = self.reconcile_locked(now, None).await {
            // The new settings run; the page catches up at the next refresh.
            tracing::warn!(error = %e, "status refresh after a reload failed");
        }
        Ok(())
    }
}
