//! Probes: each configured check runs in its own loop (started, and on a
//! reload stopped or replaced, by the scheduler) while this instance leads, records every attempt, and
//! commits a status change once the thresholds agree (never "down" while
//! this instance cannot reach the network itself); a changed component is
//! announced once across instances.

use std::sync::Arc;
use std::time::Duration;

use orinari_config::{CheckSettings, StatusSettings};
use serde_json::json;
use tokio::sync::watch;

use super::StatusService;
use crate::StatusError;
use crate::model::ComponentStatus;
use crate::probe::{Target, Thresholds, Tracker};

/// One configured check, validated.
pub(super) struct Check {
    pub(super) id: String,
    target: Target,
    interval: Duration,
    timeout: Duration,
    limits: Thresholds,
    /// As configured: a reload replaces the loop of a check whose settings
    /// changed, and keeps the others running.
    pub(super) settings: CheckSettings,
}

/// Every check, and the self-connectivity check.
pub(super) struct Probes {
    pub(super) checks: Vec<Arc<Check>>,
    connectivity: Option<Target>,
}

impl Probes {
    /// The checks of `[status]`, each target parsed (nothing starts).
    pub(super) fn of(settings: &StatusSettings) -> Result<Self, StatusError> {
        let checks = settings
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| check(i, c).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let connectivity = settings
            .connectivity_check
            .as_deref()
            .map(|u| Target::parse(u, None, None))
            .transpose()
            .map_err(|e| StatusError::invalid("status.connectivity_check", e))?;
        Ok(Self {
            checks,
            connectivity,
        })
    }
}

impl StatusService {
    /// A probe decided what a component looks like. When that changes the
    /// component's status, subscribers are alerted once, whichever of several
    /// instances saw it first (deduplicated per component, status and minute).
    pub async fn observe(
        &self,
        component: &str,
        status: ComponentStatus,
        now: i64,
    ) -> Result<(), StatusError> {
        let before = self.snapshot().component(component).map(|c| c.status);
        self.reconcile(now, Some((component, status))).await?;
        let snap = self.snapshot();
        let Some(c) = snap.component(component) else {
            return Ok(());
        };
        if before.is_some_and(|b| b != c.status)
            && self
                .store
                .claim(
                    &format!("status.alert.{component}.{}.{}", c.status, now / 60_000),
                    &now.to_string(),
                )
                .await?
        {
            self.notifier.notify(json!({
                "event": "component.status_changed",
                "page": crate::webhooks::notice_page(&snap),
                "component": crate::statuspage::component(&snap, c),
                "old_status": before.map(ComponentStatus::as_str),
                "new_status": c.status.as_str(),
            }));
        }
        Ok(())
    }

    /// Probe `c` every interval while this instance leads, until `stop`
    /// turns true (or its sender is dropped).
    pub(super) async fn probe_loop(&self, c: Arc<Check>, mut stop: watch::Receiver<bool>) {
        let mut tracker = Tracker::new(c.limits);
        if let Some(s) = self.snapshot().component(&c.id).and_then(|c| c.observed) {
            tracker.commit(s);
        }
        let mut every = tokio::time::interval(c.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !self.is_leader() {
                continue;
            }
            let a = self.prober.attempt(&c.target, c.timeout).await;
            let now = orinari_store::now_ms();
            let latency_ms = i64::try_from(a.latency.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = self
                .store
                .record_probe(orinari_store::ProbeResult {
                    check_id: &c.id,
                    at: now,
                    up: a.ok,
                    latency_ms,
                })
                .await
            {
                tracing::warn!(check = %c.id, error = %e, "cannot record a probe result");
            }
            let Some(next) = tracker.propose(&a) else {
                continue;
            };
            if next == ComponentStatus::MajorOutage && !self.connected(c.timeout).await {
                tracing::warn!(check = %c.id, "the check failed, but so did the self-connectivity check: not declaring it down");
                continue;
            }
            tracing::info!(check = %c.id, status = next.as_str(), latency_ms, error = a.error.as_deref().unwrap_or(""), "check changed");
            tracker.commit(next);
            if let Err(e) = self.observe(&c.id, next, now).await {
                tracing::warn!(check = %c.id, error = %e, "cannot record a status change");
            }
        }
    }

    /// Whether this instance can reach the network at all (the configured
    /// `connectivity_check`); with none configured, assumed.
    async fn connected(&self, timeout: Duration) -> bool {
        let probes = self.probes.borrow().clone();
        match &probes.connectivity {
            Some(t) => self.prober.attempt(t, timeout).await.ok,
            None => true,
        }
    }

    /// Whether a check's component is up, for `orinari_probe_up{check}`:
    /// `(check id, up)` for every check that has decided (degraded is up).
    pub fn probe_states(&self) -> Vec<(String, bool)> {
        let snap = self.snapshot();
        let probes = self.probes.borrow().clone();
        probes
            .checks
            .iter()
            .filter_map(|c| {
                let s = snap.component(&c.id)?.observed?;
                Some((c.id.clone(), !s.is_down()))
            })
            .collect()
    }
}

pub(super) fn check(i: usize, c: &CheckSettings) -> Result<Check, StatusError> {
    let target = Target::parse(&c.url, c.expect_status, c.keyword.clone())
        .map(|t| t.with_json(c.json.clone()))
        .map_err(|e| StatusError::invalid(&format!("status.checks[{i}].url"), e))?;
    Ok(Check {
        id: c.component.id.clone(),
        target,
        interval: c.interval,
        timeout: c.timeout,
        limits: Thresholds {
            failures: c.failure_threshold,
            successes: c.success_threshold,
            degraded_after: c.degraded_after,
        },
        settings: c.clone(),
    })
}
