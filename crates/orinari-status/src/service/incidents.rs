//! Incidents: an operator opens one and posts updates that follow its
//! lifecycle (an update of a maintenance passes through here too); each
//! write is published and announced to the notifier. The input checks shared
//! with maintenances live here.

use orinari_store::{IncidentRow, NewIncident, NewUpdate};
use serde_json::json;

use super::StatusService;
use super::snapshot::Snapshot;
use crate::model::{ComponentStatus, Impact, IncidentStatus};
use crate::{StatusError, new_id};

/// `POST /admin/v1/incidents`.
#[derive(Debug, Clone, Default)]
pub struct IncidentInput {
    /// Title.
    pub name: String,
    /// Initial status (default `investigating`).
    pub status: Option<String>,
    /// Impact (default: from the component statuses).
    pub impact: Option<String>,
    /// First update's message.
    pub message: String,
    /// Component id → status during the incident.
    pub components: Vec<(String, String)>,
}

/// `POST /admin/v1/{incidents,maintenances}/{id}/updates`.
#[derive(Debug, Clone, Default)]
pub struct UpdateInput {
    /// The status it sets.
    pub status: String,
    /// Message.
    pub message: String,
    /// Component id → new status within the incident.
    pub components: Vec<(String, String)>,
}

impl StatusService {
    /// Open an incident.
    pub async fn create_incident(
        &self,
        input: IncidentInput,
        now: i64,
    ) -> Result<IncidentRow, StatusError> {
        let name = required("name", &input.name)?;
        let message = required("message", &input.message)?;
        let status = match input.status.as_deref() {
            None => IncidentStatus::Investigating,
            Some(s) => IncidentStatus::parse(s).ok_or_else(|| {
                StatusError::invalid(
                    "status",
                    format!("`{s}` must be one of investigating, identified, monitoring, resolved"),
                )
            })?,
        };
        if status == IncidentStatus::Postmortem {
            return Err(StatusError::invalid(
                "status",
                "an incident starts unresolved or resolved; add the postmortem as an update",
            ));
        }
        let snap = self.snapshot();
        let components = self.component_statuses(&snap, &input.components, "components")?;
        let impact = match input.impact.as_deref() {
            None => components
                .iter()
                .filter_map(|(_, s)| ComponentStatus::parse(s))
                .map(Impact::of_component)
                .fold(Impact::None, Impact::max),
            Some(s) => Impact::parse(s)
                .filter(|i| *i != Impact::Maintenance)
                .ok_or_else(|| {
                    StatusError::invalid(
                        "impact",
                        format!("`{s}` must be one of none, minor, major, critical"),
                    )
                })?,
        };
        let id = new_id();
        let affected = affected_json(&snap, &components);
        let _w = self.writing.lock().await;
        self.store
            .create_incident(&NewIncident {
                id: id.clone(),
                kind: "incident".into(),
                name: name.into(),
                status: status.as_str().into(),
                impact: impact.as_str().into(),
                at: now,
                scheduled_for: None,
                scheduled_until: None,
                components: components.clone(),
                update: NewUpdate {
                    id: new_id(),
                    status: status.as_str().into(),
                    body: message.into(),
                    at: now,
                    affected,
                    components: Vec::new(),
                },
            })
            .await?;
        self.reconcile_locked(now, None).await?;
        self.published(&id, "incident.created").await
    }

    /// Add an update to an incident or a maintenance (`kind`), enforcing its
    /// lifecycle.
    pub async fn add_update(
        &self,
        kind: &'static str,
        id: &str,
        input: UpdateInput,
        now: i64,
    ) -> Result<IncidentRow, StatusError> {
        let message = required("message", &input.message)?;
        let _w = self.writing.lock().await;
        let current = self
            .store
            .incident(id)
            .await?
            .filter(|i| i.kind == kind)
            .ok_or_else(|| StatusError::NotFound {
                kind,
                id: id.into(),
            })?;
        let status = if kind == "maintenance" {
            super::maintenance::next_status(&current.status, &input.status)?
        } else {
            next_status(&current.status, &input.status)?
        };
        let snap = self.snapshot();
        let components = self.component_statuses(&snap, &input.components, "components")?;
        let affected = affected_json(&snap, &components);
        self.store
            .add_incident_update(
                id,
                &NewUpdate {
                    id: new_id(),
                    status: status.into(),
                    body: message.into(),
                    at: now,
                    affected,
                    components,
                },
            )
            .await?;
        self.reconcile_locked(now, None).await?;
        self.published(id, &format!("{kind}.updated")).await
    }

    pub(super) async fn published(
        &self,
        id: &str,
        event: &str,
    ) -> Result<IncidentRow, StatusError> {
        let row = self
            .store
            .incident(id)
            .await?
            .ok_or_else(|| StatusError::NotFound {
                kind: "incident",
                id: id.into(),
            })?;
        let snap = self.snapshot();
        self.notifier.notify(json!({
            "event": event,
            "page": crate::webhooks::notice_page(&snap),
            "incident": crate::statuspage::incident(&snap, &row),
        }));
        Ok(row)
    }

    pub(super) fn component_statuses(
        &self,
        snap: &Snapshot,
        pairs: &[(String, String)],
        field: &str,
    ) -> Result<Vec<(String, String)>, StatusError> {
        pairs
            .iter()
            .map(|(id, status)| {
                if snap.component(id).is_none() {
                    return Err(StatusError::invalid(
                        &format!("{field}.{id}"),
                        format!("no component `{id}`; see /api/v2/components.json for the ids"),
                    ));
                }
                let s = ComponentStatus::parse(status).ok_or_else(|| {
                    StatusError::invalid(
                        &format!("{field}.{id}"),
                        format!("`{status}` must be one of operational, degraded_performance, partial_outage, major_outage, under_maintenance"),
                    )
                })?;
                Ok((id.clone(), s.as_str().to_string()))
            })
            .collect()
    }
}

/// The status an operator's update moves an incident to, if its lifecycle
/// allows the move from the current one.
pub(super) fn next_status(current: &str, requested: &str) -> Result<&'static str, StatusError> {
    let to = IncidentStatus::parse(requested).ok_or_else(|| {
        StatusError::invalid(
            "status",
            format!("`{requested}` must be one of investigating, identified, monitoring, resolved, postmortem"),
        )
    })?;
    let from = IncidentStatus::parse(current).unwrap_or(IncidentStatus::Investigating);
    if !from.can_move_to(to) {
        return Err(StatusError::invalid(
            "status",
            format!(
                "an incident cannot move from {} to {}",
                from.as_str(),
                to.as_str()
            ),
        ));
    }
    Ok(to.as_str())
}

pub(super) fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, StatusError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(StatusError::invalid(field, "must not be empty"));
    }
    if t.chars().count() > 10_000 {
        return Err(StatusError::invalid(
            field,
            "must be at most 10000 characters",
        ));
    }
    Ok(t)
}

/// `affected_components` of an update: each component's status before and after.
fn affected_json(snap: &Snapshot, components: &[(String, String)]) -> Option<String> {
    if components.is_empty() {
        return None;
    }
    let list: Vec<_> = components
        .iter()
        .filter_map(|(id, new)| {
            let c = snap.component(id)?;
            Some(json!({"code": id, "name": c.row.name, "old_status": c.status.as_str(), "new_status": new}))
        })
        .collect();
    serde_json::to_string(&list).ok()
}
