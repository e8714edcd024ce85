//! Visitors' webhook subscriptions against real local HTTP servers: the
//! signed verification challenge, Statuspage-shaped signed notifications
//! filtered by component (incidents, maintenance reminders, start and end),
//! unsubscribe, failure counting that disables a dead endpoint, SSRF
//! refusals (loopback without the allowlist, metadata address, mapped IPv6,
//! numeric hosts, redirects not followed, response size cap), and the
//! creation rate limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use common::{ms, service};
use orinari_status::webhooks::WebhookInput;
use orinari_status::{IncidentInput, MaintenanceInput, StatusError, StatusService};
use serde_json::Value;
use tokio::sync::watch;

const ALLOW: &str = r#"
[status]
page_name = "Acme"
page_url = "https://status.acme.test/status"
builtin_checks = false
webhook_allow = ["127.0.0.0/8"]
webhook_max_failures = 2
[[status.components]]
name = "API"
[[status.components]]
name = "Database"
"#;

/// What the receiver saw: (path, headers, body).
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    /// The status notifications are answered with (verification always
    /// echoes on `/hook`).
    status: Arc<AtomicU16>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen
        .lock()
        .unwrap()
        .push(("/hook".into(), headers, v.clone()));
    if let Some(c) = v["challenge"].as_str() {
        return serde_json::json!({"challenge": c})
            .to_string()
            .into_response();
    }
    StatusCode::from_u16(r.status.load(Ordering::SeqCst))
        .unwrap()
        .into_response()
}

async fn no_echo(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen.lock().unwrap().push(("/noecho".into(), headers, v));
    StatusCode::OK
}

async fn redirect(State(r): State<Receiver>, headers: HeaderMap) -> Redirect {
    r.seen
        .lock()
        .unwrap()
        .push(("/redirect".into(), headers, Value::Null));
    Redirect::temporary("/hook")
}

/// 2 MiB of padding, then the challenge: past the response cap.
async fn big(body: Bytes) -> String {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    format!(
        "{}{}",
        " ".repeat(2 * 1024 * 1024),
        v["challenge"].as_str().unwrap_or("")
    )
}

async fn receiver() -> (SocketAddr, Receiver) {
    let r = Receiver {
        seen: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
    };
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/noecho", post(no_echo))
        .route("/redirect", post(redirect))
        .route("/big", post(big))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, r)
}

fn input(url: String, components: &[&str]) -> WebhookInput {
    WebhookInput {
        endpoint: url,
        components: components.iter().map(|c| c.to_string()).collect(),
        secret: None,
    }
}

