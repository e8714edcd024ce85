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
//! `snapshot.rs` (what is published), `scheduler.rs` (the background
//! tasks, owned until shutdown) and `reload.rs` (a new `[status]` applied
//! while running). This module holds the state and opens it.

mod alerts;
mod incidents;
mod maintenance;
mod probes;
mod publish;
mod reload;
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
use crate::probe::Prober;
use crate::{StatusError, derived_id};

pub use incidents::{IncidentInput, UpdateInput};
pub use maintenance::MaintenanceInput;
pub use reload::StatusReload;
pub use snapshot::{Component, PageInfo, Snapshot};

use probes::Probes;

/// The service; share it in an `Arc`.
pub struct StatusService {
    store: Store,
    page: Arc<PageInfo>,
    /// The checks and the connectivity check; the scheduler follows
    /// changes (a reload) by starting and stopping probe loops.
    probes: watch::Sender<Arc<Probes>>,
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
        let probes = Probes::of(settings)?;
        define(&store, settings, now).await?;
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
            probes: watch::channel(Arc::new(probes)).0,
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

/// Define the configured components (and their groups) in the store, in
/// config order; their statuses and history are kept. At start-up and on
/// each reload: a component no longer configured stays as it was.
async fn define(store: &Store, settings: &StatusSettings, now: i64) -> Result<(), StatusError> {
    let mut position = 0;
    let mut upsert =
        async |id: &str, name: &str, desc: Option<&String>, group: Option<&str>, is_group: bool| {
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
            upsert(gid, gname, None, None, true).await?;
        }
        let gid = c.group.as_ref().map(|(g, _)| g.as_str());
        upsert(&c.id, &c.name, c.description.as_ref(), gid, false).await?;
    }
    Ok(())
}
