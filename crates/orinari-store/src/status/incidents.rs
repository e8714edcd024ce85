//! Incidents and scheduled maintenances (one table, told apart by `kind`):
//! the rows with their affected components and timestamped updates, and the
//! store's reads and writes of them. How a write changes the tables is in
//! `incident_changes.rs`.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

/// An incident or a scheduled maintenance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    /// Stable id.
    pub id: String,
    /// `incident` or `maintenance`.
    pub kind: String,
    /// Title.
    pub name: String,
    /// Lifecycle status.
    pub status: String,
    /// `none | minor | major | critical | maintenance`.
    pub impact: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms of the first `monitoring` update.
    pub monitoring_at: Option<i64>,
    /// Unix ms of resolution (or completion).
    pub resolved_at: Option<i64>,
    /// Maintenance window start (Unix ms).
    pub scheduled_for: Option<i64>,
    /// Maintenance window end (Unix ms).
    pub scheduled_until: Option<i64>,
    /// Affected components and the status the incident gives each.
    pub components: Vec<(String, String)>,
    /// Updates, newest first.
    pub updates: Vec<UpdateRow>,
}

/// One timestamped incident update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRow {
    /// Stable id.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// Status set by this update.
    pub status: String,
    /// Operator's message.
    pub body: String,
    /// Unix ms.
    pub created_at: i64,
    /// `affected_components` as JSON, if any.
    pub affected: Option<String>,
}

/// A new incident or maintenance, with its first update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    /// Stable id.
    pub id: String,
    /// `incident` or `maintenance`.
    pub kind: String,
    /// Title.
    pub name: String,
    /// Initial status.
    pub status: String,
    /// Impact.
    pub impact: String,
    /// Unix ms.
    pub at: i64,
    /// Maintenance window, Unix ms.
    pub scheduled_for: Option<i64>,
    /// Maintenance window end, Unix ms.
    pub scheduled_until: Option<i64>,
    /// Affected components with the status given to each.
    pub components: Vec<(String, String)>,
    /// The first update.
    pub update: NewUpdate,
}

/// A new update of an incident or maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpdate {
    /// Stable id.
    pub id: String,
    /// Status it sets.
    pub status: String,
    /// Message.
    pub body: String,
    /// Unix ms.
    pub at: i64,
    /// `affected_components` JSON.
    pub affected: Option<String>,
    /// Components whose status within the incident changes.
    pub components: Vec<(String, String)>,
}

const INCIDENT_COLUMNS: &str = "id, kind, name, status, impact, created_at, updated_at, started_at, \
     monitoring_at, resolved_at, scheduled_for, scheduled_until";

impl Store {
    /// Open an incident or schedule a maintenance, with its first update.
    pub async fn create_incident(&self, i: &NewIncident) -> Result<(), StoreError> {
        self.write(&Change::CreateIncident {
            id: i.id.clone(),
            kind: i.kind.clone(),
            name: i.name.clone(),
            status: i.status.clone(),
            impact: i.impact.clone(),
            at: i.at,
            scheduled_for: i.scheduled_for,
            scheduled_until: i.scheduled_until,
            components: i.components.clone(),
            update_id: i.update.id.clone(),
            body: i.update.body.clone(),
            affected: i.update.affected.clone(),
        })
        .await?;
        Ok(())
    }

    /// Add an update: it sets the incident's status (and `monitoring_at` /
    /// `resolved_at` the first time), and the statuses it gives components.
    pub async fn add_incident_update(
        &self,
        incident_id: &str,
        u: &NewUpdate,
    ) -> Result<(), StoreError> {
        let n = self
            .write(&Change::AddIncidentUpdate {
                id: u.id.clone(),
                incident_id: incident_id.into(),
                status: u.status.clone(),
                body: u.body.clone(),
                at: u.at,
                affected: u.affected.clone(),
                components: u.components.clone(),
            })
            .await?;
        if n.first().copied().unwrap_or(0) == 0 {
            return Err(StoreError::Invalid(format!("no incident `{incident_id}`")));
        }
        Ok(())
    }

    /// One incident or maintenance with its components and updates.
    pub async fn incident(&self, id: &str) -> Result<Option<IncidentRow>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM status_incidents WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .bounded()
            .await?
        else {
            return Ok(None);
        };
        let mut i = incident_row(&row)?;
        self.fill(std::slice::from_mut(&mut i)).await?;
        Ok(Some(i))
    }

    /// The `limit` most recent incidents (`kind = "incident"`) or maintenances
    /// (`kind = "maintenance"`, by window start), newest first, plus every one
    /// not yet resolved or completed, with components and updates.
    pub async fn incidents(&self, kind: &str, limit: i64) -> Result<Vec<IncidentRow>, StoreError> {
        let order = if kind == "maintenance" {
            "scheduled_for"
        } else {
            "created_at"
        };
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM status_incidents WHERE kind = $1 AND (resolved_at IS NULL OR id IN \
             (SELECT id FROM status_incidents WHERE kind = $1 ORDER BY {order} DESC, id DESC LIMIT $2)) \
             ORDER BY {order} DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(kind)
            .bind(limit)
            .fetch_all(self.pool())
            .bounded()
            .await?;
        let mut out = rows
            .iter()
            .map(incident_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill(&mut out).await?;
        Ok(out)
    }

    async fn fill(&self, incidents: &mut [IncidentRow]) -> Result<(), StoreError> {
        for i in incidents {
            let comps = sqlx::query(
                "SELECT component_id, status FROM status_incident_components WHERE incident_id = $1 \
                 ORDER BY component_id",
            )
            .bind(&i.id)
            .fetch_all(self.pool())
            .bounded()
            .await?;
            i.components = comps
                .iter()
                .map(|r| Ok((r.try_get("component_id")?, r.try_get("status")?)))
                .collect::<Result<_, sqlx::Error>>()?;
            let ups = sqlx::query(
                "SELECT id, incident_id, status, body, created_at, affected FROM status_incident_updates \
                 WHERE incident_id = $1 ORDER BY created_at DESC, id DESC",
            )
            .bind(&i.id)
            .fetch_all(self.pool())
            .bounded()
            .await?;
            i.updates = ups
                .iter()
                .map(|r| {
                    Ok(UpdateRow {
                        id: r.try_get("id")?,
                        incident_id: r.try_get("incident_id")?,
                        status: r.try_get("status")?,
                        body: r.try_get("body")?,
                        created_at: r.try_get("created_at")?,
                        affected: r.try_get("affected")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
        }
        Ok(())
    }
}

fn incident_row(r: &AnyRow) -> Result<IncidentRow, StoreError> {
    Ok(IncidentRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        status: r.try_get("status")?,
        impact: r.try_get("impact")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        monitoring_at: r.try_get("monitoring_at")?,
        resolved_at: r.try_get("resolved_at")?,
        scheduled_for: r.try_get("scheduled_for")?,
        scheduled_until: r.try_get("scheduled_until")?,
        components: Vec::new(),
        updates: Vec::new(),
    })
}
