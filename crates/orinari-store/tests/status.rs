//! The status page's records on both real backends: an SQLite file and a
//! fresh PostgreSQL database (`ORINARI_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::future::Future;

use orinari_store::{ComponentDef, NewIncident, NewUpdate, Store, StoreError};
use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir =
        std::env::temp_dir().join(format!("orinari-status-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&format!("sqlite://{}/s.db", dir.display()))
        .await
        .unwrap();
    test(store.clone()).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();

    let name = format!("orinari_s_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL is reachable (make test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let store = Store::open(&format!("{base}/{name}")).await.unwrap();
    test(store.clone()).await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

fn def(id: &str, position: i64, group: Option<&str>) -> ComponentDef {
    ComponentDef {
        id: id.into(),
        name: format!("Name {id}"),
        description: None,
        position,
        group_id: group.map(str::to_string),
        is_group: false,
        showcase: true,
    }
}

#[tokio::test]
async fn components_keep_their_status_and_history() {
    on_both(|s| async move {
        s.upsert_component(&def("api", 2, Some("core")), 1_000)
            .await
            .unwrap();
        s.upsert_component(&def("db", 1, None), 1_000)
            .await
            .unwrap();
        s.set_component_status("api", "major_outage", Some("major_outage"), 2_000)
            .await
            .unwrap();
        // Redefining keeps the status and the creation time.
        let mut again = def("api", 3, None);
        again.name = "API".into();
        s.upsert_component(&again, 9_000).await.unwrap();
        let c = s.components().await.unwrap();
        assert_eq!(
            c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["db", "api"]
        );
        let api = &c[1];
        assert_eq!(
            (api.name.as_str(), api.status.as_str()),
            ("API", "major_outage")
        );
        assert_eq!(api.observed.as_deref(), Some("major_outage"));
        assert_eq!(
            (api.created_at, api.updated_at, api.group_id.clone()),
            (1_000, 2_000, None)
        );
        s.set_component_status("api", "operational", None, 3_000)
            .await
            .unwrap();
        s.set_component_status("api", "partial_outage", None, 5_000)
            .await
            .unwrap();
        // The status in force at 2_500 comes first, then later changes.
        let h = s.component_history("api", 2_500).await.unwrap();
        assert_eq!(
            h,
            vec![
                (2_000, "major_outage".to_string()),
                (3_000, "operational".to_string()),
                (5_000, "partial_outage".to_string())
            ]
        );
        assert_eq!(
            s.components().await.unwrap()[1].observed.as_deref(),
            Some("major_outage"),
            "observed is kept when not given"
        );
        assert!(matches!(
            s.set_component_status("nope", "operational", None, 1).await,
            Err(StoreError::Invalid(_))
        ));
    })
    .await;
}

fn update(id: &str, status: &str, at: i64) -> NewUpdate {
    NewUpdate {
        id: id.into(),
        status: status.into(),
        body: format!("{status} body"),
        at,
        affected: None,
        components: Vec::new(),
    }
}

#[tokio::test]
async fn incidents_and_updates() {
    on_both(|s| async move {
        s.upsert_component(&def("api", 1, None), 0).await.unwrap();
        s.create_incident(&NewIncident {
            id: "inc1".into(),
            kind: "incident".into(),
            name: "API errors".into(),
            status: "investigating".into(),
            impact: "major".into(),
            at: 10_000,
            scheduled_for: None,
            scheduled_until: None,
            components: vec![("api".into(), "major_outage".into())],
            update: NewUpdate {
                affected: Some(r#"[{"code":"api"}]"#.into()),
                ..update("u1", "investigating", 10_000)
            },
        })
        .await
        .unwrap();
        s.add_incident_update(
            "inc1",
            &NewUpdate {
                components: vec![("api".into(), "partial_outage".into())],
                ..update("u2", "monitoring", 20_000)
            },
        )
        .await
        .unwrap();
        s.add_incident_update("inc1", &update("u3", "investigating", 25_000))
            .await
            .unwrap();
        s.add_incident_update("inc1", &update("u4", "monitoring", 27_000))
            .await
            .unwrap();
        s.add_incident_update("inc1", &update("u5", "resolved", 30_000))
            .await
            .unwrap();
        let i = s.incident("inc1").await.unwrap().unwrap();
        assert_eq!(i.status, "resolved");
        // The first time each state was reached.
        assert_eq!(
            (i.monitoring_at, i.resolved_at),
            (Some(20_000), Some(30_000))
        );
        assert_eq!(i.updated_at, 30_000);
        assert_eq!(
            i.components,
            vec![("api".to_string(), "partial_outage".to_string())]
        );
        assert_eq!(
            i.updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            ["u5", "u4", "u3", "u2", "u1"],
            "newest first"
        );
        assert_eq!(
            i.updates[4].affected.as_deref(),
            Some(r#"[{"code":"api"}]"#)
        );
        // An update id is unique: the same automatic update twice is stored once.
        assert!(
            s.add_incident_update("inc1", &update("u5", "resolved", 31_000))
                .await
                .is_err()
        );
        assert_eq!(
            s.incident("inc1").await.unwrap().unwrap().updated_at,
            30_000
        );
        assert!(matches!(
            s.add_incident_update("missing", &update("u9", "resolved", 1))
                .await,
            Err(StoreError::Invalid(_))
        ));
        // Listing: the 1 most recent plus every unresolved one.
        for (n, at) in [("inc2", 40_000), ("inc3", 50_000)] {
            s.create_incident(&NewIncident {
                id: n.into(),
                kind: "incident".into(),
                name: n.into(),
                status: "investigating".into(),
                impact: "minor".into(),
                at,
                scheduled_for: None,
                scheduled_until: None,
                components: Vec::new(),
                update: update(&format!("{n}u"), "investigating", at),
            })
            .await
            .unwrap();
        }
        s.add_incident_update("inc3", &update("inc3r", "resolved", 60_000))
            .await
            .unwrap();
        let ids: Vec<String> = s
            .incidents("incident", 1)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["inc3", "inc2"]);
        assert!(s.incidents("maintenance", 50).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn claims_are_once_only() {
    on_both(|s| async move {
        assert!(s.claim("status.remind.x.48h", "1").await.unwrap());
        assert!(!s.claim("status.remind.x.48h", "2").await.unwrap());
        assert!(s.claim("status.remind.x.1h", "3").await.unwrap());
        assert_eq!(
            s.setting("status.remind.x.48h").await.unwrap().as_deref(),
            Some("1")
        );
    })
    .await;
}
