//! The status page over real HTTP: Statuspage JSON, the admin incident and
//! maintenance API (every error names its field), the HTML page (no-JS,
//! escaped, small, security headers), the Atom feed, badges, live updates
//! over SSE, and the HTTP, process and probe metrics on `/metrics`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

mod common;

use common::status_page::{Page, TOKEN, start};

const CONFIG: &str = r#"
[status]
page_name = "Acme"
time_zone = "Europe/Berlin"
[[status.components]]
name = "API"
[[status.components]]
name = "Web app"
"#;

impl Page {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        r.json().await.unwrap()
    }

    async fn admin(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

#[tokio::test]
async fn json_admin_api_and_errors() {
    let p = start(CONFIG).await;
    for path in [
        "/api/v2/summary.json",
        "/api/v2/status.json",
        "/api/v2/components.json",
        "/api/v2/incidents.json",
        "/api/v2/incidents/unresolved.json",
        "/api/v2/scheduled-maintenances.json",
        "/api/v2/scheduled-maintenances/upcoming.json",
        "/api/v2/scheduled-maintenances/active.json",
    ] {
        let v = p.json(path).await;
        assert_eq!(v["page"]["name"], "Acme", "{path}");
        assert_eq!(v["page"]["time_zone"], "Europe/Berlin");
    }
    let s = p.json("/api/v2/summary.json").await;
    let ids: Vec<&str> = s["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["api", "web-app", "storage"],
        "configured, then the built-in storage check"
    );
    assert_eq!(s["status"]["indicator"], "none");

    // Admin routes need the token.
    let r = p
        .http
        .post(format!("{}/admin/v1/incidents", p.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Every bad input names its field.
    for (body, param) in [
        ("not json", None),
        (
            r#"{"name": "x", "message": "y", "colour": "red"}"#,
            Some("colour"),
        ),
        (r#"{"name": "", "message": "y"}"#, Some("name")),
        (r#"{"name": 5, "message": "y"}"#, Some("name")),
        (
            r#"{"name": "x", "message": "y", "components": {"api": "broken"}}"#,
            Some("components.api"),
        ),
        (
            r#"{"name": "x", "message": "y", "components": {"nope": "major_outage"}}"#,
            Some("components.nope"),
        ),
        (
            r#"{"name": "x", "message": "y", "status": "fixed"}"#,
            Some("status"),
        ),
    ] {
        let (code, v) = p.admin("/admin/v1/incidents", body).await;
        assert_eq!(code, 400, "{body}: {v}");
        if let Some(param) = param {
            assert_eq!(v["error"]["param"], param, "{body}: {v}");
        }
    }
    let (code, inc) = p
        .admin(
            "/admin/v1/incidents",
            r#"{"name": "API errors <script>alert(1)</script>", "status": "investigating", "impact": "major",
                "message": "Looking into it.", "components": {"api": "major_outage"}}"#,
        )
        .await;
    assert_eq!(code, 201, "{inc}");
    let id = inc["id"].as_str().unwrap().to_string();
    assert_eq!(inc["components"][0]["status"], "major_outage");
    let s = p.json("/api/v2/status.json").await;
    assert_eq!(s["status"]["indicator"], "critical");
    for step in ["identified", "monitoring", "resolved", "postmortem"] {
        let (code, v) = p
            .admin(
                &format!("/admin/v1/incidents/{id}/updates"),
                &json!({"status": step, "message": format!("Now {step}.")}).to_string(),
            )
            .await;
        assert_eq!(code, 201, "{step}: {v}");
        assert_eq!(v["status"], step);
    }
    let (code, v) = p
        .admin(
            &format!("/admin/v1/incidents/{id}/updates"),
            r#"{"status": "investigating", "message": "again"}"#,
        )
        .await;
    assert_eq!(
        (code, v["error"]["param"].as_str()),
        (400, Some("status")),
        "{v}"
    );
    let (code, v) = p
        .admin(
            "/admin/v1/incidents/zzzzzzzzzzzz/updates",
            r#"{"status": "resolved", "message": "x"}"#,
        )
        .await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(
        p.json("/api/v2/incidents/unresolved.json").await["incidents"],
        json!([])
    );
    assert_eq!(
        p.json("/api/v2/incidents.json").await["incidents"][0]["status"],
        "postmortem"
    );

    // Maintenance in the page's zone (no offset = Berlin time).
    let (code, m) = p
        .admin(
            "/admin/v1/maintenances",
            r#"{"name": "DB upgrade", "scheduled_for": "2030-07-01T02:00:00", "scheduled_until": "2030-07-01T04:00:00",
                "message": "Upgrading.", "components": ["api"]}"#,
        )
        .await;
    assert_eq!(code, 201, "{m}");
    assert_eq!(m["scheduled_for"], "2030-07-01T02:00:00.000+02:00");
    assert_eq!(m["status"], "scheduled");
    let up = p.json("/api/v2/scheduled-maintenances/upcoming.json").await;
    assert_eq!(up["scheduled_maintenances"][0]["id"], m["id"]);
    let (code, v) = p
        .admin(
            "/admin/v1/maintenances",
            r#"{"name": "x", "scheduled_for": "soon", "scheduled_until": "2030-07-01T04:00:00", "message": "x"}"#,
        )
        .await;
    assert_eq!(
        (code, v["error"]["param"].as_str()),
        (400, Some("scheduled_for")),
        "{v}"
    );
    let (code, v) = p
        .admin("/admin/v1/maintenances", r#"{"name": "x", "scheduled_for": "2030-07-01T02:00:00", "scheduled_until": "2030-07-01T04:00:00", "message": "x", "components": [1]}"#)
        .await;
    assert_eq!(
        (code, v["error"]["param"].as_str()),
        (400, Some("components[0]")),
        "{v}"
    );

    // The page shows it all, escaped, in words.
    let r = p.get("/status").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("All Systems Operational"),
        "resolved: operational again"
    );
    assert!(
        html.contains("API errors &#60;script&#62;") || html.contains("API errors &lt;script&gt;")
    );
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("Postmortem") && html.contains("DB upgrade"));
    assert!(
        html.contains("Operational")
            && html.contains("uptime over 30 days")
            && html.contains("over 90 days")
    );
    assert!(html.len() < 50_000, "{} bytes", html.len());

    let feed = p.get("/status/feed.atom").await;
    assert_eq!(
        feed.headers()["content-type"],
        "application/atom+xml; charset=utf-8"
    );
    let feed = feed.text().await.unwrap();
    assert!(
        feed.starts_with("<?xml")
            && feed.contains("<entry>")
            && feed.contains("Maintenance: DB upgrade")
    );
    assert!(feed.contains("&lt;script&gt;") && !feed.contains("<script>"));
    let badge = p
        .get("/status/badge.svg?component=api")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        badge.starts_with("<svg") && badge.contains("operational") && badge.contains("<title>")
    );
    assert_eq!(
        p.get("/status/badge.svg?component=nope").await.status(),
        404
    );
}

/// The next SSE event (comments skipped), within 5 s.
async fn next_event<S>(body: &mut S, seen: &mut String) -> String
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    loop {
        if let Some(end) = seen.find("\n\n") {
            let ev = seen[..end].to_string();
            seen.drain(..end + 2);
            if ev.starts_with(':') {
                continue;
            }
            return ev;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn live_updates_and_metrics() {
    let p = start(CONFIG).await;
    let r = p.get("/status/events").await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let first = next_event(&mut body, &mut seen).await;
    assert!(
        first.contains("event: summary") && first.contains("All Systems Operational"),
        "{first}"
    );
    let (code, _) = p
        .admin(
            "/admin/v1/incidents",
            r#"{"name": "Web app down", "message": "Looking.", "components": {"web-app": "partial_outage"}}"#,
        )
        .await;
    assert_eq!(code, 201);
    // Other changes (the storage probe's first pass) may come first.
    let mut pushed = String::new();
    for _ in 0..5 {
        pushed = next_event(&mut body, &mut seen).await;
        if pushed.contains("Web app down") {
            break;
        }
    }
    assert!(
        pushed.contains("Web app down") && pushed.contains("Partial System Outage"),
        "{pushed}"
    );
    drop(body);

    let _ = p.json("/api/v2/summary.json").await;
    let m = p.get("/metrics").await.text().await.unwrap();
    for needle in [
        r#"orinari_http_requests_total{route="/api/v2/summary.json",method="GET",status="200"}"#,
        r#"orinari_http_requests_total{route="/admin/v1/incidents",method="POST",status="201"}"#,
        r#"orinari_http_request_duration_seconds_bucket{le="0.0005",route="/status/events"}"#,
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "orinari_network_receive_bytes_total ",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    // The built-in storage check decides within its first interval.
    let mut probed = false;
    for _ in 0..50 {
        let m = p.get("/metrics").await.text().await.unwrap();
        if m.contains(r#"orinari_probe_up{check="storage"} 1"#) {
            probed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probed, "orinari_probe_up{{check=\"storage\"}} 1");
    // Unknown paths are counted under one label, whatever the path.
    let _ = p.get("/no/such/path/123").await;
    let m = p.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains(r#"route="unmatched",method="GET",status="404""#),
        "{m}"
    );
    assert!(!m.contains("/no/such/path"));

    // Error tracking groups failures by kind and route; analytics counts only.
    let _ = p.get("/status").await;
    let (code, _) = p.admin("/admin/v1/incidents", r#"{"name": ""}"#).await;
    assert_eq!(code, 400);
    let errors: Value = p
        .http
        .get(format!("{}/admin/v1/errors", p.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let find = |kind: &str, route: &str| {
        errors["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["kind"] == kind && g["route"] == route)
            .cloned()
    };
    let nf = find("unknown_url", "unmatched").expect("404 grouped by its code");
    assert_eq!(
        (nf["count"].as_u64(), nf["status"].as_u64()),
        (Some(1), Some(404))
    );
    assert!(nf["first_seen_ms"].as_i64() <= nf["last_seen_ms"].as_i64());
    let bad = find("invalid_value", "/admin/v1/incidents").expect("400 grouped by its code");
    assert_eq!(bad["count"], 1);
    let a: Value = p
        .http
        .get(format!("{}/admin/v1/analytics", p.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let today = &a["days"][0];
    assert_eq!(today["page_views"]["/status"], 1);
    assert!(today["requests"]["/api/v2/summary.json"].as_u64() >= Some(1));
    let text = a.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("/no/such"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let p = start(CONFIG).await;
    // Something in every family that has samples: requests, errors, probes.
    let _ = p.get("/status").await;
    let _ = p.get("/nope").await;
    let _ = p.json("/api/v2/summary.json").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = p.get("/metrics").await;
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool (apt-get install -y prometheus; scripts/ensure-test-tools.sh installs it)",
        );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    // Prometheus itself asks for OpenMetrics and gets it.
    let om = p
        .http
        .get(format!("{}/metrics", p.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test]
async fn subscription_pages_answer_without_javascript() {
    let p = start(CONFIG).await;
    // No [status] smtp: the page shows no form and the endpoint says why.
    let html = p.get("/status").await.text().await.unwrap();
    assert!(!html.contains("action=\"/status/subscribe\""));
    let r = p
        .http
        .post(format!("{}/status/subscribe", p.base))
        .form(&[("email", "a@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("Email notifications are not enabled on this page."),
        "{text}"
    );
    for path in [
        "/status/subscriptions/confirm?token=forged",
        "/status/subscriptions/unsubscribe?token=x",
    ] {
        let r = p.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("Link not valid"));
    }
}

#[tokio::test]
async fn web_vitals_beacons_are_counted_in_buckets() {
    let p = start(CONFIG).await;
    let beacon = |body: &'static str| {
        p.http
            .post(format!("{}/status/vitals", p.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        beacon(
            r#"{"page": "/status", "ttfb_ms": 12.5, "fcp_ms": 2000, "lcp_ms": 9000, "cls": 0.01}"#
        )
        .await
        .unwrap()
        .status(),
        204
    );
    assert_eq!(
        beacon(r#"{"page": "/status", "lcp_ms": 100}"#)
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        beacon(r#"{"page": "/elsewhere", "lcp_ms": 100}"#)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(beacon("nonsense").await.unwrap().status(), 400);
    let a: Value = p
        .http
        .get(format!("{}/admin/v1/analytics", p.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vitals = a["days"][0]["web_vitals"].as_array().unwrap();
    let find = |m: &str| vitals.iter().find(|v| v["metric"] == m).cloned().unwrap();
    assert_eq!(find("lcp_ms")["good"], 1);
    assert_eq!(find("lcp_ms")["poor"], 1);
    assert_eq!(find("fcp_ms")["needs_improvement"], 1);
    assert_eq!(find("ttfb_ms")["good"], 1);
    assert_eq!(find("cls")["good"], 1);
}
