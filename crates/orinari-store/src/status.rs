//! The status page's records: components (effective status and what the
//! probes last saw), the history of their status changes (from which uptime
//! is computed by time), and incidents and scheduled maintenances with the
//! components they affect and their timestamped updates.
//!
//! Status values are stored as the Statuspage strings (`major_outage`,
//! `investigating`…); `orinari-status` owns their meaning. Every write is a
//! journaled [`Change`], so backups capture the page's whole history.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::journal::Change;
use crate::{Store, StoreError};

/// A component as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRow {
    /// Stable id (a slug of the name unless configured).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Order on the page.
    pub position: i64,
    /// The group it belongs to, if any.
    pub group_id: Option<String>,
    /// Whether this is a group header.
    pub is_group: bool,
    /// Whether uptime bars are shown.
    pub showcase: bool,
    /// The effective status (probes, incidents and maintenance combined).
    pub status: String,
    /// What the probes last concluded, if they ever ran.
    pub observed: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A component's definition (from config), written at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDef {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Order on the page.
    pub position: i64,
    /// Group id.
    pub group_id: Option<String>,
    /// Group header?
    pub is_group: bool,
    /// Uptime bars shown?
    pub showcase: bool,
}

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

/// A new email subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// Id.
    pub id: String,
    /// Address.
    pub email: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// SHA-256 (hex) of the confirmation token.
    pub confirm_hash: String,
    /// Unsubscribe token.
    pub unsubscribe_token: String,
    /// Unix ms.
    pub at: i64,
}

/// A confirmed subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Address.
    pub email: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// For the unsubscribe link.
    pub unsubscribe_token: String,
}

const INCIDENT_COLUMNS: &str = "id, kind, name, status, impact, created_at, updated_at, started_at, \
     monitoring_at, resolved_at, scheduled_for, scheduled_until";

impl Store {
    /// Insert a component or refresh its definition; its status is kept.
    pub async fn upsert_component(&self, c: &ComponentDef, at: i64) -> Result<(), StoreError> {
        self.write(&Change::UpsertComponent {
            id: c.id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            position: c.position,
            group_id: c.group_id.clone(),
            is_group: i64::from(c.is_group),
            showcase: i64::from(c.showcase),
            at,
        })
        .await?;
        Ok(())
    }

    /// Set a component's effective status (and, when given, what the probes
    /// saw) and record the change in its history.
    pub async fn set_component_status(
        &self,
        id: &str,
        status: &str,
        observed: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        let n = self
            .write(&Change::SetComponentStatus {
                id: id.into(),
                status: status.into(),
                observed: observed.map(str::to_string),
                at,
            })
            .await?;
        if n.first().copied().unwrap_or(0) == 0 {
            return Err(StoreError::Invalid(format!("no component `{id}`")));
        }
        Ok(())
    }

