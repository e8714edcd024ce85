//! What the service publishes: an immutable [`Snapshot`] of the page (its
//! components with effective status and uptime, recent incidents and
//! maintenances, the rollup), and the queries readers make of it.

use std::sync::Arc;

use orinari_store::{ComponentRow, IncidentRow};

use crate::clock::PageClock;
use crate::model::{ComponentStatus, IncidentStatus, MaintenanceStatus, PageStatus};
use crate::uptime::DayUptime;

/// Days of uptime history shown.
pub const HISTORY_DAYS: usize = 90;

/// The page itself.
#[derive(Debug, Clone)]
pub struct PageInfo {
    /// 12-character id, stable for a page name.
    pub id: String,
    /// Name.
    pub name: String,
    /// Public URL of `/status`.
    pub url: String,
    /// Time zone.
    pub clock: PageClock,
}

/// A component with its effective status and uptime.
#[derive(Debug, Clone)]
pub struct Component {
    /// As stored.
    pub row: ComponentRow,
    /// Effective status.
    pub status: ComponentStatus,
    /// What the probes saw (none if no probe decided yet, or none runs).
    pub observed: Option<ComponentStatus>,
    /// Child ids, for a group.
    pub children: Vec<String>,
    /// One entry per day, oldest first ([`HISTORY_DAYS`]).
    pub days: Vec<DayUptime>,
    /// Last 30 days, basis points.
    pub uptime_30: Option<u32>,
    /// Last 90 days, basis points.
    pub uptime_90: Option<u32>,
}

/// Everything the page shows, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The page.
    pub page: Arc<PageInfo>,
    /// Unix ms of the newest change to anything shown.
    pub updated_at: i64,
    /// Every component by position, groups included.
    pub components: Vec<Component>,
    /// Recent incidents, newest first, every unresolved one included.
    pub incidents: Vec<IncidentRow>,
    /// Recent maintenances by window start, newest first.
    pub maintenances: Vec<IncidentRow>,
    /// The rollup.
    pub status: PageStatus,
    /// Increases with every published change (live updates compare it).
    pub version: u64,
}

impl Snapshot {
    /// A component by id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.row.id == id)
    }

    /// Incidents in investigating, identified or monitoring.
    pub fn unresolved(&self) -> impl Iterator<Item = &IncidentRow> {
        self.incidents
            .iter()
            .filter(|i| IncidentStatus::parse(&i.status).is_some_and(IncidentStatus::is_unresolved))
    }

    /// Maintenances still `scheduled`, soonest first.
    pub fn upcoming(&self) -> Vec<&IncidentRow> {
        let mut v: Vec<_> = self
            .maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Scheduled.as_str())
            .collect();
        v.sort_by_key(|m| m.scheduled_for);
        v
    }

    /// Maintenances in progress or verifying.
    pub fn active(&self) -> impl Iterator<Item = &IncidentRow> {
        self.maintenances.iter().filter(|m| {
            MaintenanceStatus::parse(&m.status).is_some_and(MaintenanceStatus::is_active)
        })
    }
}
