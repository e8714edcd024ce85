//! The status page's records: components (effective status and what the
//! probes last saw), the history of their status changes (from which uptime
//! is computed by time), and incidents and scheduled maintenances with the
//! components they affect and their timestamped updates.
//!
//! Status values are stored as the Statuspage strings (`major_outage`,
//! `investigating`…); `orinari-status` owns their meaning. Every write is a
//! journaled [`Change`], so backups capture the page's whole history.
//!
//! One module per concern: `components.rs` (definitions, statuses, history),
//! `incidents.rs` (incidents and maintenances, read and written) with
//! `incident_changes.rs` (how those writes change the tables),
//! `subscriptions.rs` (email subscriptions) and `claims.rs` (once-only
//! markers). This module hands each journaled change to the one that
//! applies it.

mod claims;
mod components;
mod incident_changes;
mod incidents;
mod subscriptions;

pub use components::{ComponentDef, ComponentRow};
pub use incidents::{IncidentRow, NewIncident, NewUpdate, UpdateRow};
pub use subscriptions::{NewSubscription, Subscriber};

use crate::journal::Change;

/// Apply one status-page change (called by the journal's `apply`, live and on
/// restore). Returns rows affected per statement; the first is the main row.
pub(crate) async fn apply(
    conn: &mut sqlx::AnyConnection,
    c: &Change,
) -> Result<Vec<u64>, sqlx::Error> {
    match c {
        Change::UpsertComponent { .. } | Change::SetComponentStatus { .. } => {
            components::apply(conn, c).await
        }
        Change::CreateIncident { .. } | Change::AddIncidentUpdate { .. } => {
            incident_changes::apply(conn, c).await
        }
        Change::Subscribe { .. }
        | Change::ConfirmSubscription { .. }
        | Change::Unsubscribe { .. } => subscriptions::apply(conn, c).await,
        Change::Claim { key, value } => claims::apply(conn, key, value).await,
        _ => Ok(Vec::new()),
    }
}
