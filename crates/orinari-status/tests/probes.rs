//! Probes against real local servers (HTTP with status, keyword and latency
//! conditions; TCP; the store), thresholds driving a component through the
//! running service, the self-connectivity check holding back a false
//! outage, and signed webhook notifications received by a real HTTP server.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use orinari_status::model::ComponentStatus;
use orinari_status::probe::{Prober, Target};
use orinari_status::{IncidentInput, Notifier, StatusService, Webhook};
use sha2::Sha256;
use tokio::sync::Mutex;

/// A real HTTP server whose status code and delay the test controls.
#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

async fn upstream() -> (String, Upstream) {
    let u = Upstream::default();
    u.status.store(200, Ordering::SeqCst);
    let app = Router::new()
        .route(
            "/health",
            get(|State(u): State<Upstream>| async move {
                tokio::time::sleep(Duration::from_millis(u.delay_ms.load(Ordering::SeqCst))).await;
                let code = StatusCode::from_u16(u.status.load(Ordering::SeqCst)).unwrap();
                (code, "{\"status\": \"all good\"}")
            }),
        )
        .with_state(u.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), u)
}

/// A loopback port with nothing listening.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn http(url: &str, status: Option<u16>, keyword: Option<&str>) -> Target {
    Target::parse(url, status, keyword.map(str::to_string)).unwrap()
}

#[tokio::test]
async fn single_attempts_against_real_servers() {
    let (base, u) = upstream().await;
    let p = Prober::new(Some(common::store().await));
    let t = Duration::from_secs(2);
    let url = format!("{base}/health");
    assert!(p.attempt(&http(&url, None, None), t).await.ok);
    assert!(
        p.attempt(&http(&url, Some(200), Some("all good")), t)
            .await
            .ok
    );
    let a = p.attempt(&http(&url, None, Some("on fire")), t).await;
    assert_eq!(
        a.error.as_deref(),
        Some("the body does not contain the keyword")
    );
    u.status.store(503, Ordering::SeqCst);
    let a = p.attempt(&http(&url, None, None), t).await;
    assert_eq!(a.error.as_deref(), Some("HTTP status 503"));
    assert!(
        p.attempt(&http(&url, Some(503), None), t).await.ok,
        "expect_status"
    );
    u.status.store(200, Ordering::SeqCst);
    u.delay_ms.store(400, Ordering::SeqCst);
    let a = p
        .attempt(&http(&url, None, None), Duration::from_millis(100))
        .await;
    assert!(!a.ok && a.error.unwrap().contains("timed out"));
    u.delay_ms.store(0, Ordering::SeqCst);
    let port = closed_port().await;
    let a = p
        .attempt(&http(&format!("http://127.0.0.1:{port}/"), None, None), t)
        .await;
    assert!(!a.ok);
    assert!(
        !a.error.unwrap().contains("127.0.0.1"),
        "errors carry no URL"
    );
    let addr = base.trim_start_matches("http://");
    assert!(
        p.attempt(
            &Target::parse(&format!("tcp://{addr}"), None, None).unwrap(),
            t
        )
        .await
        .ok
    );
    assert!(
        !p.attempt(
            &Target::parse(&format!("tcp://127.0.0.1:{port}"), None, None).unwrap(),
            t
        )
        .await
        .ok
    );
    assert!(p.attempt(&Target::Storage, t).await.ok);
    // A JSON condition on the real body ({"status": "all good"}).
    let json =
        |v: &str| http(&url, None, None).with_json(Some(("status".to_string(), v.to_string())));
    assert!(p.attempt(&json("all good"), t).await.ok);
    let a = p.attempt(&json("ok"), t).await;
    assert_eq!(
        a.error.as_deref(),
        Some("`status` is `all good`, expected `ok`")
    );
}

