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

/// `orinari serve` with `config`, its log on stderr (piped).
fn command(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ORINARI_ADMIN_TOKEN", "admin")
        .env("ORINARI_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn serve(dir: &Path, config: &Path, key: Option<&str>) -> Child {
    let mut cmd = command(dir, config);
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

const BODY: &str = r#"{"model":"pooled","messages":[{"role":"user","content":"hi"}]}"#;

/// Wait for the server to listen, then send four chat requests: each is
/// answered in full.
async fn four_answers(port: u16) {
    tokio::task::spawn_blocking(move || wait_ready(port))
        .await
        .unwrap();
    for _ in 0..4 {
        let (status, text) = tokio::task::spawn_blocking(move || post(port, BODY))
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("tok7"), "{text}");
    }
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
    four_answers(port).await;
    assert_eq!((a.requests(), b.requests()), (2, 2));
    assert_eq!(a.last_auth().as_deref(), Some("Bearer sk-from-env"));

    a.stop().await;
    for _ in 0..6 {
        let (status, text) = tokio::task::spawn_blocking(move || post(port, BODY))
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

/// A minimal HTTP CONNECT proxy on its own threads: records each CONNECT
/// target, answers 200 and splices the bytes both ways.
fn connect_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                else {
                    let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
                    return;
                };
                log.lock().unwrap().push(target.to_string());
                let Ok(upstream) = TcpStream::connect(target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut c_in, mut u_out) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut u_out);
                    let _ = u_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut u_in, mut c_out) = (upstream, client);
                let _ = std::io::copy(&mut u_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_are_reached_through_the_environments_proxy() {
    let a = FakeUpstream::start(Faults::default()).await.unwrap();
    let b = FakeUpstream::start(Faults::default()).await.unwrap();
    let (proxy, seen) = connect_proxy();
    let dir = scratch("proxy");
    let port = free_port();
    let cfg = config(&dir, port, &a, &b);
    // b is named `localhost`, which NO_PROXY exempts: only a's connections
    // are tunnelled.
    let b_url = b.base_url().replace("127.0.0.1", "localhost");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(&b.base_url(), &b_url)).unwrap();
    let a_host = a.base_url().split('/').nth(2).unwrap().to_string();
    let mut child = command(&dir, &cfg)
        .env("TEST_UPSTREAM_KEY", "sk-proxied")
        .env("HTTP_PROXY", format!("http://127.0.0.1:{proxy}"))
        .env("NO_PROXY", "localhost")
        .env_remove("http_proxy")
        .env_remove("no_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    four_answers(port).await;
    assert_eq!((a.requests(), b.requests()), (2, 2));
    assert_eq!(a.last_auth().as_deref(), Some("Bearer sk-proxied"));
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "nothing went through the proxy");
    assert!(
        seen.iter().all(|t| *t == a_host),
        "only a's host is tunnelled ({a_host}), not b ({b_url}): {seen:?}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

/// `https` upstreams, trusted through the system's store (`SSL_CERT_FILE`):
/// with `http_version = "auto"` ORINARI speaks HTTP/2 to the one whose TLS
/// offers it (ALPN) and HTTP/1.1 to the one that offers only that; with
/// `"2"` the HTTP/1.1-only one is never sent a request (its requests fail
/// over to the other backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_speak_http2_where_tls_agrees() {
    let (a, a_cert) = FakeUpstream::start_tls(Faults::default(), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let (b, b_cert) = FakeUpstream::start_tls(Faults::default(), &[b"http/1.1"])
        .await
        .unwrap();
    let dir = scratch("https");
    let trust = dir.join("trust.pem");
    std::fs::write(&trust, format!("{a_cert}{b_cert}")).unwrap();
    let run = |cfg: &Path| {
        command(&dir, cfg)
            .env("TEST_UPSTREAM_KEY", "sk-tls")
            .env("SSL_CERT_FILE", &trust)
            .env_remove("SSL_CERT_DIR")
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    let port = free_port();
    let cfg = config(&dir, port, &a, &b);
    let mut child = run(&cfg);
    four_answers(port).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!((a.requests(), a.http2_requests()), (2, 2));
    assert_eq!((b.requests(), b.http2_requests()), (2, 0));

    let port = free_port();
    let cfg = config(&dir, port, &a, &b);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}http_version = \"2\"\n")).unwrap();
    let mut child = run(&cfg);
    four_answers(port).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!((a.requests(), a.http2_requests()), (6, 6));
    assert_eq!(
        b.requests(),
        2,
        "no request reached the HTTP/1.1-only upstream"
    );
}
