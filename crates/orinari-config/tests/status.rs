//! `[status]`: defaults, components and groups, checks with their
//! thresholds, webhooks, and errors that name the key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::Duration;

fn parse(text: &str) -> Result<orinari_config::StatusSettings, String> {
    orinari_config::parse(text, "t.toml", std::iter::empty())
        .map(|c| c.status)
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_give_a_page_with_the_storage_check() {
    let s = parse("").unwrap();
    assert_eq!(s.page_name, "ORINARI");
    assert_eq!(s.time_zone, "Etc/UTC");
    assert_eq!(s.page_url, "http://127.0.0.1:8080/status");
    assert_eq!(s.checks.len(), 1);
    assert_eq!(s.checks[0].component.id, "storage");
    assert_eq!(s.checks[0].url, "builtin:storage");
    assert!(
        parse("[status]\nbuiltin_checks = false\n")
            .unwrap()
            .checks
            .is_empty()
    );
}

#[test]
fn checks_components_and_groups() {
    let s = parse(
        r#"
[status]
page_name = "Acme"
time_zone = "Europe/Berlin"
connectivity_check = "tcp://1.1.1.1:53"
[[status.components]]
name = "Web app"
group = "Front end"
[[status.checks]]
name = "Chat API"
url = "http://127.0.0.1:8080/readyz"
interval = "10s"
timeout = "2s"
expect_status = 200
keyword = "ok"
degraded_after = "500ms"
failure_threshold = 2
success_threshold = 4
group = "Front end"
[[status.checks]]
name = "Postgres"
id = "pg"
url = "tcp://127.0.0.1:5432"
[[status.webhooks]]
url = "https://hooks.example.org/status"
secret_env = "HOOK_SECRET"
"#,
    )
    .unwrap();
    assert_eq!(s.components[0].id, "web-app");
    assert_eq!(
        s.components[0].group,
        Some(("front-end".into(), "Front end".into()))
    );
    let c = &s.checks[0];
    assert_eq!(c.component.id, "chat-api");
    assert_eq!(
        (c.interval, c.timeout),
        (Duration::from_secs(10), Duration::from_secs(2))
    );
    assert_eq!((c.failure_threshold, c.success_threshold), (2, 4));
    assert_eq!(c.degraded_after, Some(Duration::from_millis(500)));
    assert_eq!(s.checks[1].component.id, "pg");
    assert_eq!(
        (s.checks[1].failure_threshold, s.checks[1].success_threshold),
        (3, 2)
    );
    assert_eq!(s.checks[2].component.id, "storage");
    assert_eq!(s.webhooks[0].secret_env.as_deref(), Some("HOOK_SECRET"));
    assert_eq!(s.connectivity_check.as_deref(), Some("tcp://1.1.1.1:53"));
}

#[test]
fn errors_name_the_key() {
    for (text, key) in [
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"ftp://x\"\n",
            "status.checks[0].url",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\ntimeout = \"1m\"\ninterval = \"30s\"\n",
            "status.checks[0].timeout",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\nfailure_threshold = 0\n",
            "status.checks[0].failure_threshold",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\nexpect_status = 999\n",
            "status.checks[0].expect_status",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\ndegraded_after = \"fast\"\n",
            "status.checks[0].degraded_after",
        ),
        (
            "[[status.checks]]\nname = \"***\"\nurl = \"http://x/\"\n",
            "status.checks[0].id",
        ),
        (
            "[[status.components]]\nname = \"API\"\n[[status.checks]]\nname = \"api\"\nurl = \"http://x/\"\n",
            "status.checks[0].id",
        ),
        (
            "[[status.components]]\nname = \"\"\n",
            "status.components[0].name",
        ),
        (
            "[status]\nconnectivity_check = \"ping://x\"\n",
            "status.connectivity_check",
        ),
        ("[status]\npage_url = \"status.acme\"\n", "status.page_url"),
        (
            "[[status.webhooks]]\nurl = \"mailto:x\"\n",
            "status.webhooks[0].url",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{text}\n→ {e}");
    }
    let e = parse("[status]\ncolour = \"red\"\n").unwrap_err();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn environment_overrides_status_keys() {
    let c = orinari_config::parse(
        "",
        "t.toml",
        [(
            "ORINARI_STATUS_TIME_ZONE".to_string(),
            "Asia/Tokyo".to_string(),
        )],
    )
    .unwrap();
    assert_eq!(c.status.time_zone, "Asia/Tokyo");
}

#[test]
fn smtp_needs_a_relay_and_a_sender() {
    let s =
        parse("[status]\nsmtp = \"127.0.0.1:2525\"\nsmtp_from = \"status@acme.test\"\n").unwrap();
    let smtp = s.smtp.unwrap();
    assert_eq!(
        (smtp.relay.as_str(), smtp.from.as_str()),
        ("127.0.0.1:2525", "status@acme.test")
    );
    for (text, key) in [
        ("[status]\nsmtp = \"127.0.0.1:25\"\n", "status.smtp_from"),
        ("[status]\nsmtp_from = \"a@b.c\"\n", "status.smtp"),
        (
            "[status]\nsmtp = \"relay\"\nsmtp_from = \"a@b.c\"\n",
            "status.smtp",
        ),
        (
            "[status]\nsmtp = \"relay:25\"\nsmtp_from = \"nobody\"\n",
            "status.smtp_from",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{text}\n→ {e}");
    }
}

#[test]
fn builtin_checks_cover_model_backends_and_redis() {
    let s = parse(
        r#"
[cluster]
redis_url = "redis://:secret@10.0.0.5/0"
[[models]]
name = "gpt-4o-mini"
strategy = "p2c-ewma"
[[models.backends]]
name = "primary-a"
provider = "openai"
base_url = "http://127.0.0.1:9001/v1"
[[models.backends]]
name = "primary-b"
provider = "openai"
base_url = "https://api.example.org/v1"
"#,
    )
    .unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = s
        .checks
        .iter()
        .map(|c| {
            (
                c.component.id.as_str(),
                c.url.as_str(),
                c.component.group.as_ref().map(|g| g.1.as_str()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("storage", "builtin:storage", None),
            (
                "backend-gpt-4o-mini-primary-a",
                "tcp://127.0.0.1:9001",
                Some("Model backends")
            ),
            (
                "backend-gpt-4o-mini-primary-b",
                "tcp://api.example.org:443",
                Some("Model backends")
            ),
            ("redis", "tcp://10.0.0.5:6379", None),
        ]
    );
    assert!(
        !format!("{s:?}").contains("secret"),
        "no credentials in checks"
    );
}

#[test]
fn backends_with_a_region_are_grouped_by_region() {
    let s = parse(
        r#"
[[models]]
name = "chat"
[[models.backends]]
name = "eu-1"
provider = "openai"
base_url = "http://10.0.1.1:8000/v1"
region = "eu-west"
[[models.backends]]
name = "us-1"
provider = "openai"
base_url = "http://10.0.2.1:8000/v1"
region = "us-east"
[[models.backends]]
name = "any"
provider = "openai"
base_url = "http://10.0.3.1:8000/v1"
"#,
    )
    .unwrap();
    let groups: Vec<(&str, Option<(&str, &str)>)> = s
        .checks
        .iter()
        .filter(|c| c.component.id.starts_with("backend-"))
        .map(|c| {
            (
                c.component.id.as_str(),
                c.component
                    .group
                    .as_ref()
                    .map(|(id, name)| (id.as_str(), name.as_str())),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (
                "backend-chat-eu-1",
                Some(("model-backends-eu-west", "Model backends · eu-west"))
            ),
            (
                "backend-chat-us-1",
                Some(("model-backends-us-east", "Model backends · us-east"))
            ),
            (
                "backend-chat-any",
                Some(("model-backends", "Model backends"))
            ),
        ]
    );
}

#[test]
fn alert_rules_are_checked() {
    let s = parse(
        "[status]\nsmtp = \"relay:25\"\nsmtp_from = \"s@acme.test\"\nalert_emails = [\"ops@acme.test\"]\n\
         [[status.alerts]]\nname = \"Chat errors\"\nkind = \"error_rate\"\nroute = \"/v1/chat/completions\"\nthreshold = 0.05\n\
         [[status.alerts]]\nname = \"Slow\"\nkind = \"latency_p99\"\nthreshold = 2.5\nwindow = \"10m\"\nmin_requests = 100\n",
    )
    .unwrap();
    assert_eq!(s.alerts.len(), 2);
    assert_eq!(
        (s.alerts[0].id.as_str(), s.alerts[0].window),
        ("chat-errors", Duration::from_secs(300))
    );
    assert_eq!(s.alerts[0].kind, orinari_config::AlertKind::ErrorRate);
    assert_eq!(
        (s.alerts[1].min_requests, s.alerts[1].threshold),
        (100, 2.5)
    );
    for (text, key) in [
        (
            "[[status.alerts]]\nname = \"x\"\nkind = \"cpu\"\nthreshold = 1.0\n",
            "status.alerts[0].kind",
        ),
        (
            "[[status.alerts]]\nname = \"x\"\nkind = \"error_rate\"\nthreshold = 1.5\n",
            "status.alerts[0].threshold",
        ),
        (
            "[[status.alerts]]\nname = \"x\"\nkind = \"latency_p99\"\nthreshold = 1.0\nwindow = \"soon\"\n",
            "status.alerts[0].window",
        ),
        (
            "[status]\nalert_emails = [\"ops@acme.test\"]\n",
            "status.alert_emails",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{text}\n→ {e}");
    }
}

#[test]
fn json_conditions_need_both_keys() {
    let s = parse("[[status.checks]]\nname = \"a\"\nurl = \"http://x/health\"\njson_path = \"status\"\njson_equals = \"ok\"\n").unwrap();
    assert_eq!(s.checks[0].json, Some(("status".into(), "ok".into())));
    for (text, key) in [
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\njson_path = \"status\"\n",
            "status.checks[0].json_equals",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"http://x/\"\njson_equals = \"ok\"\n",
            "status.checks[0].json_path",
        ),
        (
            "[[status.checks]]\nname = \"a\"\nurl = \"tcp://x:1\"\njson_path = \"a\"\njson_equals = \"ok\"\n",
            "status.checks[0].json_path",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(&format!("`{key}`")), "{text}\n→ {e}");
    }
}

#[test]
fn visitor_webhook_settings() {
    let s = parse("").unwrap();
    assert!(s.visitor_webhooks.enabled);
    assert!(s.visitor_webhooks.allow.is_empty());
    assert_eq!(
        s.visitor_webhooks.max_failures,
        orinari_config::WEBHOOK_MAX_FAILURES
    );
    let s = parse(
        "[status]\nwebhook_subscriptions = false\nwebhook_allow = [\"127.0.0.1\", \"10.1.2.3/8\", \"fd00::/8\"]\nwebhook_max_failures = 3\n",
    )
    .unwrap();
    assert!(!s.visitor_webhooks.enabled);
    let allow: Vec<String> = s
        .visitor_webhooks
        .allow
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(allow, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
    assert_eq!(s.visitor_webhooks.max_failures, 3);
    for (text, key) in [
        (
            "[status]\nwebhook_allow = [\"intranet\"]\n",
            "status.webhook_allow[0]",
        ),
        (
            "[status]\nwebhook_allow = [\"10.0.0.0/33\"]\n",
            "status.webhook_allow[0]",
        ),
        (
            "[status]\nwebhook_max_failures = 0\n",
            "status.webhook_max_failures",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
    assert!(
        parse("[status]\nwebhook_allowlist = []\n")
            .unwrap_err()
            .contains("webhook_allowlist")
    );
}
