//! The status service: the one place that changes the page. It writes
//! through the store, recomputes every component's effective status
//! (probes, incidents and maintenance combined), moves maintenances on time,
//! and publishes an immutable [`Snapshot`] that readers (the page, the JSON,
//! live updates) take without touching the store.

use std::sync::Arc;
use std::time::Duration;

use orinari_config::{CheckSettings, StatusSettings};
use orinari_store::{ComponentDef, ComponentRow, IncidentRow, NewIncident, NewUpdate, Store};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

use crate::clock::PageClock;
use crate::model::{
    ComponentStatus, Impact, IncidentStatus, MaintenanceStatus, PageStatus, page_status,
};
use crate::notify::Notifier;
use crate::probe::{Prober, Target, Thresholds, Tracker};
use crate::uptime::{self, DayUptime};
use crate::{StatusError, derived_id, new_id};

/// Days of uptime history shown.
pub const HISTORY_DAYS: usize = 90;
/// Incidents and maintenances listed (plus every unresolved one).
const RECENT: i64 = 50;
/// How often maintenances are moved on time and other instances' writes read.
const TICK: Duration = Duration::from_secs(1);
/// How often the snapshot is rebuilt without a change (uptime moves on).
const REFRESH_EVERY: u32 = 15;

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

/// `POST /admin/v1/maintenances`.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceInput {
    /// Title.
    pub name: String,
    /// RFC 3339 (or a local time in the page's zone).
    pub scheduled_for: String,
    /// RFC 3339 (or a local time in the page's zone).
    pub scheduled_until: String,
    /// First update's message.
    pub message: String,
    /// Components under maintenance.
    pub components: Vec<String>,
}

