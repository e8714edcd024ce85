//! Publishing: recompute every component's effective status (probes,
//! unresolved incidents and running maintenances combined), write the ones
//! that changed, and send a new [`Snapshot`] over the `watch` channel when
//! anything shown changed. Every change the page shows ends here, under the
//! write lock.

use std::sync::Arc;

use orinari_store::IncidentRow;
use tokio::sync::watch;

use super::StatusService;
use super::snapshot::{Component, HISTORY_DAYS, Snapshot};
use crate::StatusError;
use crate::model::{ComponentStatus, Impact, IncidentStatus, MaintenanceStatus, page_status};
use crate::uptime;

/// Incidents and maintenances listed (plus every unresolved one).
const RECENT: i64 = 50;

impl StatusService {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Changes to the snapshot, for live updates.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// Recompute effective statuses, write those that changed, and publish a
    /// new snapshot.
    pub async fn reconcile(
        &self,
        now: i64,
        observed: Option<(&str, ComponentStatus)>,
    ) -> Result<(), StatusError> {
        let _w = self.writing.lock().await;
        self.reconcile_locked(now, observed).await
    }

    /// [`StatusService::reconcile`] for a caller that holds the write lock.
    pub(super) async fn reconcile_locked(
        &self,
        now: i64,
        observed: Option<(&str, ComponentStatus)>,
    ) -> Result<(), StatusError> {
        let rows = self.store.components().await?;
        let incidents = self.store.incidents("incident", RECENT).await?;
        let maintenances = self.store.incidents("maintenance", RECENT).await?;
        let mut effective: Vec<(ComponentStatus, Option<ComponentStatus>)> = Vec::new();
        for r in &rows {
            let mut seen = r.observed.as_deref().and_then(ComponentStatus::parse);
            if let Some((id, s)) = observed
                && id == r.id
            {
                seen = Some(s);
            }
            let from_incidents = incidents
                .iter()
                .filter(|i| {
                    IncidentStatus::parse(&i.status).is_some_and(IncidentStatus::is_unresolved)
                })
                .flat_map(|i| i.components.iter())
                .filter(|(c, _)| *c == r.id)
                .filter_map(|(_, s)| ComponentStatus::parse(s))
                .fold(None, |w: Option<ComponentStatus>, s| {
                    Some(w.map_or(s, |w| w.worst(s)))
                });
            let in_maintenance = maintenances.iter().any(|m| {
                MaintenanceStatus::parse(&m.status).is_some_and(MaintenanceStatus::is_active)
                    && m.components.iter().any(|(c, _)| *c == r.id)
            });
            let status = if in_maintenance {
                // Probes are expected to fail during maintenance; only an
                // operator's outage shows through.
                from_incidents
                    .filter(|s| s.severity() > ComponentStatus::UnderMaintenance.severity())
                    .unwrap_or(ComponentStatus::UnderMaintenance)
            } else {
                seen.unwrap_or(ComponentStatus::Operational)
                    .worst(from_incidents.unwrap_or(ComponentStatus::Operational))
            };
            effective.push((status, seen));
        }
        // Groups: the worst of their children.
        for (i, r) in rows.iter().enumerate() {
            if r.is_group {
                let worst = rows
                    .iter()
                    .zip(effective.iter())
                    .filter(|(c, _)| c.group_id.as_deref() == Some(r.id.as_str()))
                    .fold(ComponentStatus::Operational, |w, (_, (s, _))| w.worst(*s));
                if let Some(e) = effective.get_mut(i) {
                    e.0 = worst;
                }
            }
        }
        for (r, (status, seen)) in rows.iter().zip(effective.iter()) {
            let old_seen = r.observed.as_deref().and_then(ComponentStatus::parse);
            if r.status != status.as_str() || *seen != old_seen {
                self.store
                    .set_component_status(
                        &r.id,
                        status.as_str(),
                        seen.map(ComponentStatus::as_str),
                        now,
                    )
                    .await?;
            }
        }
        self.publish(now, incidents, maintenances).await
    }

    async fn publish(
        &self,
        now: i64,
        incidents: Vec<IncidentRow>,
        maintenances: Vec<IncidentRow>,
    ) -> Result<(), StatusError> {
        let rows = self.store.components().await?;
        let days = self.page.clock.days(now, HISTORY_DAYS);
        let since = days.first().map_or(now, |d| d.1);
        let mut components = Vec::with_capacity(rows.len());
        for r in &rows {
            let history: Vec<(i64, ComponentStatus)> = self
                .store
                .component_history(&r.id, since)
                .await?
                .into_iter()
                .filter_map(|(at, s)| ComponentStatus::parse(&s).map(|s| (at, s)))
                .collect();
            let windows: Vec<(i64, i64)> = maintenances
                .iter()
                .filter(|m| m.components.iter().any(|(c, _)| *c == r.id))
                .filter_map(|m| {
                    let start = m
                        .updates
                        .iter()
                        .rev()
                        .find(|u| u.status == "in_progress")?
                        .created_at;
                    let end = m.resolved_at.unwrap_or(now);
                    Some((start, end))
                })
                .collect();
            let day_rows = uptime::daily(&history, &windows, &days, now);
            let sum = |n: usize| {
                let tail = &day_rows[day_rows.len().saturating_sub(n)..];
                let up: i64 = tail.iter().map(|d| d.up_ms).sum();
                let down: i64 = tail.iter().map(|d| d.down_ms).sum();
                uptime::basis_points(up, up + down)
            };
            components.push(Component {
                status: ComponentStatus::parse(&r.status).unwrap_or(ComponentStatus::Operational),
                observed: r.observed.as_deref().and_then(ComponentStatus::parse),
                children: rows
                    .iter()
                    .filter(|c| c.group_id.as_deref() == Some(r.id.as_str()))
                    .map(|c| c.id.clone())
                    .collect(),
                uptime_30: sum(30),
                uptime_90: sum(HISTORY_DAYS),
                days: day_rows,
                row: r.clone(),
            });
        }
        let status = page_status(
            components
                .iter()
                .filter(|c| !c.row.is_group)
                .map(|c| c.status),
            incidents
                .iter()
                .filter(|i| {
                    IncidentStatus::parse(&i.status).is_some_and(IncidentStatus::is_unresolved)
                })
                .filter_map(|i| Impact::parse(&i.impact)),
            maintenances.iter().any(|m| {
                MaintenanceStatus::parse(&m.status).is_some_and(MaintenanceStatus::is_active)
            }),
        );
        let updated_at = components
            .iter()
            .map(|c| c.row.updated_at)
            .chain(incidents.iter().map(|i| i.updated_at))
            .chain(maintenances.iter().map(|i| i.updated_at))
            .max()
            .unwrap_or(now);
        let old = self.snapshot();
        let next = Snapshot {
            page: self.page.clone(),
            updated_at,
            components,
            incidents,
            maintenances,
            status,
            version: old.version + 1,
        };
        // Publish only real changes, so live pages are not woken for nothing;
        // uptime bars move on at the next change or the periodic refresh.
        let changed = old.version == 0
            || old.status != next.status
            || old.incidents != next.incidents
            || old.maintenances != next.maintenances
            || old.components.len() != next.components.len()
            || old
                .components
                .iter()
                .zip(next.components.iter())
                .any(|(a, b)| a.row != b.row || a.status != b.status || a.days != b.days);
        if changed {
            self.snapshot.send_replace(Arc::new(next));
        }
        Ok(())
    }
}