    /// Every component, by position.
    pub async fn components(&self) -> Result<Vec<ComponentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, position, group_id, is_group, showcase, status, observed, \
             created_at, updated_at FROM status_components ORDER BY position, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ComponentRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    position: r.try_get("position")?,
                    group_id: r.try_get("group_id")?,
                    is_group: r.try_get::<i64, _>("is_group")? != 0,
                    showcase: r.try_get::<i64, _>("showcase")? != 0,
                    status: r.try_get("status")?,
                    observed: r.try_get("observed")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// A component's status changes from `since` (Unix ms) on, oldest first,
    /// preceded by the last change before `since` (the status in force then).
    pub async fn component_history(
        &self,
        id: &str,
        since: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let before = sqlx::query(
            "SELECT at, status FROM status_component_events WHERE component_id = $1 AND at < $2 \
             ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(id)
        .bind(since)
        .fetch_optional(self.pool())
        .await?;
        let rows = sqlx::query(
            "SELECT at, status FROM status_component_events WHERE component_id = $1 AND at >= $2 \
             ORDER BY at, id",
        )
        .bind(id)
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        before
            .iter()
            .chain(rows.iter())
            .map(|r| Ok((r.try_get("at")?, r.try_get("status")?)))
            .collect()
    }

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

    /// Claim a once-only marker: true for the first caller, on any instance
    /// sharing this store, false for every later one.
    pub async fn claim(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::Claim {
                key: key.into(),
                value: value.into(),
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// Record a new, unconfirmed email subscription.
    pub async fn subscribe(&self, s: &NewSubscription) -> Result<(), StoreError> {
        self.write(&Change::Subscribe {
            id: s.id.clone(),
            email: s.email.clone(),
            components: s.components.join(","),
            confirm_hash: s.confirm_hash.clone(),
            unsubscribe_token: s.unsubscribe_token.clone(),
            at: s.at,
        })
        .await?;
        Ok(())
    }

    /// Confirm the subscription whose token hashes to `confirm_hash`; false
    /// when there is none pending.
    pub async fn confirm_subscription(
        &self,
        confirm_hash: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::ConfirmSubscription {
                confirm_hash: confirm_hash.into(),
                at,
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// End the subscription with this unsubscribe token; false when none is active.
    pub async fn unsubscribe(&self, token: &str, at: i64) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::Unsubscribe {
                token: token.into(),
                at,
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// Confirmed, active subscriptions.
    pub async fn subscribers(&self) -> Result<Vec<Subscriber>, StoreError> {
        let rows = sqlx::query(
            "SELECT email, components, unsubscribe_token FROM status_subscriptions \
             WHERE confirmed_at IS NOT NULL AND unsubscribed_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let comps: String = r.try_get("components")?;
                Ok(Subscriber {
                    email: r.try_get("email")?,
                    components: comps
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    unsubscribe_token: r.try_get("unsubscribe_token")?,
                })
            })
            .collect()
    }

    /// When the newest unconfirmed subscription of `email` was made, if any.
    pub async fn pending_since(&self, email: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(created_at) AS at FROM status_subscriptions \
             WHERE email = $1 AND confirmed_at IS NULL AND unsubscribed_at IS NULL",
        )
        .bind(email)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("at")?)
    }

    /// One incident or maintenance with its components and updates.
    pub async fn incident(&self, id: &str) -> Result<Option<IncidentRow>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM status_incidents WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
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

/// Apply one status-page change (called by the journal's `apply`, live and on
/// restore). Returns rows affected per statement; the first is the main row.
pub(crate) async fn apply(
    conn: &mut sqlx::AnyConnection,
    c: &Change,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut n = Vec::new();
    match c {
        Change::UpsertComponent {
            id,
            name,
            description,
            position,
            group_id,
            is_group,
            showcase,
            at,
        } => {
            n.push(
                sqlx::query(
                    "INSERT INTO status_components (id, name, description, position, group_id, is_group, \
                     showcase, status, observed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'operational', NULL, $8, $8) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, \
                     position = excluded.position, group_id = excluded.group_id, is_group = excluded.is_group, \
                     showcase = excluded.showcase",
                )
                .bind(id)
                .bind(name)
                .bind(description.as_deref())
                .bind(*position)
                .bind(group_id.as_deref())
                .bind(*is_group)
                .bind(*showcase)
                .bind(*at)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            );
        }
        Change::SetComponentStatus {
            id,
            status,
            observed,
            at,
        } => {
            n.push(
                sqlx::query(
                    "UPDATE status_components SET status = $2, observed = COALESCE($3, observed), \
                     updated_at = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(status)
                .bind(observed.as_deref())
                .bind(*at)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            );
            if n.first().copied().unwrap_or(0) > 0 {
                n.push(
                    sqlx::query(
                        "INSERT INTO status_component_events (component_id, at, status) VALUES ($1, $2, $3)",
                    )
                    .bind(id)
                    .bind(*at)
                    .bind(status)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
                );
            }
        }
        Change::CreateIncident {
            id,
            kind,
            name,
            status,
            impact,
            at,
            scheduled_for,
            scheduled_until,
            components,
            update_id,
            body,
            affected,
        } => {
            let resolved = matches!(status.as_str(), "resolved" | "completed").then_some(*at);
            let monitoring = (status == "monitoring").then_some(*at);
            n.push(
                sqlx::query(
                    "INSERT INTO status_incidents (id, kind, name, status, impact, created_at, updated_at, \
                     started_at, monitoring_at, resolved_at, scheduled_for, scheduled_until) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9, $10)",
                )
                .bind(id)
                .bind(kind)
                .bind(name)
                .bind(status)
                .bind(impact)
                .bind(*at)
                .bind(monitoring)
                .bind(resolved)
                .bind(*scheduled_for)
                .bind(*scheduled_until)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            );
            set_components(conn, id, components, &mut n).await?;
            n.push(
                insert_update(conn, update_id, id, status, body, *at, affected.as_deref()).await?,
            );
        }
        Change::AddIncidentUpdate {
            id,
            incident_id,
            status,
            body,
            at,
            affected,
            components,
        } => {
            let resolved = matches!(status.as_str(), "resolved" | "completed").then_some(*at);
            let monitoring = (status == "monitoring").then_some(*at);
            n.push(
                sqlx::query(
                    "UPDATE status_incidents SET status = $2, updated_at = $3, \
                     monitoring_at = COALESCE(monitoring_at, $4), resolved_at = COALESCE(resolved_at, $5) \
                     WHERE id = $1",
                )
                .bind(incident_id)
                .bind(status)
                .bind(*at)
                .bind(monitoring)
                .bind(resolved)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            );
            if n.first().copied().unwrap_or(0) > 0 {
                set_components(conn, incident_id, components, &mut n).await?;
                n.push(
                    insert_update(
                        conn,
                        id,
                        incident_id,
                        status,
                        body,
                        *at,
                        affected.as_deref(),
                    )
                    .await?,
                );
            }
        }
        Change::Subscribe {
            id,
            email,
            components,
            confirm_hash,
            unsubscribe_token,
            at,
        } => n.push(
            sqlx::query(
                "INSERT INTO status_subscriptions (id, email, components, confirm_hash, unsubscribe_token, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(email)
            .bind(components)
            .bind(confirm_hash)
            .bind(unsubscribe_token)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        Change::ConfirmSubscription { confirm_hash, at } => n.push(
            sqlx::query(
                "UPDATE status_subscriptions SET confirmed_at = $2 \
                 WHERE confirm_hash = $1 AND confirmed_at IS NULL AND unsubscribed_at IS NULL",
            )
            .bind(confirm_hash)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        Change::Unsubscribe { token, at } => n.push(
            sqlx::query(
                "UPDATE status_subscriptions SET unsubscribed_at = $2 \
                 WHERE unsubscribe_token = $1 AND unsubscribed_at IS NULL",
            )
            .bind(token)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        Change::Claim { key, value } => {
            n.push(
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            );
        }
        _ => {}
    }
    Ok(n)
}

async fn set_components(
    conn: &mut sqlx::AnyConnection,
    incident_id: &str,
    components: &[(String, String)],
    n: &mut Vec<u64>,
) -> Result<(), sqlx::Error> {
    for (component, status) in components {
        n.push(
            sqlx::query(
                "INSERT INTO status_incident_components (incident_id, component_id, status) VALUES ($1, $2, $3) \
                 ON CONFLICT (incident_id, component_id) DO UPDATE SET status = excluded.status",
            )
            .bind(incident_id)
            .bind(component)
            .bind(status)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        );
    }
    Ok(())
}

async fn insert_update(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    incident_id: &str,
    status: &str,
    body: &str,
    at: i64,
    affected: Option<&str>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO status_incident_updates (id, incident_id, status, body, created_at, affected) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(incident_id)
    .bind(status)
    .bind(body)
    .bind(at)
    .bind(affected)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
