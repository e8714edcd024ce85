//! Configuration reload on a running `orinari serve`, as an operator does
//! it: edit the file, then SIGHUP or `POST /admin/v1/reload`. Backends are
//! added and removed under streaming load with no failed request, limits
//! change at once, what needs a restart is reported, and an invalid file
//! changes nothing.
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
use std::sync::atomic::{AtomicBool, Ordering};
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
        .stderr(Stdio::null())
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

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
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

    // Remove a by the admin API: a gets nothing more once its streams end.
    write_config(&server.config, port, &[("b", &b)], "");
    let (status, report) = tokio::task::spawn_blocking(move || reload(port))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], serde_json::json!(["models.pooled"]));
    // The status page's built-in probe of each backend follows at restart.
    assert_eq!(
        report["restart_required"],
        serde_json::json!(["status (model backend checks)"])
    );
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
            serde_json::json!(["server", "status"])
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
    assert!(text.contains("requests_per_minute"), "{text}");
    let dir = server.dir.display().to_string();
    assert!(!text.contains(&dir), "no file paths in responses: {text}");
    let (status, _) = tokio::task::spawn_blocking(ask).await.unwrap();
    assert_eq!(
        status, 429,
        "the limit of the last good configuration still holds"
    );
}
