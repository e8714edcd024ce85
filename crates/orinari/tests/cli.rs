//! The `orinari` binary as users and operators drive it: exit codes, help,
//! `config check`, and `serve` with health, graceful SIGTERM drain, the drain
//! deadline and a missing model file.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orinari");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../orinari.example.toml")
}

/// A scratch directory per test, so no stray `orinari.toml` is discovered.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orinari-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean `ORINARI_*` environment (the model path is kept,
/// so a custom model location still works).
fn orinari(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ORINARI_") && k != "ORINARI_MODEL_PATH" {
            cmd.env_remove(&k);
        }
    }
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    orinari(dir).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ------------------------------------------------------------ plain commands

#[test]
fn version_exits_0() {
    let dir = scratch("version");
    let out = run(&dir, &["version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).starts_with("orinari "),
        "{}",
        text(&out.stdout)
    );
    let out = run(&dir, &["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn help_on_every_command_exits_0() {
    let dir = scratch("help");
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["serve", "--help"],
        &["config", "--help"],
        &["config", "check", "--help"],
        &["version", "--help"],
        &["help", "serve"],
        &["help", "config", "check"],
    ] {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(
            text(&out.stdout).contains("Usage:"),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn usage_errors_exit_1() {
    let dir = scratch("usage");
    for args in [
        &[][..],
        &["bogus"],
        &["--bogus"],
        &["serve", "--bogus"],
        &["serve", "extra"],
        &["config"],
        &["config", "bogus"],
        &["config", "check", "--bogus"],
        &["config", "check", "a.toml", "b.toml"],
        &["version", "--bogus"],
        &["--config"],
    ] {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

// -------------------------------------------------------------- config check

#[test]
fn config_check_accepts_the_example() {
    let dir = scratch("check-example");
    let example = example();
    let out = run(&dir, &["config", "check", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(
        &dir,
        &["--config", example.to_str().unwrap(), "config", "check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn config_check_without_a_file_checks_the_defaults() {
    let dir = scratch("check-defaults");
    let out = run(&dir, &["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn config_check_names_file_line_column_and_reason() {
    let dir = scratch("check-bad");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[limits]\nqueue_depth = 4\n  bogus = 1\n",
    )
    .unwrap();
    let out = run(&dir, &["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:6:3:", file.display())),
        "no file:line:column in: {err}"
    );
    assert!(err.contains("unknown field `bogus`"), "no reason in: {err}");

    // The same through --config, and through discovery of ./orinari.toml.
    let out = run(
        &dir,
        &["--config", file.to_str().unwrap(), "config", "check"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    std::fs::copy(&file, dir.join("orinari.toml")).unwrap();
    let out = run(&dir, &["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("orinari.toml:6:3:"), "{out:?}");
}

#[test]
fn config_check_semantic_error_names_the_key() {
    let dir = scratch("check-semantic");
    let file = dir.join("c.toml");
    std::fs::write(&file, "[limits]\nqueue_depth = 0\n").unwrap();
    let out = run(&dir, &["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Validation errors are placed in the file like syntax errors.
    assert!(
        text(&out.stderr).contains(&format!("{}:2:1: `limits.queue_depth`", file.display())),
        "{out:?}"
    );
}

#[test]
fn config_check_applies_env_overrides() {
    let dir = scratch("check-env");
    let out = orinari(&dir)
        .args(["config", "check"])
        .env("ORINARI_LIMITS_MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("ORINARI_LIMITS_MAX_BODY_BYTES"), "{err}");
    assert!(err.contains("limits.max_body_bytes"), "{err}");
}

#[test]
fn config_check_missing_file_exits_1_naming_it() {
    let dir = scratch("check-missing");
    let missing = dir.join("does-not-exist.toml");
    let out = run(&dir, &["config", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(missing.to_str().unwrap()),
        "{out:?}"
    );
}

#[test]
fn serve_with_bad_config_exits_1() {
    let dir = scratch("serve-bad-config");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "nope = true\n").unwrap();
    let out = run(&dir, &["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("{}:1:1:", file.display())),
        "{out:?}"
    );
}

#[test]
fn serve_with_missing_model_exits_2_naming_the_path() {
    let dir = scratch("serve-missing-model");
    let missing = dir.join("no-such-model.gguf");
    let out = orinari(&dir)
        .arg("serve")
        .env("ORINARI_SERVER_LISTEN", "127.0.0.1:0")
        .env("ORINARI_MODEL_PATH", &missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );
}

// -------------------------------------------------------------------- serve

/// A running `orinari serve` on an ephemeral port.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(name: &str, env: &[(&str, &str)]) -> Server {
        let dir = scratch(name);
        let mut cmd = orinari(&dir);
        cmd.arg("serve")
            .env("ORINARI_SERVER_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("orinari is serving on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "orinari serve did not announce its address:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            addr,
            stderr,
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for exit, at most `limit`; `None` if it is still running.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 response.
struct Response {
    status: u16,
    head: String,
    body: String,
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Split a whole response (read to EOF) into status, head and de-chunked body.
fn parse_response(raw: &[u8]) -> Response {
    let raw = text(raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        head: head.to_string(),
        body,
    }
}

/// Decode `Transfer-Encoding: chunked`, tolerating a truncated tail.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            out.push_str(&after[..after.len().min(n)]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

fn get(addr: SocketAddr, path: &str) -> Response {
    let mut s = request(addr, "GET", path, None);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// `None` when the connection is refused or cut before a response.
fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let r = parse_response(&raw);
    (r.status != 0).then_some(r)
}

/// Start a streaming chat request and return once its first chunk arrived.
fn start_stream(addr: SocketAddr, max_tokens: u32, prompt: &str) -> (TcpStream, Vec<u8>) {
    let body = serde_json::json!({
        "model": "orinari-small",
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "max_tokens": max_tokens,
        "temperature": 0,
    })
    .to_string();
    let mut s = request(addr, "POST", "/v1/chat/completions", Some(&body));
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !text(&raw).contains("\"content\":\"") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no first chunk: {}",
            text(&raw)
        );
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream closed before its first chunk: {}",
            text(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    (s, raw)
}

/// Read the rest of a stream until EOF or an error (a cut connection).
fn finish_stream(mut s: TcpStream, mut raw: Vec<u8>) -> Response {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw)
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

#[test]
fn serve_answers_health_and_drains_a_stream_on_sigterm() {
    // The drain deadline is far above any generation time, so the stream's
    // end is decided by the drain, never by how busy the machine is (under
    // the whole suite on 2 cores 60 tokens once took more than the default
    // 30 s deadline, and the stream was cut as the deadline demands).
    let mut server = Server::start(
        "serve-drain",
        &[("ORINARI_SERVER_SHUTDOWN_TIMEOUT_MS", "600000")],
    );
    let health = get(server.addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.head);

    let models = get(server.addr, "/v1/models");
    assert_eq!(models.status, 200);
    assert!(models.body.contains("orinari-small"), "{}", models.body);

    let (stream, first) = start_stream(
        server.addr,
        40,
        "Write a short story about a lighthouse keeper.",
    );
    server.sigterm();

    // Draining: new work is turned away (the connection is refused, or
    // readiness says 503), while the stream in flight runs to its end.
    std::thread::sleep(Duration::from_millis(300));
    if let Some(ready) = try_get(server.addr, "/readyz") {
        assert_eq!(ready.status, 503, "{}\n{}", ready.head, ready.body);
    }
    let response = finish_stream(stream, first);
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        response.head
    );
    let data = sse_data(&response.body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}\n{}",
        response.body,
        server.log()
    );
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{}",
        response.body
    );
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish.len(), 1, "{}", response.body);
    assert!(
        finish[0] == "stop" || finish[0] == "length",
        "{}",
        response.body
    );

    let status = server.wait_for_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit {status:?}:\n{}",
        server.log()
    );
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
}

#[test]
fn sigterm_with_a_short_drain_deadline_exits_0_quickly() {
    let mut server = Server::start(
        "serve-deadline",
        &[("ORINARI_SERVER_SHUTDOWN_TIMEOUT_MS", "300")],
    );
    let (stream, first) = start_stream(
        server.addr,
        3000,
        "Count from 1 to 2000, one number per line.",
    );
    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_for_exit(Duration::from_secs(60));
    let took = signalled.elapsed();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit {status:?}:\n{}",
        server.log()
    );
    // The 300 ms deadline ended it, not the 3,000-token answer (minutes);
    // the margin is for a loaded machine (9 s once, at load average 11).
    assert!(took < Duration::from_secs(20), "took {took:?} to exit");
    // The client sees the connection end (however the stream was cut).
    let response = finish_stream(stream, first);
    assert_eq!(response.status, 200, "{}", response.head);
}

#[test]
fn healthz_with_defaults_and_no_stray_output_on_stdout() {
    let mut server = Server::start("serve-health", &[]);
    for _ in 0..3 {
        assert_eq!(get(server.addr, "/healthz").status, 200);
    }
    let missing = get(server.addr, "/v1/models/no-such-model");
    assert_eq!(missing.status, 404, "{}", missing.body);
    server.sigterm();
    let status = server.wait_for_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.log());
}

fn admin_call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    call(addr, method, path, token, "")
}

#[test]
fn admin_backups_api_and_backup_metric() {
    let dir = scratch("admin-backups");
    std::fs::write(
        dir.join("orinari.toml"),
        format!(
            "[backup]\ndestinations = [\"file://{}/dest\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    let srv = Server::start(
        "admin-backups",
        &[
            (
                "ORINARI_BACKUP_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("ORINARI_ADMIN_TOKEN", "s3cret-admin-token"),
        ],
    );
    assert!(
        !srv.log().contains("s3cret-admin-token"),
        "the token leaked into the log"
    );
    let r = admin_call(srv.addr, "GET", "/admin/v1/backups", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("\"code\":\"missing_admin_token\""));
    let r = admin_call(srv.addr, "GET", "/admin/v1/backups", Some("wrong"));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = admin_call(
        srv.addr,
        "POST",
        "/admin/v1/backups",
        Some("s3cret-admin-token"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(created["id"].as_str().unwrap().ends_with(".snap"));
    let r = admin_call(
        srv.addr,
        "GET",
        "/admin/v1/backups",
        Some("s3cret-admin-token"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let listing: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let snaps = listing["destinations"][0]["snapshots"].as_array().unwrap();
    assert!(snaps.iter().any(|s| s["id"] == created["id"]), "{listing}");
    let r = admin_call(
        srv.addr,
        "POST",
        "/admin/v1/backups/verify",
        Some("s3cret-admin-token"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"ok\":true"));
    // The scheduler ships every second; the gauge follows at scrape time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = get(srv.addr, "/metrics");
        assert_eq!(m.status, 200);
        let value = m
            .body
            .lines()
            .find_map(|l| l.strip_prefix("orinari_backup_last_success_timestamp_seconds "))
            .map(|v| v.trim().parse::<f64>().unwrap());
        if value.is_some_and(|v| v > 1.7e9) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backup success reported: {}",
            m.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn generated_admin_token_is_shown_once_and_kept_as_a_hash() {
    let mut srv = Server::start("admin-generated", &[]);
    let log = srv.log();
    let token = log
        .lines()
        .find_map(|l| {
            l.split("admin token (shown once; set ORINARI_ADMIN_TOKEN to choose your own): ")
                .nth(1)
        })
        .expect("a generated token is printed")
        .trim()
        .to_string();
    assert!(token.starts_with("ora_") && token.len() > 60, "{token}");
    // Accepted (backups are not configured here, so the handler says so).
    let r = admin_call(srv.addr, "GET", "/admin/v1/backups", Some(&token));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("backups_not_configured"));
    srv.sigterm();
    let status = srv.wait_for_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        srv.log()
    );
    // Next start: not printed again, and the same token still works.
    let srv = Server::start("admin-generated", &[]);
    assert!(!srv.log().contains("shown once"), "{}", srv.log());
    let r = admin_call(srv.addr, "GET", "/admin/v1/backups", Some(&token));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = admin_call(srv.addr, "GET", "/admin/v1/backups", Some("ora_guess"));
    assert_eq!(r.status, 403);
}

fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// `orinari keys create|list|revoke` and `/admin/v1/keys` against one store,
/// with `[auth] required = true`: the key is printed once, only its hash is
/// stored, its own rate limit applies, and revoking it locks it out.
#[test]
fn api_keys_from_the_cli_and_the_admin_api() {
    let dir = scratch("keys");
    let _ = std::fs::remove_dir_all(dir.join("orinari-data"));
    let out = run(&dir, &["keys", "create", "--name", "ci", "--rpm", "2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let key = text(&out.stdout).trim().to_string();
    assert!(key.starts_with("ork_") && key.len() > 40, "{key}");
    assert!(text(&out.stderr).contains("shown once"));
    let out = run(&dir, &["keys", "create", "--name", ""]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("--name"), "{out:?}");
    let out = run(
        &dir,
        &[
            "keys",
            "create",
            "--name",
            "docs",
            "--sources",
            "handbook,wiki",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(&dir, &["keys", "create", "--name", "x", "--sources", ""]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("--sources"), "{out:?}");
    let out = run(&dir, &["keys", "list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("ci") && listing.contains("active"),
        "{listing}"
    );
    assert!(!listing.contains(&key), "the key itself is never listed");
    let db = std::fs::read(dir.join("orinari-data/orinari.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key itself is never stored"
    );

    let srv = Server::start(
        "keys",
        &[
            ("ORINARI_AUTH_REQUIRED", "true"),
            ("ORINARI_ADMIN_TOKEN", "adm-token"),
        ],
    );
    let r = call(srv.addr, "GET", "/v1/models", None, "");
    assert_eq!(r.status, 401, "{}", r.body);
    for _ in 0..2 {
        let r = call(srv.addr, "GET", "/v1/models", Some(&key), "");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = call(srv.addr, "GET", "/v1/models", Some(&key), "");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        r.head
    );

    // The admin API: create (key shown once), list (never the key), revoke.
    let r = call(
        srv.addr,
        "POST",
        "/admin/v1/keys",
        Some("adm-token"),
        r#"{"name": "ops", "requests_per_minute": 0}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("\"param\":\"requests_per_minute\""),
        "{}",
        r.body
    );
    let r = call(
        srv.addr,
        "POST",
        "/admin/v1/keys",
        Some("adm-token"),
        r#"{"name": "ops", "requests_per_minute": 30, "tokens_per_minute": 10000}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let second = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "ops");
    let r = call(srv.addr, "GET", "/v1/models", Some(&second), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(srv.addr, "GET", "/admin/v1/keys", Some("adm-token"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains(&second) && !r.body.contains(&key),
        "{}",
        r.body
    );
    assert!(r.body.contains(&id));
    let listed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let docs = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "docs")
        .unwrap();
    assert_eq!(
        docs["allowed_sources"],
        serde_json::json!(["handbook", "wiki"])
    );
    let r = call(
        srv.addr,
        "DELETE",
        &format!("/admin/v1/keys/{id}"),
        Some("adm-token"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(srv.addr, "GET", "/v1/models", Some(&second), "");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(
        srv.addr,
        "DELETE",
        &format!("/admin/v1/keys/{id}"),
        Some("adm-token"),
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        !srv.log().contains(&second) && !srv.log().contains(&key),
        "a key leaked into the log"
    );
}

// ------------------------------------------------------------------ upgrade

impl Server {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait until the log has `needle`, at most `limit`.
    fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// The process id the old process logged for the new one.
fn new_pid(log: &str) -> Option<u32> {
    log.lines()
        .rev()
        .filter(|l| l.contains("upgrade: new process started"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["pid"].as_u64())
        .find_map(|p| u32::try_from(p).ok())
}

/// SIGTERM to a process this test does not own, and wait for it to go.
fn stop_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A whole chat answer on a new connection; the status, or 0 when the
/// connection was refused or cut.
fn chat_status(addr: SocketAddr) -> u16 {
    let body =
        r#"{"model":"orinari-small","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let sent = write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if sent.is_err() {
        return 0;
    }
    let mut raw = Vec::new();
    if s.read_to_end(&mut raw).is_err() {
        return 0;
    }
    parse_response(&raw).status
}

/// SIGUSR2 under load: a new process takes the listening socket, the old
/// one finishes its stream and exits 0, and no request fails on the way —
/// none refused, none cut, none answered with an error.
#[test]
fn sigusr2_hands_the_listener_to_a_new_process_without_failing_a_request() {
    // The load stays clear of the rate limit: every refusal here would be
    // the upgrade's.
    let mut server = Server::start(
        "serve-upgrade",
        &[("ORINARI_LIMITS_REQUESTS_PER_MINUTE", "1000000")],
    );
    let addr = server.addr;
    let (stream, first) = start_stream(addr, 40, "Write a short poem about the sea.");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = if i == 0 {
                        chat_status(addr)
                    } else {
                        try_get(addr, "/v1/models").map_or(0, |r| r.status)
                    };
                    statuses.push(status);
                    std::thread::sleep(Duration::from_millis(2));
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    server.signal("USR2");
    assert!(
        server.wait_for_log("the new process is ready", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    let ready_after = signalled.elapsed();
    let pid = new_pid(&server.log()).expect("the new process's pid is logged");
    // The stream that began on the old process ends there, whole.
    let response = finish_stream(stream, first);
    assert_eq!(
        sse_data(&response.body).last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        response.body
    );
    let status = server.wait_for_exit(Duration::from_secs(30));
    // Load goes on against the new process alone for a while.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let served_after = get(addr, "/healthz").status;
    stop_pid(pid);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the old process exits 0 after draining: {status:?}\n{}",
        server.log()
    );
    assert_eq!(served_after, 200, "the new process serves");
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "upgrade: {} requests, {failed} failed, new process ready after {ready_after:?}",
        statuses.len()
    );
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert_eq!(failed, 0, "statuses: {statuses:?}\n{}", server.log());
}

/// A new binary that cannot start (here, a broken config file it reads)
/// leaves the old process serving, with the reason logged.
#[test]
fn sigusr2_with_a_new_process_that_fails_keeps_the_old_one_serving() {
    let mut server = Server::start("serve-upgrade-fails", &[]);
    std::fs::write(
        scratch("serve-upgrade-fails").join("orinari.toml"),
        "[server\n",
    )
    .unwrap();
    server.signal("USR2");
    assert!(
        server.wait_for_log("upgrade failed", Duration::from_secs(60)),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("exited before it was ready"),
        "{}",
        server.log()
    );
    assert_eq!(get(server.addr, "/healthz").status, 200);
    assert_eq!(get(server.addr, "/readyz").status, 200);
    assert!(server.wait_for_exit(Duration::from_millis(300)).is_none());
    server.sigterm();
    let status = server.wait_for_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.log());
}

/// The parent of a process, from `/proc/PID/stat` (as systemd reads it).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The upgrade under a supervisor, as systemd runs it (`Type=notify`,
/// `NotifyAccess=all`): this test is the supervisor, a child subreaper (as
/// PID 1 is) listening on `NOTIFY_SOCKET`. It gets READY=1 from the first
/// process; on SIGUSR2, READY=1 from the new one and `MAINPID=<new pid>`
/// from the old one, and by then the new process is the supervisor's own
/// child. systemd takes a main PID that is not its child for an alien one
/// and, on `systemctl stop`, SIGKILLs the service instead of waiting for
/// the drain: that is what `make deploy` showed under a real systemd before
/// the new process was started detached. The old process exits 0; the
/// supervisor reaps the new one's exit status itself after its drain.
/// A protocol test, not systemd (`make deploy` runs the real one).
#[test]
fn sigusr2_under_a_supervisor_names_a_main_pid_that_is_the_supervisors_child() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = scratch("serve-upgrade-notify");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut server = Server::start(
        "serve-upgrade-notify",
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let old = server.child.id();
    assert_eq!(recv(), "READY=1", "the first process says it is ready");
    server.signal("USR2");
    let (mut ready, mut main_pid) = (false, None);
    while !ready || main_pid.is_none() {
        let message = recv();
        match message.strip_prefix("MAINPID=") {
            Some(pid) => {
                let pid: u32 = pid.parse().unwrap();
                // What systemd checks when it takes the new main PID.
                assert_eq!(
                    parent_of(pid),
                    Some(std::process::id()),
                    "when MAINPID={pid} arrives, the new process is the supervisor's child, not pid {old}'s\n{}",
                    server.log()
                );
                main_pid = Some(pid);
            }
            None => {
                assert_eq!(message, "READY=1");
                ready = true;
            }
        }
    }
    let new = main_pid.unwrap();
    assert_ne!(new, old);
    assert_eq!(new_pid(&server.log()), Some(new), "{}", server.log());
    let status = server.wait_for_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the old process exits 0 after draining\n{}",
        server.log()
    );
    assert_eq!(
        get(server.addr, "/healthz").status,
        200,
        "the new process serves"
    );
    // SIGTERM to the main PID (as `systemctl stop` sends it): it drains and
    // the supervisor, its parent, reaps exit status 0.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(new).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(
        nix::sys::wait::waitpid(pid, None).unwrap(),
        nix::sys::wait::WaitStatus::Exited(pid, 0),
        "{}",
        server.log()
    );
}

/// `orinari serve --upgrade` finds the server by its listening address,
/// has it hand its socket to a new process (the SIGUSR2 path), and says
/// which process serves now; it refuses clearly when nothing, or something
/// else, listens there.
#[test]
fn serve_upgrade_hands_over_and_reports_the_new_pid() {
    let dir = scratch("serve-upgrade-cli");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let upgrade = || {
        orinari(&dir)
            .args(["serve", "--upgrade"])
            .env("ORINARI_SERVER_LISTEN", &addr)
            .output()
            .unwrap()
    };
    let mut server = Server::start("serve-upgrade-cli", &[("ORINARI_SERVER_LISTEN", &addr)]);
    let out = upgrade();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}\n{}",
        text(&out.stderr),
        server.log()
    );
    let pid = new_pid(&server.log()).expect("the new process's pid is logged");
    assert!(
        stdout.contains(&format!("upgraded: pid {pid} serves on {addr}")),
        "{stdout}"
    );
    assert_eq!(get(server.addr, "/healthz").status, 200);
    let status = server.wait_for_exit(Duration::from_secs(60));
    let served_after = get(server.addr, "/healthz").status;
    stop_pid(pid);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.log());
    assert_eq!(served_after, 200, "the new process serves");

    let out = upgrade();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("nothing listens on {addr}")),
        "{}",
        text(&out.stderr)
    );
    // A process that is not `orinari serve` is never signalled.
    let other = std::net::TcpListener::bind(&addr).unwrap();
    let out = upgrade();
    drop(other);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not `orinari serve`"),
        "{}",
        text(&out.stderr)
    );
}

/// `[server] inference_threads` sizes candle's pool, which reads only the
/// environment: `serve` starts itself again (same pid) with
/// `CANDLE_NUM_THREADS` set, over a different value the caller gave.
#[test]
fn inference_threads_size_the_model_pool() {
    let server = Server::start(
        "serve-threads",
        &[
            ("ORINARI_SERVER_INFERENCE_THREADS", "2"),
            ("CANDLE_NUM_THREADS", "1"),
        ],
    );
    let pid = server.child.id();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"CANDLE_NUM_THREADS=2"),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    // Two threads: the caller and one worker of candle's pool (made when
    // the model loaded).
    let workers = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("candle-bp-"))
        .count();
    assert_eq!(workers, 1, "{}", server.log());
    assert!(
        server.log().contains("\"inference_threads\":\"2\""),
        "{}",
        server.log()
    );
}
