//! The status service: the one place that changes the page. It writes
//! through the store, recomputes every component's effective status
//! (probes, incidents and maintenance combined), moves maintenances on time,
//! and publishes an immutable [`Snapshot`] that readers (the page, the JSON,
//! live updates) take without touching the store.
//!
//! [`StatusService`] is one value split by concern, each module adding its
//! own methods: `incidents.rs`, `maintenance.rs`, `subscriptions.rs` (email;
//! visitor webhooks are in `crate::webhooks`), `alerts.rs`, `probes.rs`,
//! `publish.rs` (recompute and publish: every change the page shows ends there) with
//! `snapshot.rs` (what is published), and `scheduler.rs` (the background
//! tasks, owned until shutdown). This module holds the state and opens it.

mod alerts;
mod incidents;
mod maintenance;
mod probes;
mod publish;
mod scheduler;
mod snapshot;
mod subscriptions;

use std::sync::Arc;

use orinari_config::StatusSettings;
use orinari_store::{ComponentDef, Store};
use tokio::sync::{Mutex, watch};

use crate::clock::PageClock;
use crate::model::page_status;
use crate::notify::Notifier;
use crate::probe::{Prober, Target};
use crate::{StatusError, derived_id};

pub use incidents::{IncidentInput, UpdateInput};
pub use maintenance::MaintenanceInput;
pub use snapshot::{Component, PageInfo, Snapshot};

use probes::{Check, check};

/// The service; share it in an `Arc`.
pub struct StatusService {
    store: Store,
    page: Arc<PageInfo>,
    checks: Vec<Check>,
    connectivity: Option<Target>,
    prober: Prober,
    notifier: Notifier,
    snapshot: watch::Sender<Arc<Snapshot>>,
    writing: Mutex<()>,
    alerts: crate::alerts::Alerts,
    attempts: crate::webhooks::Attempts,
    leader: watch::Sender<bool>,
    lock: std::sync::Mutex<Option<orinari_store::LeaderLock>>,
}

impl StatusService {
    /// Define the configured components in the store, check every target,
    /// and build the first snapshot.
    pub async fn open(
        store: Store,
        settings: &StatusSettings,
        now: i64,
    ) -> Result<Self, StatusError> {
        let clock = PageClock::new(&settings.time_zone)?;
        let page = Arc::new(PageInfo {
            id: derived_id(&settings.page_name),
            name: settings.page_name.clone(),
            url: settings.page_url.clone(),
            clock,
        });
        let mut position = 0;
        let mut define = async |id: &str,
                                name: &str,
                                desc: Option<&String>,
                                group: Option<&str>,
                                is_group: bool| {
            position += 1;
            store
                .upsert_component(
                    &ComponentDef {
                        id: id.into(),
                        name: name.into(),
                        description: desc.cloned(),
                        position,
                        group_id: group.map(str::to_string),
                        is_group,
                        showcase: !is_group,
                    },
                    now,
                )
                .await
        };
        let mut groups: Vec<String> = Vec::new();
        let all = settings
            .components
            .iter()
            .chain(settings.checks.iter().map(|c| &c.component));
        for c in all {
            if let Some((gid, gname)) = &c.group
                && !groups.contains(gid)
            {
                groups.push(gid.clone());
                define(gid, gname, None, None, true).await?;
            }
            let gid = c.group.as_ref().map(|(g, _)| g.as_str());
            define(&c.id, &c.name, c.description.as_ref(), gid, false).await?;
        }
        let checks = settings
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| check(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        let connectivity = settings
            .connectivity_check
            .as_deref()
            .map(|u| Target::parse(u, None, None))
            .transpose()
            .map_err(|e| StatusError::invalid("status.connectivity_check", e))?;
        let notifier = Notifier::new(settings, &store);
        let empty = Arc::new(Snapshot {
            page: page.clone(),
            updated_at: now,
            components: Vec::new(),
            incidents: Vec::new(),
            maintenances: Vec::new(),
            status: page_status([], [], false),
            version: 0,
        });
        let single = store.backend() == orinari_store::Backend::Sqlite;
        let lock = store.leader_lock(
            "status",
            crate::leader::grace(crate::leader::ELECTION_EVERY),
        );
        let svc = Self {
            attempts: crate::webhooks::Attempts::default(),
            leader: watch::channel(single).0,
            lock: std::sync::Mutex::new(Some(lock)),
            prober: Prober::new(Some(store.clone())),
            store,
            page,
            checks,
            connectivity,
            notifier,
            snapshot: watch::channel(empty).0,
            writing: Mutex::new(()),
            alerts: crate::alerts::Alerts::new(settings.alerts.clone()),
        };
        svc.reconcile(now, None).await?;
        Ok(svc)
    }

    /// Whether this instance runs the singleton jobs now (always with
    /// SQLite; with PostgreSQL, while it holds the leader lock).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Changes of leadership (for other singleton jobs to follow).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn page(&self) -> &PageInfo {
        &self.page
    }

    pub(crate) fn attempts(&self) -> &crate::webhooks::Attempts {
        &self.attempts
    }

    pub(crate) fn visitor_webhooks(&self) -> Option<&crate::notify::Visitors> {
        self.notifier.visitors()
    }

    /// The notifier (its queue is drained by [`StatusService::run`]).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
