//! The status model end to end over a real store: the Statuspage JSON
//! against a fixture of captured shapes, every incident and maintenance
//! transition (refused ones too), maintenance moving on time by itself across
//! a daylight-saving change, and uptime over a 23-hour day.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::collections::BTreeSet;

use common::{ms, service};
use orinari_status::model::ComponentStatus;
use orinari_status::{
    IncidentInput, MaintenanceInput, PageClock, StatusError, UpdateInput, statuspage,
};
use serde_json::Value;

const PAGE: &str = r#"
[status]
page_name = "Acme"
page_url = "https://status.acme.test/status"
time_zone = "America/New_York"
builtin_checks = false
[[status.components]]
name = "API"
group = "Core"
[[status.components]]
name = "Web app"
group = "Core"
[[status.components]]
name = "Database"
"#;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/statuspage-v2.json")).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn incident(name: &str, components: &[(&str, &str)]) -> IncidentInput {
    IncidentInput {
        name: name.into(),
        status: None,
        impact: None,
        message: "We are looking into it.".into(),
        components: components
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

fn update(status: &str, components: &[(&str, &str)]) -> UpdateInput {
    UpdateInput {
        status: status.into(),
        message: format!("Now {status}."),
        components: components
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

fn field(e: StatusError) -> String {
    match e {
        StatusError::Invalid { field, .. } => field,
        other => panic!("expected a field error, got {other}"),
    }
}

#[tokio::test]
async fn json_matches_the_statuspage_fixture() {
    let fx = fixture();
    let t0 = ms("2026-06-01T12:00:00Z");
    let svc = service(PAGE, t0).await;
    let inc = svc
        .create_incident(incident("API errors", &[("api", "major_outage")]), t0)
        .await
        .unwrap();
    svc.add_update(
        "incident",
        &inc.id,
        update("monitoring", &[("api", "degraded_performance")]),
        t0 + 60_000,
    )
    .await
    .unwrap();
    svc.create_maintenance(
        MaintenanceInput {
            name: "Database upgrade".into(),
            scheduled_for: "2026-06-03T01:00:00Z".into(),
            scheduled_until: "2026-06-03T03:00:00Z".into(),
            message: "Upgrading.".into(),
            components: vec!["database".into()],
        },
        t0,
    )
    .await
    .unwrap();
    let snap = svc.snapshot();

    // Every endpoint has exactly its top-level keys.
    let endpoints = [
        ("summary.json", statuspage::summary(&snap)),
        ("status.json", statuspage::status_json(&snap)),
        ("components.json", statuspage::components_json(&snap)),
        ("incidents.json", statuspage::incidents_json(&snap)),
        (
            "incidents/unresolved.json",
            statuspage::unresolved_json(&snap),
        ),
        (
            "scheduled-maintenances.json",
            statuspage::maintenances_json(&snap),
        ),
        (
            "scheduled-maintenances/upcoming.json",
            statuspage::upcoming_json(&snap),
        ),
        (
            "scheduled-maintenances/active.json",
            statuspage::active_json(&snap),
        ),
    ];
    for (name, body) in &endpoints {
        let want: BTreeSet<String> = fx["endpoints"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys(body), want, "{name}");
        assert_eq!(keys(&body["page"]), keys(&fx["page"]), "{name} page");
    }
    let summary = &endpoints[0].1;
    // Empty lists are [] (never absent): nothing is active yet.
    assert_eq!(
        endpoints[7].1["scheduled_maintenances"],
        serde_json::json!([])
    );

    // Objects: the same keys as the captured ones.
    let comps = summary["components"].as_array().unwrap();
    let core = comps.iter().find(|c| c["id"] == "core").unwrap();
    assert_eq!(keys(core), keys(&fx["group"]));
    assert_eq!(core["components"], serde_json::json!(["api", "web-app"]));
    let api = comps.iter().find(|c| c["id"] == "api").unwrap();
    assert_eq!(keys(api), keys(&fx["component"]));
    assert_eq!(api["group_id"], "core");
    assert_eq!(api["status"], "degraded_performance");
    assert_eq!(
        core["status"], "degraded_performance",
        "a group shows its worst child"
    );
    let inc = &summary["incidents"][0];
    assert_eq!(keys(inc), keys(&fx["incident"]));
    assert_eq!(inc["impact"], "critical", "derived from major_outage");
    assert_eq!(inc["status"], "monitoring");
    assert_eq!(
        keys(&inc["incident_updates"][0]),
        keys(&fx["incident_update"])
    );
    let updates = inc["incident_updates"].as_array().unwrap();
    assert_eq!(updates[0]["status"], "monitoring", "newest first");
    assert_eq!(updates[1]["status"], "investigating");
    assert_eq!(
        keys(&updates[0]["affected_components"][0]),
        keys(&fx["incident_update"]["affected_components"][0])
    );
    assert_eq!(
        updates[0]["affected_components"][0]["old_status"],
        "major_outage"
    );
    assert_eq!(
        updates[0]["affected_components"][0]["new_status"],
        "degraded_performance"
    );
    assert_eq!(updates[1]["affected_components"][0]["code"], "api");
    assert_eq!(keys(&inc["components"][0]), keys(&fx["component"]));
    let m = &summary["scheduled_maintenances"][0];
    assert_eq!(keys(m), keys(&fx["scheduled_maintenance"]));
    assert_eq!(m["scheduled_for"], "2026-06-02T21:00:00.000-04:00");
    assert_eq!(m["impact"], "maintenance");
    assert_eq!(m["status"], "scheduled");

    // Enumerations and formats.
    let within = |v: &Value, e: &str| fx["enums"][e].as_array().unwrap().iter().any(|x| x == v);
    for c in comps {
        assert!(within(&c["status"], "component.status"), "{c}");
        assert_eq!(c["page_id"], summary["page"]["id"]);
    }
    assert!(within(&summary["status"]["indicator"], "status.indicator"));
    assert_eq!(summary["status"]["indicator"], "critical");
    assert_eq!(summary["status"]["description"], "Major System Outage");
    let id = summary["page"]["id"].as_str().unwrap();
    assert!(
        id.len() == 12
            && id
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    assert_eq!(summary["page"]["time_zone"], "America/New_York");
    assert_eq!(inc["created_at"], "2026-06-01T08:00:00.000-04:00");
    assert_eq!(api["start_date"], "2026-06-01");
}

#[tokio::test]
async fn every_incident_transition() {
    let t = ms("2026-06-01T12:00:00Z");
    let svc = service(PAGE, t).await;
    let status = |id: &str| svc.snapshot().component(id).unwrap().status;
    let inc = svc
        .create_incident(incident("Slow API", &[("api", "partial_outage")]), t)
        .await
        .unwrap();
    assert_eq!(inc.status, "investigating");
    assert_eq!(status("api"), ComponentStatus::PartialOutage);
    assert_eq!(svc.snapshot().status.description, "Partial System Outage");
    let mut at = t;
    for step in [
        "identified",
        "monitoring",
        "investigating",
        "identified",
        "monitoring",
    ] {
        at += 1000;
        let i = svc
            .add_update("incident", &inc.id, update(step, &[]), at)
            .await
            .unwrap();
        assert_eq!(i.status, step);
        assert!(i.resolved_at.is_none());
    }
    assert_eq!(
        status("api"),
        ComponentStatus::PartialOutage,
        "unresolved keeps the outage"
    );
    // Postmortem only after resolution.
    assert_eq!(
        field(
            svc.add_update("incident", &inc.id, update("postmortem", &[]), at)
                .await
                .unwrap_err()
        ),
        "status"
    );
    let resolved = svc
        .add_update("incident", &inc.id, update("resolved", &[]), at + 1000)
        .await
        .unwrap();
    assert_eq!(resolved.resolved_at, Some(at + 1000));
    assert_eq!(
        resolved.monitoring_at,
        Some(t + 2000),
        "first time monitoring"
    );
    assert_eq!(
        status("api"),
        ComponentStatus::Operational,
        "resolution releases it"
    );
    assert_eq!(svc.snapshot().status.description, "All Systems Operational");
    assert_eq!(svc.snapshot().unresolved().count(), 0);
    let pm = svc
        .add_update("incident", &inc.id, update("postmortem", &[]), at + 2000)
        .await
        .unwrap();
    assert_eq!((pm.status.as_str(), pm.updates.len()), ("postmortem", 8));
    // Final: no way back.
    for back in ["resolved", "investigating"] {
        assert_eq!(
            field(
                svc.add_update("incident", &inc.id, update(back, &[]), at + 3000)
                    .await
                    .unwrap_err()
            ),
            "status"
        );
    }
    // Bad input names its field.
    assert_eq!(
        field(svc.create_incident(incident("", &[]), t).await.unwrap_err()),
        "name"
    );
    assert_eq!(
        field(
            svc.create_incident(incident("x", &[("nope", "major_outage")]), t)
                .await
                .unwrap_err()
        ),
        "components.nope"
    );
    assert_eq!(
        field(
            svc.create_incident(incident("x", &[("api", "down")]), t)
                .await
                .unwrap_err()
        ),
        "components.api"
    );
    let mut bad = incident("x", &[]);
    bad.impact = Some("huge".into());
    assert_eq!(
        field(svc.create_incident(bad, t).await.unwrap_err()),
        "impact"
    );
    assert_eq!(
        field(
            svc.add_update("incident", &inc.id, update("fixed", &[]), t)
                .await
                .unwrap_err()
        ),
        "status"
    );
    assert!(matches!(
        svc.add_update("incident", "missing", update("resolved", &[]), t)
            .await,
        Err(StatusError::NotFound { .. })
    ));
    assert!(matches!(
        svc.add_update("maintenance", &inc.id, update("completed", &[]), t)
            .await,
        Err(StatusError::NotFound { .. })
    ));
}

#[tokio::test]
async fn maintenance_moves_on_time_and_only_once_across_instances() {
    let t = ms("2026-06-01T12:00:00Z");
    let store = common::store().await;
    let settings = common::settings(PAGE);
    let a = orinari_status::StatusService::open(store.clone(), &settings, t)
        .await
        .unwrap();
    let b = orinari_status::StatusService::open(store, &settings, t)
        .await
        .unwrap();
    let m = a
        .create_maintenance(
            MaintenanceInput {
                name: "Failover drill".into(),
                scheduled_for: "2026-06-01T13:00:00Z".into(),
                scheduled_until: "2026-06-01T15:00:00Z".into(),
                message: "We will switch databases.".into(),
                components: vec!["database".into()],
            },
            t,
        )
        .await
        .unwrap();
    assert_eq!(m.status, "scheduled");
    assert_eq!(a.snapshot().upcoming().len(), 1);
    b.reconcile(t, None).await.unwrap();
    // Not yet.
    assert!(!a.tick(ms("2026-06-01T12:59:59.999Z")).await.unwrap());
    // Both instances tick at the start: one update is written.
    let start = ms("2026-06-01T13:00:00Z");
    let (ra, rb) = tokio::join!(a.tick(start), b.tick(start));
    assert!(ra.unwrap() ^ rb.unwrap(), "exactly one instance moved it");
    a.reconcile(start, None).await.unwrap();
    let snap = a.snapshot();
    let now = snap.maintenances.iter().find(|x| x.id == m.id).unwrap();
    assert_eq!(now.status, "in_progress");
    assert_eq!(now.updates.len(), 2);
    assert_eq!(
        snap.component("database").unwrap().status,
        ComponentStatus::UnderMaintenance
    );
    assert_eq!(snap.status.description, "Service Under Maintenance");
    assert_eq!(snap.status.indicator.as_str(), "none");
    assert_eq!(snap.active().count(), 1);
    // A probe failure during maintenance does not show as an outage.
    a.observe("database", ComponentStatus::MajorOutage, start + 1000)
        .await
        .unwrap();
    assert_eq!(
        a.snapshot().component("database").unwrap().status,
        ComponentStatus::UnderMaintenance
    );
    a.observe("database", ComponentStatus::Operational, start + 2000)
        .await
        .unwrap();
    // The operator moves it to verifying; backwards is refused.
    a.add_update("maintenance", &m.id, update("verifying", &[]), start + 3000)
        .await
        .unwrap();
    assert_eq!(
        field(
            a.add_update("maintenance", &m.id, update("scheduled", &[]), start + 4000)
                .await
                .unwrap_err()
        ),
        "status"
    );
    assert!(
        !a.tick(ms("2026-06-01T14:00:00Z")).await.unwrap(),
        "verifying is not undone"
    );
    let end = ms("2026-06-01T15:00:00Z");
    assert!(a.tick(end).await.unwrap());
    let snap = a.snapshot();
    let done = snap.maintenances.iter().find(|x| x.id == m.id).unwrap();
    assert_eq!(
        (done.status.as_str(), done.resolved_at),
        ("completed", Some(end))
    );
    assert_eq!(
        done.updates
            .iter()
            .map(|u| u.status.as_str())
            .collect::<Vec<_>>(),
        ["completed", "verifying", "in_progress", "scheduled"]
    );
    assert_eq!(
        snap.component("database").unwrap().status,
        ComponentStatus::Operational
    );
    assert!(!a.tick(end + 1000).await.unwrap());
    // Windows must make sense.
    let bad = |f: &str, u: &str| MaintenanceInput {
        name: "x".into(),
        scheduled_for: f.into(),
        scheduled_until: u.into(),
        message: "x".into(),
        components: vec![],
    };
    assert_eq!(
        field(
            a.create_maintenance(bad("2026-06-02T10:00:00Z", "2026-06-02T09:00:00Z"), t)
                .await
                .unwrap_err()
        ),
        "scheduled_until"
    );
    assert_eq!(
        field(
            a.create_maintenance(bad("tomorrow", "2026-06-02T09:00:00Z"), t)
                .await
                .unwrap_err()
        ),
        "scheduled_for"
    );
    assert_eq!(
        field(
            a.create_maintenance(bad("2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"), t)
                .await
                .unwrap_err()
        ),
        "scheduled_until"
    );
}

#[tokio::test]
async fn maintenance_across_the_spring_daylight_saving_change() {
    // New York springs forward at 2026-03-08 02:00 EST → 03:00 EDT.
    let t = ms("2026-03-01T12:00:00Z");
    let svc = service(PAGE, t).await;
    // Local times without an offset are read in the page's zone.
    let m = svc
        .create_maintenance(
            MaintenanceInput {
                name: "Night work".into(),
                scheduled_for: "2026-03-08T01:30:00".into(),
                scheduled_until: "2026-03-08T03:30:00".into(),
                message: "Two local hours, one real hour.".into(),
                components: vec!["api".into()],
            },
            t,
        )
        .await
        .unwrap();
    let (from, until) = (m.scheduled_for.unwrap(), m.scheduled_until.unwrap());
    assert_eq!(
        from,
        ms("2026-03-08T06:30:00Z"),
        "01:30 EST is stored in UTC"
    );
    assert_eq!(
        until,
        ms("2026-03-08T07:30:00Z"),
        "03:30 EDT is stored in UTC"
    );
    assert_eq!(until - from, 3_600_000);
    let json = statuspage::incident(&svc.snapshot(), &m);
    assert_eq!(json["scheduled_for"], "2026-03-08T01:30:00.000-05:00");
    assert_eq!(json["scheduled_until"], "2026-03-08T03:30:00.000-04:00");
    // It starts and ends at those instants, by itself.
    assert!(!svc.tick(from - 1).await.unwrap());
    assert!(svc.tick(from).await.unwrap());
    assert_eq!(
        svc.snapshot().component("api").unwrap().status,
        ComponentStatus::UnderMaintenance
    );
    assert!(!svc.tick(until - 1).await.unwrap());
    assert!(svc.tick(until).await.unwrap());
    assert_eq!(
        svc.snapshot().component("api").unwrap().status,
        ComponentStatus::Operational
    );

    // A local time the clocks skip, or pass twice, is refused rather than guessed.
    let input = |f: &str, u: &str| MaintenanceInput {
        name: "x".into(),
        scheduled_for: f.into(),
        scheduled_until: u.into(),
        message: "x".into(),
        components: vec![],
    };
    let e = svc
        .create_maintenance(input("2026-03-08T02:30:00", "2026-03-08T04:00:00"), t)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_eq!(field(e), "scheduled_for");
    let e = svc
        .create_maintenance(input("2026-10-31T23:00:00", "2026-11-01T01:30:00"), t)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("happens twice"), "{e}");
    assert_eq!(field(e), "scheduled_until");
    // With an offset it is exact.
    let ok = svc
        .create_maintenance(input("2026-10-31T23:00:00", "2026-11-01T01:30:00-05:00"), t)
        .await
        .unwrap();
    assert_eq!(ok.scheduled_until, Some(ms("2026-11-01T06:30:00Z")));
}

#[test]
fn local_days_are_23_and_25_hours_long_across_daylight_saving() {
    let c = PageClock::new("America/New_York").unwrap();
    let days = c.days(ms("2026-03-09T12:00:00Z"), 3);
    let lengths: Vec<(String, i64)> = days
        .iter()
        .map(|(d, a, b)| (d.clone(), (b - a) / 3_600_000))
        .collect();
    assert_eq!(
        lengths,
        [
            ("2026-03-07".into(), 24),
            ("2026-03-08".into(), 23),
            ("2026-03-09".into(), 24)
        ]
    );
    let days = c.days(ms("2026-11-01T23:00:00Z"), 1);
    assert_eq!(
        (days[0].0.as_str(), (days[0].2 - days[0].1) / 3_600_000),
        ("2026-11-01", 25)
    );
    // Uptime over the short day: down the whole day is 23 hours down.
    let day = c.days(ms("2026-03-08T23:00:00Z"), 1);
    let u = orinari_status::uptime::daily(
        &[(day[0].1 - 1, ComponentStatus::MajorOutage)],
        &[],
        &day,
        day[0].2 + 1,
    );
    assert_eq!(u[0].down_ms, 23 * 3_600_000);
}

#[tokio::test]
async fn uptime_is_time_based_and_rounded_down() {
    let day0 = ms("2026-06-01T04:00:00Z"); // local midnight in New York (EDT)
    let svc = service(PAGE, day0).await;
    svc.observe("api", ComponentStatus::Operational, day0)
        .await
        .unwrap();
    svc.observe("api", ComponentStatus::MajorOutage, day0 + 3_600_000)
        .await
        .unwrap();
    svc.observe(
        "api",
        ComponentStatus::Operational,
        day0 + 3_600_000 + 9_000,
    )
    .await
    .unwrap();
    svc.reconcile(day0 + 86_400_000 - 1, None).await.unwrap();
    let snap = svc.snapshot();
    let api = snap.component("api").unwrap();
    let today = api.days.last().unwrap();
    assert_eq!(today.date, "2026-06-01");
    assert_eq!(today.down_ms, 9_000);
    // 9 s of 24 h = 99.98958…% → 99.98, never 100.
    assert_eq!(today.basis_points(), Some(9998));
    assert_eq!(api.uptime_90, Some(9998));
    assert_eq!(api.days.len(), 90);
    assert_eq!(api.days[0].basis_points(), None, "no data is not uptime");
    // A component nobody observed has no uptime yet.
    assert_eq!(snap.component("web-app").unwrap().uptime_90, None);
}
