//! Configuration reload on a running `orinari serve`, as an operator does
//! it: edit the file, then SIGHUP or `POST /admin/v1/reload`. Backends are
//! added and removed under streaming load with no failed request, limits
//! change at once, status checks start and stop probing, alert rules and
//! webhooks change, what needs a restart is reported by key, and an invalid
//! file changes nothing and is reported at its line and column.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orinari_fake_upstream::{FakeUpstream, Faults};

const BIN: &str = env!("CARGO_BIN_EXE_orinari");

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config file: one pooled model over `backends`, plus `extra` TOML.
fn write_config(path: &Path, port: u16, backends: &[(&str, &FakeUpstream)], extra: &str) {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
url = "sqlite://{dir}/o.db"
[guard]
prompt_injection = "off"
{extra}
[[models]]
name = "pooled"
strategy = "round-robin"
health_interval_ms = 100
"#,
        dir = path.parent().unwrap().display(),
    );
    for (name, up) in backends {
        text.push_str(&format!(
            "[[models.backends]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}\"\n",
            up.base_url()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn start(name: &str, backends: &[(&str, &FakeUpstream)], extra: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("orinari-reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("orinari.toml");
    write_config(&config, port, backends, extra);
    let child = Command::new(BIN)
        .current_dir(&dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ORINARI_ADMIN_TOKEN", "admin")
        .env("ORINARI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "orinari did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        port,
        dir,
        config,
    }
}

/// A blocking HTTP/1.1 request; returns status and the whole response.
fn request(port: u16, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

const STREAM: &str =
    r#"{"model":"pooled","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn reload(port: u16) -> (u16, serde_json::Value) {
    let (status, text) = request(port, "POST", "/admin/v1/reload", Some("admin"), "");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON object is the part between the outer braces.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (status, serde_json::from_str(json).unwrap_or_default())
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_within(what, Duration::from_secs(10), done).await;
}

async fn wait_within(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_change_under_streaming_load_without_a_failed_request() {
    // Streams take ~80 ms, so reloads land while answers are in flight.
    let slow = Faults {
        chunk_delay: Duration::from_millis(10),
        ..Faults::default()
    };
    let a = FakeUpstream::start(slow.clone()).await.unwrap();
    let b = FakeUpstream::start(slow).await.unwrap();
    let server = start("load", &[("a", &a)], "");
    let port = server.port;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let (status, text) =
                        request(port, "POST", "/v1/chat/completions", None, STREAM);
                    if status == 200 && text.contains("[DONE]") && !text.contains("\"error\"") {
                        ok += 1;
                    } else {
                        failed.push(text);
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    wait_for("traffic on a", || a.requests() > 10).await;

    // Add b by SIGHUP: traffic spreads over both.
    write_config(&server.config, port, &[("a", &a), ("b", &b)], "");
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("traffic on b", || b.requests() > 10).await;
    // The status page's built-in check of the new backend probes it.
    wait_observed(port, "backend-pooled-b", "operational").await;

    // Remove a by the admin API: a gets nothing more once its streams end.
    write_config(&server.config, port, &[("b", &b)], "");
    let (status, report) = tokio::task::spawn_blocking(move || reload(port))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    // The status page's built-in probe of each backend follows at once.
    assert_eq!(
        report["applied"],
        serde_json::json!(["models.pooled", "status.checks (model backends)"])
    );
    assert_eq!(report["restart_required"], serde_json::json!([]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_after = a.requests();
    let b_after = b.requests();
    wait_for("more traffic on b", || b.requests() > b_after + 20).await;
    assert_eq!(
        a.requests(),
        a_after,
        "a removed backend gets no new requests"
    );

    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for c in clients {
        let (ok, failed) = c.join().unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        answered += ok;
    }
    assert!(answered > 40, "{answered} answers");
    let (status, text) = request(port, "GET", "/admin/v1/models/pooled", Some("admin"), "");
    assert_eq!(status, 200);
    assert!(text.contains("\"b\"") && !text.contains("\"a\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_at_once_restarts_are_reported_and_bad_files_change_nothing() {
    let up = FakeUpstream::start(Faults::default()).await.unwrap();
    let server = start("limits", &[("a", &up)], "");
    let port = server.port;
    let whole = r#"{"model":"pooled","messages":[{"role":"user","content":"hi"}]}"#;
    let ask = move || request(port, "POST", "/v1/chat/completions", None, whole);
    for _ in 0..3 {
        assert_eq!(tokio::task::spawn_blocking(ask).await.unwrap().0, 200);
    }

    // A lower rate limit applies to the next request.
    write_config(
        &server.config,
        port,
        &[("a", &up)],
        "[limits]\nrequests_per_minute = 1\n",
    );
    let (status, report) = tokio::task::spawn_blocking(move || reload(port))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], serde_json::json!(["limits"]));
    // One request a minute: the next passes, the one after is refused.
    assert_eq!(tokio::task::spawn_blocking(ask).await.unwrap().0, 200);
    let (status, text) = tokio::task::spawn_blocking(ask).await.unwrap();
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("x-ratelimit-limit-requests: 1"), "{text}");

    // A new listener or store needs a restart: reported, and the running
    // values stay (so it is reported again until the restart).
    let other = free_port();
    let text = std::fs::read_to_string(&server.config)
        .unwrap()
        .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{other}"));
    std::fs::write(&server.config, text).unwrap();
    for _ in 0..2 {
        let (status, report) = tokio::task::spawn_blocking(move || reload(port))
            .await
            .unwrap();
        assert_eq!(status, 200, "{report}");
        // The status page's default address follows the listener.
        assert_eq!(
            report["restart_required"],
            serde_json::json!(["server.listen", "status.page_url"])
        );
        assert_eq!(report["applied"], serde_json::json!([]));
    }

    // An invalid file: 400 naming the key, no path in the answer, nothing changes.
    write_config(
        &server.config,
        port,
        &[("a", &up)],
        "[limits]\nrequests_per_minute = 0\n",
    );
    let (status, text) = tokio::task::spawn_blocking(move || {
        request(port, "POST", "/admin/v1/reload", Some("admin"), "")
    })
    .await
    .unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_config"), "{text}");
    // Line 9 of the file (`write_config`'s text) sets it.
    assert!(
        text.contains("orinari.toml:9:1: `limits.requests_per_minute`"),
        "{text}"
    );
    let dir = server.dir.display().to_string();
    assert!(!text.contains(&dir), "no file paths in responses: {text}");
    let (status, _) = tokio::task::spawn_blocking(ask).await.unwrap();
    assert_eq!(
        status, 429,
        "the limit of the last good configuration still holds"
    );
}

/// A TCP port that counts the connections made to it (a probe target).
fn counted_port() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, count)
}

/// An HTTP server that answers 200 to every POST and keeps the bodies (an
/// operator's webhook).
fn webhook_receiver() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as many body bytes as it announces.
            let body = loop {
                let Ok(n) = conn.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break Some(text[end + 4..].to_string());
                }
            };
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Some(b) = body {
                kept.lock().unwrap().push(b);
            }
        }
    });
    (port, bodies)
}

/// `GET /admin/v1/status`: the component with this id, if shown.
fn component(port: u16, id: &str) -> Option<serde_json::Value> {
    let (status, text) = request(port, "GET", "/admin/v1/status", Some("admin"), "");
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

/// Wait until `/admin/v1/status` shows what the probes of `id` saw.
async fn wait_observed(port: u16, id: &'static str, want: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let c = tokio::task::spawn_blocking(move || component(port, id))
            .await
            .unwrap();
        if c.as_ref().is_some_and(|c| c["observed"] == want) {
            return;
        }
        assert!(Instant::now() < until, "{id} never showed {want}: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `[status]` with a check on `probe` (when given), an operator webhook on
/// `hook`, and an alert rule on p99 latency above `p99_s`.
fn status_section(probe: Option<u16>, hook: u16, p99_s: f64) -> String {
    let mut s = String::new();
    if let Some(p) = probe {
        s.push_str(&format!(
            "[[status.checks]]\nname = \"Probe target\"\nid = \"target\"\nurl = \"tcp://127.0.0.1:{p}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n"
        ));
    }
    s.push_str(&format!(
        "[[status.webhooks]]\nurl = \"http://127.0.0.1:{hook}/hook\"\n\n[[status.alerts]]\nname = \"Slow answers\"\nkind = \"latency_p99\"\nthreshold = {p99_s:?}\nwindow = \"1m\"\nmin_requests = 1\n\n"
    ));
    s
}

fn events(bodies: &std::sync::Mutex<Vec<String>>, event: &str) -> usize {
    let needle = format!("\"event\":\"{event}\"");
    bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_checks_alerts_and_webhooks_reload_while_serving() {
    let up = FakeUpstream::start(Faults::default()).await.unwrap();
    let server = start("status", &[("a", &up)], "");
    let port = server.port;
    let (target, probed) = counted_port();
    let (hook, bodies) = webhook_receiver();
    let reload_now = move || tokio::task::spawn_blocking(move || reload(port));
    let get = move |path: &'static str| {
        tokio::task::spawn_blocking(move || request(port, "GET", path, None, ""))
    };
    let ask = |id: &'static str| tokio::task::spawn_blocking(move || component(port, id));
    assert!(ask("target").await.unwrap().is_none());

    // Add a check, a webhook and an alert rule that fires on any request.
    write_config(
        &server.config,
        port,
        &[("a", &up)],
        &status_section(Some(target), hook, 1e-6),
    );
    let (status, report) = reload_now().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"],
        serde_json::json!(["status.checks", "status.alerts", "status.webhooks"])
    );
    assert_eq!(report["restart_required"], serde_json::json!([]));
    // The new check is probed without a restart, and its component shows
    // what the probes saw.
    wait_for("the new check to be probed", || {
        probed.load(Ordering::SeqCst) > 0
    })
    .await;
    wait_observed(port, "target", "operational").await;
    // The new rule fires on the requests that follow; the new webhook hears it.
    for _ in 0..5 {
        assert_eq!(get("/healthz").await.unwrap().0, 200);
    }
    wait_within(
        "alert.firing at the new webhook",
        Duration::from_secs(15),
        || events(&bodies, "alert.firing") > 0,
    )
    .await;

    // A higher threshold: the same rule resolves.
    write_config(
        &server.config,
        port,
        &[("a", &up)],
        &status_section(Some(target), hook, 60.0),
    );
    let (status, report) = reload_now().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], serde_json::json!(["status.alerts"]));
    wait_within("alert.resolved", Duration::from_secs(15), || {
        events(&bodies, "alert.resolved") > 0
    })
    .await;

    // The check removed: nothing probes its target any more; its component
    // stays with its history, as after a restart.
    write_config(
        &server.config,
        port,
        &[("a", &up)],
        &status_section(None, hook, 60.0),
    );
    let (status, report) = reload_now().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], serde_json::json!(["status.checks"]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = probed.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        probed.load(Ordering::SeqCst),
        stopped_at,
        "a removed check is not probed"
    );
    assert!(ask("target").await.unwrap().is_some());

    // A bad file, by the admin API and by SIGHUP: refused at its line and
    // column, and nothing in it applies (its new check is never probed).
    let (other, other_probed) = counted_port();
    let bad = status_section(Some(other), hook, 60.0).replace("latency_p99", "latency_p42");
    write_config(&server.config, port, &[("a", &up)], &bad);
    let file = std::fs::read_to_string(&server.config).unwrap();
    let line = file
        .lines()
        .position(|l| l.contains("latency_p42"))
        .unwrap()
        + 1;
    let at = format!("orinari.toml:{line}:1: `status.alerts[0].kind`");
    let (status, text) = tokio::task::spawn_blocking(move || {
        request(port, "POST", "/admin/v1/reload", Some("admin"), "")
    })
    .await
    .unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(&at), "no {at} in: {text}");
    assert!(text.contains("latency_p42"), "{text}");
    // The log has the file's path, line and column, once per refusal.
    let log = server.dir.join("stderr.log");
    let refusals = || {
        let needle = format!(
            "{}:{line}:1: `status.alerts[0].kind`",
            server.config.display()
        );
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("configuration not reloaded") && l.contains(&needle))
            .count()
    };
    assert_eq!(refusals(), 1, "the admin API's refusal is logged");
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the refused SIGHUP in the log", || refusals() == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(other_probed.load(Ordering::SeqCst), 0, "{bad}");
}