async fn wait_for(svc: &StatusService, id: &str, want: ComponentStatus) -> Duration {
    let started = std::time::Instant::now();
    loop {
        if svc.snapshot().component(id).map(|c| c.status) == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id} never became {want}; it is {:?}",
            svc.snapshot().component(id).map(|c| c.status)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn checks_drive_components_with_thresholds() {
    let (base, u) = upstream().await;
    let toml = format!(
        r#"
[status]
builtin_checks = true
[[status.checks]]
name = "Chat API"
url = "{base}/health"
interval = "100ms"
timeout = "100ms"
degraded_after = "50ms"
failure_threshold = 3
success_threshold = 2
"#
    );
    let svc = Arc::new(common::service(&toml, orinari_store::now_ms()).await);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(svc.clone().run(stopped));
    // Both checks decide on their first pass.
    let started = std::time::Instant::now();
    while svc.probe_states().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            svc.probe_states()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        svc.probe_states(),
        [
            ("chat-api".to_string(), true),
            ("storage".to_string(), true)
        ]
    );
    // Down: only after three failures in a row (~200 ms at 100 ms intervals).
    u.status.store(500, Ordering::SeqCst);
    let took = wait_for(&svc, "chat-api", ComponentStatus::MajorOutage).await;
    assert!(took >= Duration::from_millis(150), "flipped after {took:?}");
    assert!(svc.probe_states().contains(&("chat-api".into(), false)));
    assert_eq!(svc.snapshot().status.indicator.as_str(), "critical");
    // Slow passes are degraded performance.
    u.status.store(200, Ordering::SeqCst);
    u.delay_ms.store(70, Ordering::SeqCst);
    wait_for(&svc, "chat-api", ComponentStatus::DegradedPerformance).await;
    u.delay_ms.store(0, Ordering::SeqCst);
    wait_for(&svc, "chat-api", ComponentStatus::Operational).await;
    // The history shows the outage: uptime today is below 100%.
    svc.reconcile(orinari_store::now_ms(), None).await.unwrap();
    let today = svc
        .snapshot()
        .component("chat-api")
        .unwrap()
        .days
        .last()
        .cloned()
        .unwrap();
    assert!(
        today.down_ms > 0 && today.basis_points().unwrap() < 10_000,
        "{today:?}"
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn no_outage_is_declared_without_connectivity() {
    let (base, u) = upstream().await;
    let dead = closed_port().await;
    let toml = format!(
        r#"
[status]
builtin_checks = false
connectivity_check = "tcp://127.0.0.1:{dead}"
[[status.checks]]
name = "Chat API"
url = "{base}/health"
interval = "50ms"
timeout = "50ms"
failure_threshold = 1
"#
    );
    let svc = Arc::new(common::service(&toml, orinari_store::now_ms()).await);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(svc.clone().run(stopped));
    wait_for(&svc, "chat-api", ComponentStatus::Operational).await;
    u.status.store(500, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        svc.snapshot().component("chat-api").unwrap().status,
        ComponentStatus::Operational,
        "the prober itself is cut off: nothing is declared down"
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
}

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, body: String| async move {
                    got.lock().await.push((headers, body));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

/// Check `t=…,v1=…` the way a receiver would.
fn verify(secret: &[u8], header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

#[tokio::test]
async fn webhooks_are_signed_and_delivered() {
    let (url, got) = receiver().await;
    // Through the service: an incident notifies every subscriber. The secret
    // comes from an environment variable the test runner always sets.
    let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let toml = format!(
        r#"
[status]
builtin_checks = false
[[status.components]]
name = "API"
[[status.webhooks]]
url = "{url}"
secret_env = "CARGO_MANIFEST_DIR"
"#
    );
    let svc = Arc::new(common::service(&toml, orinari_store::now_ms()).await);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(svc.clone().run(stopped));
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
    let started = std::time::Instant::now();
    while got.lock().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no webhook arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (headers, body) = got.lock().await[0].clone();
    let sig = headers["x-orinari-signature"].to_str().unwrap();
    assert!(verify(secret.as_bytes(), sig, &body), "{sig}");
    assert!(!verify(b"wrong", sig, &body));
    assert!(
        !verify(secret.as_bytes(), sig, &body.replace("API", "APX")),
        "tampering shows"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "incident.created");
    assert_eq!(v["incident"]["name"], "API errors");
    assert_eq!(v["incident"]["components"][0]["status"], "major_outage");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();

    // Retries: a subscriber that is down at first gets it on a later attempt
    // (here: never up, so the post reports failure after its attempts).
    let dead = closed_port().await;
    let n = Notifier::with_hooks(Vec::new(), false);
    let hook = Webhook {
        url: format!("http://127.0.0.1:{dead}/hook"),
        secret: None,
    };
    assert!(!n.post(&hook, "{}").await);
}

#[tokio::test]
async fn reminders_and_alerts_are_sent_once_across_instances() {
    let (url, got) = receiver().await;
    let toml = format!(
        r#"
[status]
builtin_checks = false
[[status.components]]
name = "API"
[[status.webhooks]]
url = "{url}"
"#
    );
    let store = common::store().await;
    let settings = common::settings(&toml);
    let t = orinari_store::now_ms();
    let a = Arc::new(
        StatusService::open(store.clone(), &settings, t)
            .await
            .unwrap(),
    );
    let b = Arc::new(StatusService::open(store, &settings, t).await.unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs = [
        tokio::spawn(a.clone().run(stopped.clone())),
        tokio::spawn(b.clone().run(stopped)),
    ];
    const HOUR: i64 = 3_600_000;
    let from = t + 10 * 24 * HOUR;
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    a.create_maintenance(
        orinari_status::MaintenanceInput {
            name: "DB upgrade".into(),
            scheduled_for: at(from),
            scheduled_until: at(from + 2 * HOUR),
            message: "Planned.".into(),
            components: vec!["api".into()],
        },
        t,
    )
    .await
    .unwrap();
    b.reconcile(t, None).await.unwrap();
    for now in [
        from - 72 * HOUR,
        from - 47 * HOUR,
        from - 46 * HOUR,
        from - HOUR / 2,
        from - HOUR / 4,
    ] {
        let (x, y) = tokio::join!(a.tick(now), b.tick(now));
        x.unwrap();
        y.unwrap();
    }
    // A probe alert seen by both instances in the same minute.
    let now = orinari_store::now_ms();
    let (x, y) = tokio::join!(
        a.observe("api", ComponentStatus::MajorOutage, now),
        b.observe("api", ComponentStatus::MajorOutage, now)
    );
    x.unwrap();
    y.unwrap();
    let started = std::time::Instant::now();
    loop {
        let events: Vec<serde_json::Value> = got
            .lock()
            .await
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect();
        let count = |e: &str| events.iter().filter(|v| v["event"] == e).count();
        let reminders: Vec<i64> = events
            .iter()
            .filter(|v| v["event"] == "maintenance.reminder")
            .map(|v| v["hours_before"].as_i64().unwrap())
            .collect();
        if count("component.status_changed") >= 1 && reminders.len() >= 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Two instances deliver: the order between them is not fixed.
            let mut reminders = reminders.clone();
            reminders.sort_unstable();
            assert_eq!(reminders, [1, 48], "each reminder once");
            assert_eq!(
                count("component.status_changed"),
                1,
                "one alert from two instances"
            );
            assert_eq!(count("maintenance.created"), 1);
            let alert = events_of(&got, "component.status_changed").await;
            assert_eq!(alert["new_status"], "major_outage");
            assert_eq!(alert["old_status"], "operational");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for r in runs {
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn events_of(got: &Received, event: &str) -> serde_json::Value {
    got.lock()
        .await
        .iter()
        .map(|(_, body)| serde_json::from_str::<serde_json::Value>(body).unwrap())
        .find(|v| v["event"] == event)
        .unwrap()
}

/// `openssl s_server` with a new self-signed certificate valid for `days`.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_server(days: u32) -> TlsServer {
    let dir = std::env::temp_dir().join(format!("orinari-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-days", &days.to_string(), "-keyout"])
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(dir.join("c.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
        ])
        .arg(dir.join("c.pem"))
        .arg("-key")
        .arg(dir.join("k.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return TlsServer {
                child,
                port,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("openssl s_server did not start");
}

#[tokio::test]
async fn tls_certificate_expiry_against_a_real_tls_server() {
    let p = Prober::new(None);
    let t = Duration::from_secs(5);
    let now = orinari_store::now_ms() / 1000;
    // Five days left: up, but degraded (the warning window is 14 days).
    let soon = tls_server(5).await;
    let expires = orinari_status::tls::expiry("127.0.0.1", soon.port)
        .await
        .unwrap();
    assert!(
        (expires - (now + 5 * 86_400)).abs() < 300,
        "expires {expires}, now {now}"
    );
    let a = p
        .attempt(
            &Target::parse(&format!("tls://127.0.0.1:{}", soon.port), None, None).unwrap(),
            t,
        )
        .await;
    assert!(a.ok && a.degraded, "{a:?}");
    // A year left: up.
    let later = tls_server(400).await;
    let a = p
        .attempt(
            &Target::parse(&format!("tls://127.0.0.1:{}", later.port), None, None).unwrap(),
            t,
        )
        .await;
    assert!(a.ok && !a.degraded, "{a:?}");
    // Not TLS at all: down.
    let (base, _u) = upstream().await;
    let addr = base.trim_start_matches("http://");
    let a = p
        .attempt(
            &Target::parse(&format!("tls://{addr}"), None, None).unwrap(),
            t,
        )
        .await;
    assert!(!a.ok && a.error.unwrap().contains("TLS handshake failed"));
}

#[tokio::test]
async fn alert_rules_fire_and_resolve_once_across_instances() {
    let (url, got) = receiver().await;
    let toml = format!(
        r#"
[status]
builtin_checks = false
[[status.webhooks]]
url = "{url}"
[[status.alerts]]
name = "Chat errors"
kind = "error_rate"
route = "/v1/chat/completions"
threshold = 0.1
window = "60s"
min_requests = 5
"#
    );
    let store = common::store().await;
    let settings = common::settings(&toml);
    let t = orinari_store::now_ms();
    let a = Arc::new(
        StatusService::open(store.clone(), &settings, t)
            .await
            .unwrap(),
    );
    let b = Arc::new(StatusService::open(store, &settings, t).await.unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Both deliver their own notifications (either may win a claim).
    let runs = [
        tokio::spawn(a.clone().run(stopped.clone())),
        tokio::spawn(b.clone().run(stopped)),
    ];
    // Both instances see errors on the route (and some noise elsewhere).
    for svc in [&a, &b] {
        for i in 0..10 {
            svc.record_request(
                "/v1/chat/completions",
                if i < 3 { 502 } else { 200 },
                0.05,
                t,
            );
            svc.record_request("/status", 200, 0.001, t);
        }
    }
    let (x, y) = tokio::join!(a.evaluate_alerts(t), b.evaluate_alerts(t));
    x.unwrap();
    y.unwrap();
    // A minute and more later the window is clean again.
    let later = t + 90_000;
    a.record_request("/v1/chat/completions", 200, 0.05, later);
    a.evaluate_alerts(later).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let events: Vec<serde_json::Value> = got
            .lock()
            .await
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect();
        if events.len() >= 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let events: Vec<serde_json::Value> = got
                .lock()
                .await
                .iter()
                .map(|(_, body)| serde_json::from_str(body).unwrap())
                .collect();
            let mut kinds: Vec<&str> = events
                .iter()
                .map(|e| e["event"].as_str().unwrap())
                .collect();
            // Two instances deliver: the order between them is not fixed.
            kinds.sort_unstable();
            assert_eq!(
                kinds,
                ["alert.firing", "alert.resolved"],
                "once each, from two instances"
            );
            let firing = events
                .iter()
                .find(|e| e["event"] == "alert.firing")
                .unwrap();
            assert_eq!(firing["alert"]["name"], "Chat errors");
            assert!((firing["alert"]["value"].as_f64().unwrap() - 0.3).abs() < 1e-9);
            assert_eq!(firing["alert"]["requests"], 10);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for r in runs {
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .unwrap()
            .unwrap();
    }
}
