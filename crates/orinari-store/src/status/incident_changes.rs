//! How an incident or maintenance change is applied to the tables (live and
//! on restore): the incident row, the statuses it gives its components, and
//! the update that was posted.

use crate::journal::Change;

/// Apply a `CreateIncident` or an `AddIncidentUpdate`. An update of an
/// unknown incident changes nothing (its first count is 0).
pub(super) async fn apply(
    conn: &mut sqlx::AnyConnection,
    c: &Change,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut n = Vec::new();
    match c {
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
