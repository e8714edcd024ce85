//! Scheduled maintenance: an operator schedules one in the page's time
//! zone; the clock then moves it (`scheduled` → `in_progress` →
//! `completed`), and reminders go out 48 hours and 1 hour ahead. The
//! automatic writes are idempotent across instances (derived ids, claimed
//! markers).

use orinari_store::{IncidentRow, NewIncident, NewUpdate};
use serde_json::json;

use super::StatusService;
use super::incidents::required;
use crate::model::{ComponentStatus, Impact, MaintenanceStatus};
use crate::{StatusError, derived_id, new_id};

/// `POST /admin/v1/maintenances`.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceInput {
    /// Title.
    pub name: String,
    /// RFC 3339 (or a local time in the page's zone).
    pub scheduled_for: String,
    /// RFC 3339 (or a local time in the page's zone).
    pub scheduled_until: String,
    /// First update's message.
    pub message: String,
    /// Components under maintenance.
    pub components: Vec<String>,
}

impl StatusService {
    /// Schedule a maintenance. Its status follows the clock from then on.
    pub async fn create_maintenance(
        &self,
        input: MaintenanceInput,
        now: i64,
    ) -> Result<IncidentRow, StatusError> {
        let name = required("name", &input.name)?;
        let message = required("message", &input.message)?;
        let clock = &self.page.clock;
        let from = clock.parse("scheduled_for", &input.scheduled_for)?;
        let until = clock.parse("scheduled_until", &input.scheduled_until)?;
        if until <= from {
            return Err(StatusError::invalid(
                "scheduled_until",
                "must be later than scheduled_for",
            ));
        }
        if until <= now {
            return Err(StatusError::invalid(
                "scheduled_until",
                "is already in the past",
            ));
        }
        let snap = self.snapshot();
        let pairs: Vec<(String, String)> = input
            .components
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    ComponentStatus::UnderMaintenance.as_str().to_string(),
                )
            })
            .collect();
        let components = self.component_statuses(&snap, &pairs, "components")?;
        let status = auto_status(MaintenanceStatus::Scheduled, from, until, now);
        let id = new_id();
        let _w = self.writing.lock().await;
        self.store
            .create_incident(&NewIncident {
                id: id.clone(),
                kind: "maintenance".into(),
                name: name.into(),
                status: status.as_str().into(),
                impact: Impact::Maintenance.as_str().into(),
                at: now,
                scheduled_for: Some(from),
                scheduled_until: Some(until),
                components,
                update: NewUpdate {
                    id: new_id(),
                    status: status.as_str().into(),
                    body: message.into(),
                    at: now,
                    affected: None,
                    components: Vec::new(),
                },
            })
            .await?;
        self.reconcile_locked(now, None).await?;
        self.published(&id, "maintenance.created").await
    }

    /// Move maintenances on time: `scheduled` → `in_progress` at
    /// `scheduled_for`, → `completed` at `scheduled_until` (a `verifying`
    /// maintenance too). Each automatic update has an id derived from the
    /// maintenance and the status, so two instances write it once.
    pub async fn tick(&self, now: i64) -> Result<bool, StatusError> {
        self.remind(now).await?;
        let snap = self.snapshot();
        let mut moved = false;
        for m in &snap.maintenances {
            let (Some(from), Some(until)) = (m.scheduled_for, m.scheduled_until) else {
                continue;
            };
            let current =
                MaintenanceStatus::parse(&m.status).unwrap_or(MaintenanceStatus::Scheduled);
            let target = auto_status(current, from, until, now);
            if target == current {
                continue;
            }
            let body = match target {
                MaintenanceStatus::InProgress => {
                    "Scheduled maintenance is now in progress. We will provide updates as necessary."
                }
                _ => "The scheduled maintenance has been completed.",
            };
            let _w = self.writing.lock().await;
            let written = self
                .store
                .add_incident_update(
                    &m.id,
                    &NewUpdate {
                        id: derived_id(&format!("{}:{}", m.id, target.as_str())),
                        status: target.as_str().into(),
                        body: body.into(),
                        at: now,
                        affected: None,
                        components: Vec::new(),
                    },
                )
                .await;
            match written {
                Ok(()) => {
                    tracing::info!(maintenance = %m.id, status = target.as_str(), "maintenance moved on time");
                    moved = true;
                    self.reconcile_locked(now, None).await?;
                    drop(_w);
                    let _ = self.published(&m.id, "maintenance.updated").await;
                }
                // Another instance wrote the same automatic update first.
                Err(e) => {
                    tracing::debug!(maintenance = %m.id, error = %e, "automatic update not written")
                }
            }
        }
        Ok(moved)
    }

    /// Reminders of scheduled maintenance, 48 hours and 1 hour ahead, each
    /// sent once across instances (only the nearer one when both are due).
    async fn remind(&self, now: i64) -> Result<(), StatusError> {
        const HOUR: i64 = 3_600_000;
        let snap = self.snapshot();
        for m in snap.upcoming() {
            let Some(from) = m.scheduled_for else {
                continue;
            };
            if now >= from {
                continue;
            }
            let due = if now >= from - HOUR {
                // The 48-hour one is no longer news.
                self.store
                    .claim(&format!("status.remind.{}.48h", m.id), &now.to_string())
                    .await?;
                Some((1, "1h"))
            } else if now >= from - 48 * HOUR {
                Some((48, "48h"))
            } else {
                None
            };
            let Some((hours, label)) = due else { continue };
            if self
                .store
                .claim(&format!("status.remind.{}.{label}", m.id), &now.to_string())
                .await?
            {
                self.notifier.notify(json!({
                    "event": "maintenance.reminder",
                    "hours_before": hours,
                    "page": crate::webhooks::notice_page(&snap),
                    "scheduled_maintenance": crate::statuspage::incident(&snap, m),
                }));
            }
        }
        Ok(())
    }
}

/// Where the clock puts a maintenance: it only ever moves forward.
pub fn auto_status(
    current: MaintenanceStatus,
    from: i64,
    until: i64,
    now: i64,
) -> MaintenanceStatus {
    let by_time = if now >= until {
        MaintenanceStatus::Completed
    } else if now >= from {
        MaintenanceStatus::InProgress
    } else {
        MaintenanceStatus::Scheduled
    };
    if by_time.step() > current.step() {
        by_time
    } else {
        current
    }
}

/// The status an operator's update moves a maintenance to: a known status
/// no earlier in its lifecycle than the current one.
pub(super) fn next_status(current: &str, requested: &str) -> Result<&'static str, StatusError> {
    let to = MaintenanceStatus::parse(requested).ok_or_else(|| {
        StatusError::invalid(
            "status",
            format!("`{requested}` must be one of scheduled, in_progress, verifying, completed"),
        )
    })?;
    let from = MaintenanceStatus::parse(current).unwrap_or(MaintenanceStatus::Scheduled);
    if to.step() < from.step() {
        return Err(StatusError::invalid(
            "status",
            format!(
                "a maintenance moves forward only: it is {} already",
                from.as_str()
            ),
        ));
    }
    Ok(to.as_str())
}
