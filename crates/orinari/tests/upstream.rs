//! `orinari serve` with a model served by upstream backends, as an operator
//! runs it: the key comes from `api_key_env` (a missing variable stops the
//! start with a message naming it), answers are relayed from the upstream,
//! and a dead backend fails over to the other.
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
use std::time::{Duration, Instant};

use orinari_fake_upstream::{FakeUpstream, Faults};

const BIN: &str = env!("CARGO_BIN_EXE_orinari");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orinari-up-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, a: &FakeUpstream, b: &FakeUpstream) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
url = "sqlite://{dir}/o.db"
[guard]
prompt_injection = "off"
[[models]]
name = "pooled"
strategy = "round-robin"
health_interval_ms = 100
[[models.backends]]
name = "a"
provider = "openai"
base_url = "{a}"
api_key_env = "TEST_UPSTREAM_KEY"
[[models.backends]]
name = "b"
provider = "openai"
base_url = "{b}"
api_key_env = "TEST_UPSTREAM_KEY"
"#,
        dir = dir.display(),
        a = a.base_url(),
        b = b.base_url(),
    );
    let path = dir.join("orinari.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(dir: &Path, config: &Path, key: Option<&str>) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ORINARI_ADMIN_TOKEN", "admin")
        .env("ORINARI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match key {
        Some(k) => cmd.env("TEST_UPSTREAM_KEY", k),
        None => cmd.env_remove("TEST_UPSTREAM_KEY"),
    };
    cmd.spawn().unwrap()
}

/// A blocking HTTP/1.1 POST; returns status and body.
fn post(port: u16, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

fn wait_ready(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("orinari did not start listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_model_serves_fails_over_and_needs_its_key() {
    let mut a = FakeUpstream::start(Faults::default()).await.unwrap();
    let b = FakeUpstream::start(Faults::default()).await.unwrap();
    let dir = scratch("pool");
    let port = free_port();
    let cfg = config(&dir, port, &a, &b);

    // Without the key variable the start fails, naming it.
    let out = serve(&dir, &cfg, None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TEST_UPSTREAM_KEY"), "{err}");

    let mut child = serve(&dir, &cfg, Some("sk-from-env"));
    let p = port;
    tokio::task::spawn_blocking(move || wait_ready(p))
        .await
        .unwrap();
    let body = r#"{"model":"pooled","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..4 {
        let (status, text) = tokio::task::spawn_blocking(move || post(p, body))
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("tok7"), "{text}");
    }
    assert_eq!((a.requests(), b.requests()), (2, 2));
    assert_eq!(a.last_auth().as_deref(), Some("Bearer sk-from-env"));

    a.stop().await;
    for _ in 0..6 {
        let (status, text) = tokio::task::spawn_blocking(move || post(p, body))
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
    }
    assert_eq!(b.requests(), 8);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("sk-from-env"),
        "the key never reaches the log"
    );
}
