//! `/admin/v1/instances` on real processes sharing one PostgreSQL database:
//! three `orinari serve` (two with the same configuration, one with a
//! different `[limits]`, regions of their own) list each other with their
//! version, configuration hash and region; exactly one leads; the odd one
//! out is marked; an instance that exits in order is shown stopped and no
//! longer counted. PostgreSQL: `ORINARI_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `make test` starts it).
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orinari_fake_upstream::{FakeUpstream, Faults};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orinari");

fn admin_url() -> String {
    std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(url: &str, sql: &str) {
    let ok = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .status()
        .expect("psql is installed (make test uses it)")
        .success();
    assert!(ok, "psql: {sql}");
}

/// A database of its own, dropped (with every instance stopped first) on drop.
struct Cluster {
    db: String,
    url: String,
    dir: PathBuf,
    servers: Vec<Server>,
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        psql(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
        );
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

impl Cluster {
    fn new() -> Self {
        let db = format!("orinari_inst_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        psql(&admin, &format!("CREATE DATABASE {db}"));
        let (base, _) = admin.rsplit_once('/').unwrap();
        let dir = std::env::temp_dir().join(&db);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            url: format!("{base}/{db}"),
            db,
            dir,
            servers: Vec::new(),
        }
    }

    /// Start one instance; returns its index.
    fn start(&mut self, up: &FakeUpstream, region: &str, extra: &str) -> usize {
        let port = free_port();
        let n = self.servers.len();
        let config = self.dir.join(format!("orinari-{n}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
region = "{region}"
[storage]
url = "{url}"
[guard]
prompt_injection = "off"
{extra}
[[models]]
name = "pooled"
[[models.backends]]
name = "a"
provider = "openai"
base_url = "{base}"
"#,
                url = self.url,
                base = up.base_url(),
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .current_dir(&self.dir)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("ORINARI_ADMIN_TOKEN", "admin")
            .env("ORINARI_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(Server { child, port });
        n
    }
}

/// `GET /admin/v1/instances` on `port` (blocking), or `None` if it does not answer yet.
fn instances(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET /admin/v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()
}

/// Poll `port` until `done` holds for its answer (generous: three debug
/// builds start on two loaded cores, and leadership has a grace period).
fn wait_for(port: u16, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        if let Some(v) = instances(port) {
            if done(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; last answer: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn entry(v: &Value, port: u16) -> &Value {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"].as_str().unwrap().ends_with(&format!(":{port}")))
        .unwrap_or_else(|| panic!("no instance on port {port} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_list_each_other_mark_the_odd_one_and_show_a_stopped_one() {
    let up = FakeUpstream::start(Faults::default()).await.unwrap();
    let mut cluster = Cluster::new();
    let a = cluster.start(&up, "eu-1", "");
    let b = cluster.start(&up, "eu-2", "");
    let c = cluster.start(&up, "local", "[limits]\nrequests_per_minute = 601\n");
    let ports: Vec<u16> = cluster.servers.iter().map(|s| s.port).collect();
    let (pa, pb, pc) = (ports[a], ports[b], ports[c]);

    let v = tokio::task::spawn_blocking(move || {
        wait_for(pa, "three instances up, one leader", |v| {
            let data = v["data"].as_array().unwrap();
            data.len() == 3 && data.iter().all(|i| i["state"] == "up") && v["leaders"] == 1
        })
    })
    .await
    .unwrap();
    let (ea, eb, ec) = (entry(&v, pa), entry(&v, pb), entry(&v, pc));
    assert_eq!(v["instance"], ea["id"], "{v}");
    assert_eq!(ea["this"], true);
    assert_eq!(eb["this"], false);
    for e in [ea, eb, ec] {
        assert_eq!(e["version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert_eq!(e["version_differs"], false, "{v}");
        assert_eq!(e["config_hash"].as_str().unwrap().len(), 16, "{v}");
    }
    assert_eq!(ea["region"], "eu-1");
    assert_eq!(eb["region"], "eu-2");
    assert_eq!(ec["region"], "local");
    // The region and the listening address are per instance: same hash.
    assert_eq!(ea["config_hash"], eb["config_hash"], "{v}");
    assert_ne!(ea["config_hash"], ec["config_hash"], "{v}");
    assert_eq!(ea["config_differs"], false, "{v}");
    assert_eq!(eb["config_differs"], false, "{v}");
    assert_eq!(ec["config_differs"], true, "{v}");
    assert_eq!(v["agree"], false);
    let leaders: Vec<&Value> = [ea, eb, ec]
        .into_iter()
        .filter(|e| e["leader"] == true)
        .collect();
    assert_eq!(leaders.len(), 1, "{v}");
    // No secret and no store URL in the answer.
    assert!(!v.to_string().contains("postgres"), "{v}");

    // Another instance sees the same cluster, itself as `this`.
    let vb = tokio::task::spawn_blocking(move || instances(pb))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry(&vb, pb)["this"], true);
    assert_eq!(vb["data"].as_array().unwrap().len(), 3);

    // The odd one exits in order: shown stopped, no longer compared.
    let pid = cluster.servers[c].child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let mut child = cluster.servers.remove(c).child;
        let status = child.wait().unwrap();
        (cluster, status)
    })
    .await
    .unwrap();
    let (_cluster, exit) = status;
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
    let v = tokio::task::spawn_blocking(move || {
        // Leadership may be moving if the stopped one led.
        wait_for(pa, "the stopped instance shown stopped, one leader", |v| {
            v["leaders"] == 1
                && v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["state"] == "stopped")
        })
    })
    .await
    .unwrap();
    let ec = entry(&v, pc);
    assert_eq!(ec["state"], "stopped", "{v}");
    assert_eq!(ec["leader"], false, "{v}");
    assert_eq!(ec["config_differs"], false, "{v}");
    assert!(ec["stopped_at_ms"].is_i64(), "{v}");
    assert_eq!(v["agree"], true, "{v}");
    assert_eq!(v["leaders"], 1, "{v}");
}

/// `orinari serve` with ACME on a PostgreSQL store: its stderr and whether
/// it stopped by itself within 60 s (it must, refusing to start).
fn serve_acme(cluster: &Cluster, up: &FakeUpstream, key: Option<&str>) -> (bool, String) {
    let config = cluster.dir.join("acme.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[server.tls]
listen = "127.0.0.1:{tls}"
acme = {{ domains = ["localhost"], directory = "https://127.0.0.1:1/dir", key_env = "ORINARI_TEST_ACME_KEY" }}
[storage]
url = "{url}"
[guard]
prompt_injection = "off"
[[models]]
name = "pooled"
[[models.backends]]
name = "a"
provider = "openai"
base_url = "{base}"
"#,
            port = free_port(),
            tls = free_port(),
            url = cluster.url,
            base = up.base_url(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&cluster.dir)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ORINARI_ADMIN_TOKEN", "admin")
        .env_remove("ORINARI_TEST_ACME_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        cmd.env("ORINARI_TEST_ACME_KEY", k);
    }
    let mut child = cmd.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        match child.try_wait().unwrap() {
            Some(status) => break !status.success(),
            None if Instant::now() > until => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (exited, err)
}

/// ACME in a cluster needs the shared key: a missing or malformed one stops
/// the instance at start with an error naming the key, never its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_instance_on_postgres_refuses_to_start_without_a_valid_key() {
    let up = FakeUpstream::start(Faults::default()).await.unwrap();
    let cluster = Cluster::new();
    let (stopped, err) = tokio::task::block_in_place(|| serve_acme(&cluster, &up, None));
    assert!(stopped, "started without its ACME key: {err}");
    assert!(
        err.contains("server.tls.acme.key_env") && err.contains("ORINARI_TEST_ACME_KEY is not set"),
        "{err}"
    );
    let (stopped, err) =
        tokio::task::block_in_place(|| serve_acme(&cluster, &up, Some("c2VjcmV0LXZhbHVl")));
    assert!(stopped, "started with a 12-byte key: {err}");
    assert!(
        err.contains("server.tls.acme.key_env (ORINARI_TEST_ACME_KEY)")
            && err.contains("must be 32 bytes"),
        "{err}"
    );
    assert!(
        !err.contains("c2VjcmV0LXZhbHVl"),
        "the key's value was printed: {err}"
    );
}
