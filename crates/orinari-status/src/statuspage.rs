//! Statuspage's public JSON (v2), field for field: every top-level key is
//! always present (`[]` when empty), timestamps carry milliseconds and the
//! page's UTC offset, and component ids are the configured slugs.

use orinari_store::IncidentRow;
use serde_json::{Value, json};

use crate::service::{Component, Snapshot};

/// `page{id,name,url,time_zone,updated_at}`.
pub fn page(s: &Snapshot) -> Value {
    json!({
        "id": s.page.id,
        "name": s.page.name,
        "url": s.page.url,
        "time_zone": s.page.clock.name(),
        "updated_at": s.page.clock.format(s.updated_at),
    })
}

/// `status{indicator,description}`.
pub fn status(s: &Snapshot) -> Value {
    json!({"indicator": s.status.indicator.as_str(), "description": s.status.description})
}

/// One component (a group carries `components`: its children's ids).
pub fn component(s: &Snapshot, c: &Component) -> Value {
    let clock = &s.page.clock;
    let mut v = json!({
        "id": c.row.id,
        "name": c.row.name,
        "status": c.status.as_str(),
        "created_at": clock.format(c.row.created_at),
        "updated_at": clock.format(c.row.updated_at),
        "position": c.row.position,
        "description": c.row.description,
        "showcase": c.row.showcase,
        "start_date": if c.row.is_group { Value::Null } else { Value::from(clock.date(c.row.created_at)) },
        "group_id": c.row.group_id,
        "page_id": s.page.id,
        "group": c.row.is_group,
        "only_show_if_degraded": false,
    });
    if c.row.is_group
        && let Some(o) = v.as_object_mut()
    {
        o.insert("components".into(), json!(c.children));
    }
    v
}

/// One incident or maintenance with its updates (newest first) and the
/// affected components in their current state.
pub fn incident(s: &Snapshot, i: &IncidentRow) -> Value {
    let clock = &s.page.clock;
    let t = |ms: Option<i64>| ms.map_or(Value::Null, |ms| Value::from(clock.format(ms)));
    let updates: Vec<Value> = i
        .updates
        .iter()
        .map(|u| {
            let affected = u
                .affected
                .as_deref()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
                .unwrap_or(Value::Null);
            json!({
                "id": u.id,
                "status": u.status,
                "body": u.body,
                "incident_id": i.id,
                "created_at": clock.format(u.created_at),
                "updated_at": clock.format(u.created_at),
                "display_at": clock.format(u.created_at),
                "affected_components": affected,
                "deliver_notifications": true,
                "custom_tweet": null,
                "tweet_id": null,
            })
        })
        .collect();
    let components: Vec<Value> = i
        .components
        .iter()
        .filter_map(|(id, _)| s.component(id))
        .map(|c| component(s, c))
        .collect();
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "created_at": clock.format(i.created_at),
        "updated_at": clock.format(i.updated_at),
        "monitoring_at": t(i.monitoring_at),
        "resolved_at": t(i.resolved_at),
        "impact": i.impact,
        "shortlink": format!("{}#{}", s.page.url, i.id),
        "started_at": clock.format(i.started_at),
        "page_id": s.page.id,
        "incident_updates": updates,
        "components": components,
    });
    if i.kind == "maintenance"
        && let Some(o) = v.as_object_mut()
    {
        o.insert("scheduled_for".into(), t(i.scheduled_for));
        o.insert("scheduled_until".into(), t(i.scheduled_until));
    }
    v
}

fn list<'a>(s: &Snapshot, items: impl IntoIterator<Item = &'a IncidentRow>) -> Vec<Value> {
    items.into_iter().map(|i| incident(s, i)).collect()
}

fn components(s: &Snapshot) -> Vec<Value> {
    s.components.iter().map(|c| component(s, c)).collect()
}

/// `/api/v2/summary.json`: all components, unresolved incidents, upcoming and
/// in-progress maintenances, and the rollup.
pub fn summary(s: &Snapshot) -> Value {
    let mut maint: Vec<&IncidentRow> = s.active().collect();
    maint.extend(s.upcoming());
    json!({
        "page": page(s),
        "components": components(s),
        "incidents": list(s, s.unresolved()),
        "scheduled_maintenances": list(s, maint),
        "status": status(s),
    })
}

/// `/api/v2/status.json`.
pub fn status_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "status": status(s)})
}

/// `/api/v2/components.json`.
pub fn components_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "components": components(s)})
}

/// `/api/v2/incidents.json`: the 50 most recent, and every unresolved one.
pub fn incidents_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "incidents": list(s, &s.incidents)})
}

/// `/api/v2/incidents/unresolved.json`.
pub fn unresolved_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "incidents": list(s, s.unresolved())})
}

/// `/api/v2/scheduled-maintenances.json`.
pub fn maintenances_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "scheduled_maintenances": list(s, &s.maintenances)})
}

/// `/api/v2/scheduled-maintenances/upcoming.json`.
pub fn upcoming_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "scheduled_maintenances": list(s, s.upcoming())})
}

/// `/api/v2/scheduled-maintenances/active.json`.
pub fn active_json(s: &Snapshot) -> Value {
    json!({"page": page(s), "scheduled_maintenances": list(s, s.active())})
}
