//! Components: their definitions from the configuration, their effective
//! status and what the probes last saw, and the history of status changes
//! from which uptime is computed by time.

use sqlx::Row;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

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
        .bounded()
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
        .bounded()
        .await?;
        let rows = sqlx::query(
            "SELECT at, status FROM status_component_events WHERE component_id = $1 AND at >= $2 \
             ORDER BY at, id",
        )
        .bind(id)
        .bind(since)
        .fetch_all(self.pool())
        .bounded()
        .await?;
        before
            .iter()
            .chain(rows.iter())
            .map(|r| Ok((r.try_get("at")?, r.try_get("status")?)))
            .collect()
    }
}

/// Apply a component change: a definition upserted (its status kept), or a
/// status set and recorded in the component's history.
pub(super) async fn apply(
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
        _ => {}
    }
    Ok(n)
}