struct Check {
    id: String,
    target: Target,
    interval: Duration,
    timeout: Duration,
    limits: Thresholds,
}

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

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Changes to the snapshot, for live updates.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
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

    /// Count a finished request for the alert rules (nothing without rules).
    pub fn record_request(&self, route: &str, status: u16, seconds: f64, now: i64) {
        self.alerts.record(route, status, seconds, now);
    }

    /// Evaluate the alert rules; notify (webhooks and `alert_emails`) about
    /// each that started or stopped firing, once across instances.
    pub async fn evaluate_alerts(&self, now: i64) -> Result<(), StatusError> {
        for (rule, reading) in self.alerts.changes(now) {
            let state = if reading.firing { "firing" } else { "resolved" };
            if self
                .store
                .claim(
                    &format!("status.alertrule.{}.{state}.{}", rule.id, now / 60_000),
                    &now.to_string(),
                )
                .await?
            {
                tracing::warn!(alert = %rule.name, state, value = reading.value, requests = reading.requests, "alert");
                self.notifier.notify(json!({
                    "event": format!("alert.{state}"),
                    "page": crate::webhooks::notice_page(&self.snapshot()),
                    "alert": {
                        "id": rule.id,
                        "name": rule.name,
                        "kind": match rule.kind {
                            orinari_config::AlertKind::ErrorRate => "error_rate",
                            orinari_config::AlertKind::LatencyP99 => "latency_p99",
                        },
                        "route": rule.route,
                        "threshold": rule.threshold,
                        "window_seconds": rule.window.as_secs(),
                        "value": reading.value,
                        "requests": reading.requests,
                    },
                }));
            }
        }
        Ok(())
    }

    /// Whether visitors can subscribe by email (`[status] smtp` is set).
    pub fn emails_enabled(&self) -> bool {
        self.notifier.smtp().is_some()
    }

    /// A visitor subscribes `email` to every component, or to `component`:
    /// the subscription is stored unconfirmed and a confirmation link is
    /// mailed (double opt-in). A second request for the same address within
    /// 10 minutes sends nothing more, so the form cannot be used to flood an
    /// inbox.
    pub async fn subscribe_email(
        &self,
        email: &str,
        component: Option<&str>,
        now: i64,
    ) -> Result<(), StatusError> {
        let Some(smtp) = self.notifier.smtp() else {
            return Err(StatusError::invalid(
                "email",
                "email notifications are not enabled on this page",
            ));
        };
        let email = email.trim().to_ascii_lowercase();
        if !crate::smtp::valid_address(&email) {
            return Err(StatusError::invalid(
                "email",
                format!("`{email}` is not an email address like name@example.org"),
            ));
        }
        let snap = self.snapshot();
        let components = match component.filter(|c| !c.is_empty()) {
            None => Vec::new(),
            Some(c) if snap.component(c).is_some() => vec![c.to_string()],
            Some(c) => {
                return Err(StatusError::invalid(
                    "component",
                    format!("no component `{c}`"),
                ));
            }
        };
        if self
            .store
            .pending_since(&email)
            .await?
            .is_some_and(|at| now - at < 600_000)
        {
            return Ok(());
        }
        let token = format!("{}{}{}", new_id(), new_id(), new_id());
        self.store
            .subscribe(&orinari_store::NewSubscription {
                id: new_id(),
                email: email.clone(),
                components,
                confirm_hash: token_hash(&token),
                unsubscribe_token: format!("{}{}{}", new_id(), new_id(), new_id()),
                at: now,
            })
            .await?;
        let url = &self.page.url;
        let body = format!(
            "Someone (hopefully you) asked to receive status notifications of {} at this address.\n\n\
             Confirm: {url}/subscriptions/confirm?token={token}\n\n\
             If it was not you, ignore this message: nothing will be sent.\n",
            self.page.name
        );
        let subject = format!("[{}] Confirm your subscription", self.page.name);
        crate::smtp::send(
            &smtp.relay,
            &crate::smtp::Mail {
                from: &smtp.from,
                to: &email,
                subject: &subject,
                body: &body,
            },
            Duration::from_secs(10),
        )
        .await
        .map_err(StatusError::Delivery)
    }

    /// Confirm a subscription by the token from its email; false when the
    /// token is unknown or already used.
    pub async fn confirm(&self, token: &str, now: i64) -> Result<bool, StatusError> {
        Ok(self
            .store
            .confirm_subscription(&token_hash(token), now)
            .await?)
    }

    /// End a subscription (email or webhook) by the token in every
    /// notification; false when unknown.
    pub async fn unsubscribe(&self, token: &str, now: i64) -> Result<bool, StatusError> {
        if token.is_empty() {
            return Ok(false);
        }
        if self.store.unsubscribe(token, now).await? {
            return Ok(true);
        }
        Ok(self.store.unsubscribe_webhook(token, now).await?)
    }

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

    /// Schedule a maintenance. Its status follows the clock from then on.
    pub async fn create_maintenance(
        &self,
        input: MaintenanceInput,
        now: i64,
    ) -> Result<IncidentRow, StatusError> {
        let name = required("name", &input.name)?;
        let message = required("message", &input.message)?;
        let clock = &self.page.clock;
        let from = clock.parse("scheduled_for", &input.scheduled_for)?;
        let until = clock.parse("scheduled_until", &input.scheduled_until)?;
        if until <= from {
            return Err(StatusError::invalid(
                "scheduled_until",
                "must be later than scheduled_for",
            ));
        }
        if until <= now {
            return Err(StatusError::invalid(
                "scheduled_until",
                "is already in the past",
            ));
        }
        let snap = self.snapshot();
        let pairs: Vec<(String, String)> = input
            .components
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    ComponentStatus::UnderMaintenance.as_str().to_string(),
                )
            })
            .collect();
        let components = self.component_statuses(&snap, &pairs, "components")?;
        let status = auto_status(MaintenanceStatus::Scheduled, from, until, now);
        let id = new_id();
        let _w = self.writing.lock().await;
        self.store
            .create_incident(&NewIncident {
                id: id.clone(),
                kind: "maintenance".into(),
                name: name.into(),
                status: status.as_str().into(),
                impact: Impact::Maintenance.as_str().into(),
                at: now,
                scheduled_for: Some(from),
                scheduled_until: Some(until),
                components,
                update: NewUpdate {
                    id: new_id(),
                    status: status.as_str().into(),
                    body: message.into(),
                    at: now,
                    affected: None,
                    components: Vec::new(),
                },
            })
            .await?;
        self.reconcile_locked(now, None).await?;
        self.published(&id, "maintenance.created").await
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
            let to = MaintenanceStatus::parse(&input.status).ok_or_else(|| {
                StatusError::invalid(
                    "status",
                    format!(
                        "`{}` must be one of scheduled, in_progress, verifying, completed",
                        input.status
                    ),
                )
            })?;
            let from =
                MaintenanceStatus::parse(&current.status).unwrap_or(MaintenanceStatus::Scheduled);
            if to.step() < from.step() {
                return Err(StatusError::invalid(
                    "status",
                    format!(
                        "a maintenance moves forward only: it is {} already",
                        from.as_str()
                    ),
                ));
            }
            to.as_str()
        } else {
            let to = IncidentStatus::parse(&input.status).ok_or_else(|| {
                StatusError::invalid(
                    "status",
                    format!(
                        "`{}` must be one of investigating, identified, monitoring, resolved, postmortem",
                        input.status
                    ),
                )
            })?;
            let from =
                IncidentStatus::parse(&current.status).unwrap_or(IncidentStatus::Investigating);
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
            to.as_str()
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

    async fn published(&self, id: &str, event: &str) -> Result<IncidentRow, StatusError> {
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

    fn component_statuses(
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

    /// Move maintenances on time: `scheduled` → `in_progress` at
    /// `scheduled_for`, → `completed` at `scheduled_until` (a `verifying`
    /// maintenance too). Each automatic update has an id derived from the
    /// maintenance and the status, so two instances write it once.
    pub async fn tick(&self, now: i64) -> Result<bool, StatusError> {
        self.remind(now).await?;
        let snap = self.snapshot();
        let mut moved = false;
        for m in &snap.maintenances {
            let (Some(from), Some(until)) = (m.scheduled_for, m.scheduled_until) else {
                continue;
            };
            let current =
                MaintenanceStatus::parse(&m.status).unwrap_or(MaintenanceStatus::Scheduled);
            let target = auto_status(current, from, until, now);
            if target == current {
                continue;
            }
            let body = match target {
                MaintenanceStatus::InProgress => {
                    "Scheduled maintenance is now in progress. We will provide updates as necessary."
                }
                _ => "The scheduled maintenance has been completed.",
            };
            let _w = self.writing.lock().await;
            let written = self
                .store
                .add_incident_update(
                    &m.id,
                    &NewUpdate {
                        id: derived_id(&format!("{}:{}", m.id, target.as_str())),
                        status: target.as_str().into(),
                        body: body.into(),
                        at: now,
                        affected: None,
                        components: Vec::new(),
                    },
                )
                .await;
            match written {
                Ok(()) => {
                    tracing::info!(maintenance = %m.id, status = target.as_str(), "maintenance moved on time");
                    moved = true;
                    self.reconcile_locked(now, None).await?;
                    drop(_w);
                    let _ = self.published(&m.id, "maintenance.updated").await;
                }
                // Another instance wrote the same automatic update first.
                Err(e) => {
                    tracing::debug!(maintenance = %m.id, error = %e, "automatic update not written")
                }
            }
        }
        Ok(moved)
    }

    /// A probe decided what a component looks like. When that changes the
    /// component's status, subscribers are alerted once, whichever of several
    /// instances saw it first (deduplicated per component, status and minute).
    pub async fn observe(
        &self,
        component: &str,
        status: ComponentStatus,
        now: i64,
    ) -> Result<(), StatusError> {
        let before = self.snapshot().component(component).map(|c| c.status);
        self.reconcile(now, Some((component, status))).await?;
        let snap = self.snapshot();
        let Some(c) = snap.component(component) else {
            return Ok(());
        };
        if before.is_some_and(|b| b != c.status)
            && self
                .store
                .claim(
                    &format!("status.alert.{component}.{}.{}", c.status, now / 60_000),
                    &now.to_string(),
                )
                .await?
        {
            self.notifier.notify(json!({
                "event": "component.status_changed",
                "page": crate::webhooks::notice_page(&snap),
                "component": crate::statuspage::component(&snap, c),
                "old_status": before.map(ComponentStatus::as_str),
                "new_status": c.status.as_str(),
            }));
        }
        Ok(())
    }

    /// Reminders of scheduled maintenance, 48 hours and 1 hour ahead, each
    /// sent once across instances (only the nearer one when both are due).
    async fn remind(&self, now: i64) -> Result<(), StatusError> {
        const HOUR: i64 = 3_600_000;
        let snap = self.snapshot();
        for m in snap.upcoming() {
            let Some(from) = m.scheduled_for else {
                continue;
            };
            if now >= from {
                continue;
            }
            let due = if now >= from - HOUR {
                // The 48-hour one is no longer news.
                self.store
                    .claim(&format!("status.remind.{}.48h", m.id), &now.to_string())
                    .await?;
                Some((1, "1h"))
            } else if now >= from - 48 * HOUR {
                Some((48, "48h"))
            } else {
                None
            };
            let Some((hours, label)) = due else { continue };
            if self
                .store
                .claim(&format!("status.remind.{}.{label}", m.id), &now.to_string())
                .await?
            {
                self.notifier.notify(json!({
                    "event": "maintenance.reminder",
                    "hours_before": hours,
                    "page": crate::webhooks::notice_page(&snap),
                    "scheduled_maintenance": crate::statuspage::incident(&snap, m),
                }));
            }
        }
        Ok(())
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

    async fn reconcile_locked(
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

    /// Run the probes, move maintenances on time and refresh the snapshot
    /// until `stop` turns true; owns every task it starts and deliver the
    /// notifications queue. With several instances on one PostgreSQL store,
    /// only the elected leader ([`StatusService::is_leader`]) probes, moves
    /// maintenances, sends reminders and prunes; every instance refreshes
    /// its snapshot from the store and delivers the notifications of the
    /// changes it made itself (each decided once across instances).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let lock = self.lock.lock().ok().and_then(|mut l| l.take());
        if let Some(lock) = lock {
            let leader = self.leader.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                crate::leader::run(lock, leader, crate::leader::ELECTION_EVERY, stop).await;
            });
        }
        for i in 0..self.checks.len() {
            let svc = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move { svc.probe_loop(i, stop).await });
        }
        if let Some(queue) = self.notifier.take_queue() {
            let notifier = self.notifier.clone();
            let stop = stop.clone();
            tasks.spawn(async move { notifier.deliver(queue, stop).await });
        }
        let mut n = 0u32;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let now = orinari_store::now_ms();
            n += 1;
            let leads = self.is_leader();
            if leads && let Err(e) = self.tick(now).await {
                tracing::warn!(error = %e, "status tick failed");
            }
            // Raw probe results are kept 14 days (daily rollups 400): pruned
            // at start and hourly.
            if leads
                && n % 3600 == 1
                && let Err(e) = self
                    .store
                    .prune(now, orinari_store::Retention::default())
                    .await
            {
                tracing::warn!(error = %e, "probe history pruning failed");
            }
            if !self.alerts.rules().is_empty()
                && n.is_multiple_of(5)
                && let Err(e) = self.evaluate_alerts(now).await
            {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
            if n.is_multiple_of(REFRESH_EVERY)
                && let Err(e) = self.reconcile(now, None).await
            {
                tracing::warn!(error = %e, "status refresh failed");
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn probe_loop(&self, i: usize, mut stop: watch::Receiver<bool>) {
        let Some(c) = self.checks.get(i) else { return };
        let mut tracker = Tracker::new(c.limits);
        if let Some(s) = self.snapshot().component(&c.id).and_then(|c| c.observed) {
            tracker.commit(s);
        }
        let mut every = tokio::time::interval(c.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !self.is_leader() {
                continue;
            }
            let a = self.prober.attempt(&c.target, c.timeout).await;
            let now = orinari_store::now_ms();
            let latency_ms = i64::try_from(a.latency.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = self
                .store
                .record_probe(orinari_store::ProbeResult {
                    check_id: &c.id,
                    at: now,
                    up: a.ok,
                    latency_ms,
                })
                .await
            {
                tracing::warn!(check = %c.id, error = %e, "cannot record a probe result");
            }
            let Some(next) = tracker.propose(&a) else {
                continue;
            };
            if next == ComponentStatus::MajorOutage && !self.connected(c.timeout).await {
                tracing::warn!(check = %c.id, "the check failed, but so did the self-connectivity check: not declaring it down");
                continue;
            }
            tracing::info!(check = %c.id, status = next.as_str(), latency_ms, error = a.error.as_deref().unwrap_or(""), "check changed");
            tracker.commit(next);
            if let Err(e) = self.observe(&c.id, next, now).await {
                tracing::warn!(check = %c.id, error = %e, "cannot record a status change");
            }
        }
    }

    /// Whether this instance can reach the network at all (the configured
    /// `connectivity_check`); with none configured, assumed.
    async fn connected(&self, timeout: Duration) -> bool {
        match &self.connectivity {
            Some(t) => self.prober.attempt(t, timeout).await.ok,
            None => true,
        }
    }

    /// Whether a check's component is up, for `orinari_probe_up{check}`:
    /// `(check id, up)` for every check that has decided (degraded is up).
    pub fn probe_states(&self) -> Vec<(String, bool)> {
        let snap = self.snapshot();
        self.checks
            .iter()
            .filter_map(|c| {
                let s = snap.component(&c.id)?.observed?;
                Some((c.id.clone(), !s.is_down()))
            })
            .collect()
    }
}

fn check(i: usize, c: &CheckSettings) -> Result<Check, StatusError> {
    let target = Target::parse(&c.url, c.expect_status, c.keyword.clone())
        .map(|t| t.with_json(c.json.clone()))
        .map_err(|e| StatusError::invalid(&format!("status.checks[{i}].url"), e))?;
    Ok(Check {
        id: c.component.id.clone(),
        target,
        interval: c.interval,
        timeout: c.timeout,
        limits: Thresholds {
            failures: c.failure_threshold,
            successes: c.success_threshold,
            degraded_after: c.degraded_after,
        },
    })
}

/// Where the clock puts a maintenance: it only ever moves forward.
pub fn auto_status(
    current: MaintenanceStatus,
    from: i64,
    until: i64,
    now: i64,
) -> MaintenanceStatus {
    let by_time = if now >= until {
        MaintenanceStatus::Completed
    } else if now >= from {
        MaintenanceStatus::InProgress
    } else {
        MaintenanceStatus::Scheduled
    };
    if by_time.step() > current.step() {
        by_time
    } else {
        current
    }
}

/// SHA-256 (hex) of a subscription token: only this is stored.
fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, StatusError> {
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