fn field_of(r: Result<impl std::fmt::Debug, StatusError>) -> (String, String) {
    match r {
        Err(StatusError::Invalid { field, message }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

/// Check `x-orinari-signature` over the body with `secret`.
fn signed(headers: &HeaderMap, body: &Value, secret: &str) -> bool {
    let sig = headers["x-orinari-signature"].to_str().unwrap();
    let t: i64 = sig
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    sig == orinari_status::sign(secret.as_bytes(), t, body.to_string().as_bytes())
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting");
}

fn running(svc: StatusService) -> (Arc<StatusService>, watch::Sender<bool>) {
    let svc = Arc::new(svc);
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(svc.clone().run(stopped));
    (svc, stop)
}

fn events(seen: &Seen) -> Vec<(HeaderMap, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, _, v)| v["event"] != "subscription.verify")
        .map(|(_, h, v)| (h.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn verified_subscribers_get_signed_statuspage_notifications() {
    let (addr, rx) = receiver().await;
    let now = orinari_store::now_ms();
    let (svc, stop) = running(service(ALLOW, now).await);
    let client: Option<IpAddr> = Some("192.0.2.7".parse().unwrap());

    // All components, and one for "database" only.
    let all = svc
        .subscribe_webhook(input(format!("http://{addr}/hook"), &[]), client, now)
        .await
        .unwrap();
    let db = svc
        .subscribe_webhook(
            input(format!("http://{addr}/hook"), &["database"]),
            client,
            now,
        )
        .await
        .unwrap();
    assert!(all.secret.len() >= 32 && all.secret != db.secret);
    assert!(
        all.unsubscribe_url
            .starts_with("https://status.acme.test/status/subscriptions/unsubscribe?token=")
    );
    {
        let seen = rx.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one verification each");
        let (_, h, v) = &seen[0];
        assert_eq!(v["event"], "subscription.verify");
        assert_eq!(v["subscription"]["id"], all.id.as_str());
        assert!(v["challenge"].as_str().unwrap().len() >= 24);
        assert!(signed(h, v, &all.secret), "verification is signed");
        assert_eq!(h["x-orinari-event"], "subscription.verify");
    }

    // An incident on the API reaches only the all-components subscriber.
    svc.create_incident(
        IncidentInput {
            name: "API errors".into(),
            message: "Looking into it.".into(),
            components: vec![("api".into(), "major_outage".into())],
            ..IncidentInput::default()
        },
        orinari_store::now_ms(),
    )
    .await
    .unwrap();
    wait_until(|| !events(&rx.seen).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = events(&rx.seen);
    assert_eq!(got.len(), 1, "{got:?}");
    let (h, v) = &got[0];
    assert_eq!(h["x-orinari-subscription"], all.id.as_str());
    assert!(signed(h, v, &all.secret));
    assert_eq!(v["event"], "incident.created");
    assert_eq!(v["meta"]["unsubscribe"], all.unsubscribe_url.as_str());
    assert_eq!(v["page"]["status_indicator"], "critical");
    assert_eq!(v["page"]["status_description"], "Major System Outage");
    assert_eq!(v["incident"]["name"], "API errors");
    assert_eq!(v["incident"]["status"], "investigating");
    assert_eq!(
        v["incident"]["incident_updates"][0]["body"],
        "Looking into it."
    );

    // A maintenance of the database: both get created, the 48-hour and
    // 1-hour reminders, start and end.
    rx.seen.lock().unwrap().clear();
    let start = orinari_store::now_ms() + 47 * 3_600_000;
    let m = svc
        .create_maintenance(
            MaintenanceInput {
                name: "DB upgrade".into(),
                scheduled_for: jiff::Timestamp::from_millisecond(start)
                    .unwrap()
                    .to_string(),
                scheduled_until: jiff::Timestamp::from_millisecond(start + 3_600_000)
                    .unwrap()
                    .to_string(),
                message: "Upgrading.".into(),
                components: vec!["database".into()],
            },
            orinari_store::now_ms(),
        )
        .await
        .unwrap();
    svc.tick(start - 47 * 3_600_000 + 1_000).await.unwrap();
    svc.tick(start - 1_800_000).await.unwrap();
    svc.tick(start + 1_000).await.unwrap();
    svc.tick(start + 3_600_000 + 1_000).await.unwrap();
    wait_until(|| events(&rx.seen).len() >= 10).await;
    let got = events(&rx.seen);
    let kinds = |id: &str| -> Vec<String> {
        got.iter()
            .filter(|(h, _)| h["x-orinari-subscription"] == id)
            .map(|(_, v)| match v["event"].as_str().unwrap() {
                "maintenance.reminder" => format!("reminder {}h", v["reminder"]["hours_before"]),
                "maintenance.updated" => {
                    format!("updated {}", v["incident"]["status"].as_str().unwrap())
                }
                e => e.to_string(),
            })
            .collect()
    };
    // Each exactly once (the service's own clock may send the 48-hour
    // reminder as soon as the maintenance exists, so order is not compared).
    let mut expected = vec![
        "maintenance.created",
        "reminder 48h",
        "reminder 1h",
        "updated in_progress",
        "updated completed",
    ];
    expected.sort_unstable();
    for id in [&all.id, &db.id] {
        let mut k = kinds(id);
        k.sort_unstable();
        assert_eq!(k, expected);
    }
    for (h, v) in &got {
        assert_eq!(v["incident"]["id"], m.id.as_str());
        let secret = if h["x-orinari-subscription"] == all.id.as_str() {
            &all.secret
        } else {
            &db.secret
        };
        assert!(signed(h, v, secret));
    }

    // Unsubscribed: nothing more for it; the token works once.
    assert!(
        svc.unsubscribe(&db.unsubscribe_token, orinari_store::now_ms())
            .await
            .unwrap()
    );
    assert!(
        !svc.unsubscribe(&db.unsubscribe_token, orinari_store::now_ms())
            .await
            .unwrap()
    );
    rx.seen.lock().unwrap().clear();
    svc.create_incident(
        IncidentInput {
            name: "DB slow".into(),
            message: "Slow queries.".into(),
            components: vec![("database".into(), "degraded_performance".into())],
            ..IncidentInput::default()
        },
        orinari_store::now_ms(),
    )
    .await
    .unwrap();
    wait_until(|| !events(&rx.seen).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = events(&rx.seen);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["x-orinari-subscription"], all.id.as_str());
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_dead_endpoint_is_disabled_after_repeated_failures() {
    let (addr, rx) = receiver().await;
    let now = orinari_store::now_ms();
    let store = common::store().await;
    let svc = StatusService::open(store.clone(), &common::settings(ALLOW), now)
        .await
        .unwrap();
    let (svc, stop) = running(svc);
    let sub = svc
        .subscribe_webhook(input(format!("http://{addr}/hook"), &[]), None, now)
        .await
        .unwrap();
    rx.status.store(500, Ordering::SeqCst);
    for i in 0..2 {
        svc.create_incident(
            IncidentInput {
                name: format!("Outage {i}"),
                message: "Down.".into(),
                components: vec![("api".into(), "major_outage".into())],
                ..IncidentInput::default()
            },
            orinari_store::now_ms(),
        )
        .await
        .unwrap();
        // Three attempts per notification (with back-off) before it counts.
        wait_until(|| events(&rx.seen).len() >= 3 * (i + 1)).await;
    }
    let mut disabled = false;
    for _ in 0..100 {
        let row = store.webhook(&sub.id).await.unwrap().unwrap();
        if row.disabled_at.is_some() {
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(disabled, "the subscription was disabled");
    let row = store.webhook(&sub.id).await.unwrap().unwrap();
    assert_eq!(row.failures, 2);
    // Disabled: a recovered endpoint gets nothing more.
    rx.status.store(200, Ordering::SeqCst);
    let before = events(&rx.seen).len();
    svc.create_incident(
        IncidentInput {
            name: "Another".into(),
            message: "Down.".into(),
            components: vec![("api".into(), "major_outage".into())],
            ..IncidentInput::default()
        },
        orinari_store::now_ms(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(events(&rx.seen).len(), before);
    let _ = stop.send(true);
}

#[tokio::test]
async fn internal_addresses_are_refused_without_the_allowlist() {
    let (addr, rx) = receiver().await;
    let now = orinari_store::now_ms();
    let strict = ALLOW.replace("webhook_allow = [\"127.0.0.0/8\"]\n", "");
    let svc = service(&strict, now).await;
    let port = addr.port();
    for url in [
        format!("http://{addr}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/hook".to_string(),
        "http://100.64.0.1/hook".to_string(),
        "http://0.0.0.0/hook".to_string(),
    ] {
        let (field, message) = field_of(
            svc.subscribe_webhook(input(url.clone(), &[]), None, now)
                .await,
        );
        assert_eq!(field, "endpoint", "{url}");
        assert!(message.contains("not a public address"), "{url}: {message}");
    }
    assert!(rx.seen.lock().unwrap().is_empty(), "nothing was sent");

    // Form errors name their field.
    for (url, part) in [
        ("ftp://example.org/x", "http:// or https://"),
        ("https://user:pw@example.org/x", "user name or password"),
        ("not a url", "not a valid URL"),
        ("", "must not be empty"),
    ] {
        let (field, message) = field_of(
            svc.subscribe_webhook(input(url.into(), &[]), None, now)
                .await,
        );
        assert_eq!(field, "endpoint");
        assert!(message.contains(part), "{url}: {message}");
    }
    let (field, _) = field_of(
        svc.subscribe_webhook(input("https://example.org/x".into(), &["nope"]), None, now)
            .await,
    );
    assert_eq!(field, "components[0]");
    let (field, _) = field_of(
        svc.subscribe_webhook(
            WebhookInput {
                secret: Some("short".into()),
                ..input("https://example.org/x".into(), &[])
            },
            None,
            now,
        )
        .await,
    );
    assert_eq!(field, "secret");
}

#[tokio::test]
async fn verification_needs_the_challenge_and_follows_no_redirect() {
    let (addr, rx) = receiver().await;
    let now = orinari_store::now_ms();
    let svc = service(ALLOW, now).await;
    let (_, m) = field_of(
        svc.subscribe_webhook(input(format!("http://{addr}/noecho"), &[]), None, now)
            .await,
    );
    assert!(m.contains("challenge"), "{m}");
    let (_, m) = field_of(
        svc.subscribe_webhook(input(format!("http://{addr}/redirect"), &[]), None, now)
            .await,
    );
    assert!(m.contains("answered 307"), "{m}");
    let (_, m) = field_of(
        svc.subscribe_webhook(input(format!("http://{addr}/big"), &[]), None, now)
            .await,
    );
    assert!(
        m.contains("challenge"),
        "the echo past the cap is not read: {m}"
    );
    let followed = rx.seen.lock().unwrap().iter().any(|(p, _, _)| p == "/hook");
    assert!(!followed, "the redirect was not followed");
    // A subscriber may bring its own secret.
    assert_eq!(
        svc.subscribe_webhook(
            WebhookInput {
                secret: Some("my-own-secret-0123456789".into()),
                ..input(format!("http://{addr}/hook"), &[])
            },
            None,
            now
        )
        .await
        .unwrap()
        .secret,
        "my-own-secret-0123456789"
    );
}

#[tokio::test]
async fn subscription_attempts_are_rate_limited_per_client() {
    let now = orinari_store::now_ms();
    let strict = ALLOW.replace("webhook_allow = [\"127.0.0.0/8\"]\n", "");
    let svc = service(&strict, now).await;
    let a: IpAddr = "203.0.113.9".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b_same_64: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
    for _ in 0..orinari_status::webhooks::PER_CLIENT {
        // Refused by the address check, but each attempt counts.
        let r = svc
            .subscribe_webhook(input("http://127.0.0.1:9/h".into(), &[]), Some(a), now)
            .await;
        assert!(matches!(r, Err(StatusError::Invalid { .. })));
        let r = svc
            .subscribe_webhook(input("http://127.0.0.1:9/h".into(), &[]), Some(b), now)
            .await;
        assert!(matches!(r, Err(StatusError::Invalid { .. })));
    }
    for ip in [a, b_same_64] {
        match svc
            .subscribe_webhook(input("http://127.0.0.1:9/h".into(), &[]), Some(ip), now)
            .await
        {
            Err(StatusError::Limited { retry_after_s }) => {
                assert!((1..=3600).contains(&retry_after_s))
            }
            other => panic!("expected a rate limit for {ip}, got {other:?}"),
        }
    }
    // Another client is not affected; the window ends.
    let other: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(matches!(
        svc.subscribe_webhook(input("http://127.0.0.1:9/h".into(), &[]), Some(other), now)
            .await,
        Err(StatusError::Invalid { .. })
    ));
    assert!(matches!(
        svc.subscribe_webhook(
            input("http://127.0.0.1:9/h".into(), &[]),
            Some(a),
            now + orinari_status::webhooks::WINDOW_MS
        )
        .await,
        Err(StatusError::Invalid { .. })
    ));
}

#[tokio::test]
async fn disabled_by_config() {
    let now = orinari_store::now_ms();
    let svc = service(
        &ALLOW.replace(
            "webhook_max_failures = 2",
            "webhook_max_failures = 2\nwebhook_subscriptions = false",
        ),
        now,
    )
    .await;
    assert!(!svc.webhooks_enabled());
    let (field, m) = field_of(
        svc.subscribe_webhook(input("https://example.org/x".into(), &[]), None, now)
            .await,
    );
    assert_eq!(field, "endpoint");
    assert!(m.contains("not enabled"));
}

#[test]
fn start_time_parses() {
    assert!(ms("2026-01-01T00:00:00Z") > 0);
}
