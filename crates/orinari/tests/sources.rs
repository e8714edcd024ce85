//! Data sources through the real binary: `orinari serve` starts them
//! (files indexed in the background, no "inactive" warning), a broken
//! optional source leaves `/readyz` ready, the embedded model answers a
//! grounded model with the passages and their outcomes, the admin API
//! shows them, `orinari sources list|status|reindex` work against the
//! configuration and the running instance, and SIGTERM still exits 0.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test by panicking"
)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_orinari");
const TOKEN: &str = "sources-admin-token";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orinari-sources-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

fn run(dir: &Path, args: &[&str], token: bool) -> Output {
    let mut cmd = orinari(dir);
    if token {
        cmd.env("ORINARI_ADMIN_TOKEN", TOKEN);
    }
    cmd.args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve {
    child: Child,
    base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve(dir: &Path) -> Serve {
    let mut child = orinari(dir)
        .arg("serve")
        .env("ORINARI_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("orinari is serving on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = child.kill();
        panic!("orinari serve did not start:\n{}", log.lock().unwrap());
    };
    Serve {
        child,
        base: format!("http://{addr}"),
        log,
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[test]
fn serve_starts_the_sources_and_the_commands_reach_them() {
    let dir = scratch("serve");
    std::fs::create_dir_all(dir.join("docs/guide")).unwrap();
    std::fs::write(
        dir.join("docs/guide/setup.md"),
        "# Setup\n\nInstall the frobnicator with the package manager, then run frob init.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("docs/billing.md"),
        "# Billing\n\nInvoices are emailed on the first day of each month.\n",
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("orinari.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[sources]]\nname = \"handbook\"\nkind = \"files\"\npath = \"docs\"\n\n\
             [[sources]]\nname = \"attic\"\nkind = \"files\"\npath = \"no-such-folder\"\n\n\
             [[models]]\nname = \"orinari-small\"\nbackend = \"local\"\nsources = [\"handbook\", \"attic\"]\n"
        ),
    )
    .unwrap();

    // From the configuration alone.
    let out = run(&dir, &["sources", "list"], false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.contains("handbook") && listed.contains("files") && listed.contains("orinari-small"),
        "{listed}"
    );
    let out = run(&dir, &["sources", "reindex", "nope"], true);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no source is named `nope`"));
    let out = run(&dir, &["sources", "status"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ORINARI_ADMIN_TOKEN"));
    // No instance running yet: a runtime failure, named.
    let out = run(&dir, &["sources", "status"], true);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no orinari instance answers"),
        "{}",
        text(&out.stderr)
    );

    let mut srv = serve(&dir);
    assert!(
        !srv.log.lock().unwrap().contains("not active"),
        "{}",
        srv.log.lock().unwrap()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The broken optional source does not make the instance unready.
        let (status, ready) = get(&format!("{}/readyz", srv.base), None).await;
        assert_eq!(status, 200, "{ready}");
        // Indexed in the background.
        let started = Instant::now();
        let sources = loop {
            let (status, body) = get(&format!("{}/admin/v1/sources", srv.base), Some(TOKEN)).await;
            assert_eq!(status, 200, "{body}");
            if body["data"][0]["documents"] == 2 {
                break body;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(sources["data"][1]["name"], "attic");
        assert!(sources["data"][1]["error"].is_string(), "{sources}");

        // A grounded answer from the embedded model.
        let body: Value = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", srv.base))
            .json(&json!({"model": "orinari-small", "max_tokens": 8,
                "messages": [{"role": "user", "content": "How do I install the frobnicator?"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["sources"][0]["document"], "guide/setup.md", "{body}");
        assert_eq!(body["choices"][0]["message"]["annotations"], json!([]));
        let outcomes = body["retrieval"].as_array().unwrap();
        assert_eq!(outcomes[0]["source"], "handbook");
        assert_eq!(outcomes[0]["outcome"], "ok");
        assert_eq!(outcomes[1]["source"], "attic");
        // A folder that is missing answers with nothing; its status says why.
        assert_eq!(outcomes[1]["outcome"], "ok");
        assert_eq!(outcomes[1]["hits"], 0);
        let (_, metrics) = (
            0,
            reqwest::get(format!("{}/metrics", srv.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        assert!(
            metrics.contains("orinari_retrieval_outcomes_total{source=\"attic\",outcome=\"ok\"} 1"),
            "{metrics}"
        );
    });

    let out = run(&dir, &["sources", "status", "handbook"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    assert!(
        status.contains("handbook (files)") && status.contains("documents 2"),
        "{status}"
    );
    assert!(!status.contains("attic"));
    let out = run(&dir, &["sources", "reindex", "handbook"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done in"),
        "{}",
        text(&out.stdout)
    );

    // SIGTERM drains and stops the indexers: exit 0.
    assert!(
        Command::new("kill")
            .args(["-TERM", &srv.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let code = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}\n{}", srv.log.lock().unwrap());
    // The question was never logged.
    assert!(!srv.log.lock().unwrap().contains("frobnicator"));
}
