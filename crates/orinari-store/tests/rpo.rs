//! Recovery point objective of the embedded store, measured: a writer process
//! (this test binary re-run as a child) writes continuously with the backup
//! scheduler running; it is killed with SIGKILL at a random moment, its data
//! directory is deleted (the host is lost), and the newest backup is restored.
//! Every acknowledged write older than the RPO must be in the restore.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests fail loudly; the child reports on stdout"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orinari_store::backup::{self, BackupConfig, BackupKey, Backups, Health, Schedule};
use orinari_store::{ProbeResult, Store, now_ms};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const RPO_TARGET_MS: i64 = 5_000;

fn cfg(root: &Path) -> BackupConfig {
    BackupConfig {
        destinations: vec![root.join("offsite-a"), root.join("offsite-b")],
        key: BackupKey::from_base64(KEY).unwrap(),
        retention: Duration::from_secs(3600),
    }
}

/// The child: write a probe result every 5 ms and print each acknowledged
/// write's time; the backup scheduler runs alongside. Runs until killed.
#[tokio::test]
#[ignore = "run only as the child of rpo_within_target"]
async fn rpo_writer_child() {
    let root = PathBuf::from(std::env::var("ORINARI_RPO_ROOT").expect("started by the parent"));
    let live = root.join("host/data/orinari.db");
    let store = Store::open(&format!("sqlite://{}", live.display()))
        .await
        .unwrap();
    let engine = std::sync::Arc::new(Backups::new(store.clone(), live, cfg(&root)).unwrap());
    let (health, _) = tokio::sync::watch::channel(Health::default());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(engine.run(
        Schedule {
            snapshot_every: Duration::from_secs(2),
            verify_every: Duration::from_secs(3600),
            alert_after: Duration::from_secs(5),
        },
        health,
        stopped,
    ));
    loop {
        let at = now_ms();
        store
            .record_probe(ProbeResult {
                check_id: "rpo",
                at,
                up: true,
                latency_ms: 1,
            })
            .await
            .unwrap();
        println!("ack {at}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn rpo_within_target() {
    let root = std::env::temp_dir().join(format!("orinari-rpo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "rpo_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("ORINARI_RPO_ROOT", &root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(t) = line.strip_prefix("ack ") {
                let _ = tx.send(t.trim().parse::<i64>().unwrap());
            }
        }
    });
    // A "random" moment between 3 and 6 seconds in (from the clock's nanoseconds).
    let run_for = Duration::from_millis(
        3_000
            + u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
                    % 3_000,
            ),
    );
    let started = Instant::now();
    let mut acked = Vec::new();
    while started.elapsed() < run_for {
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(50)) {
            acked.push(t);
        }
    }
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let killed_at = now_ms();
    child.wait().unwrap();
    while let Ok(t) = rx.try_recv() {
        acked.push(t);
    }
    assert!(
        acked.len() > 100,
        "the writer barely ran: {} writes",
        acked.len()
    );
    // The host is gone.
    std::fs::remove_dir_all(root.join("host")).unwrap();

    let restored_path = root.join("restored/orinari.db");
    let started = Instant::now();
    backup::restore(&cfg(&root), i64::MAX, &restored_path, None)
        .await
        .unwrap();
    let store = Store::open(&format!("sqlite://{}", restored_path.display()))
        .await
        .unwrap();
    let rto = started.elapsed();
    let restored: std::collections::HashSet<i64> = store
        .probe_results("rpo", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(at, _, _)| at)
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|t| !restored.contains(t))
        .collect();
    let rpo_ms = lost.iter().map(|t| killed_at - t).max().unwrap_or(0);
    eprintln!(
        "RPO: {} of {} acknowledged writes lost, oldest lost {rpo_ms} ms before the kill; restore + open took {rto:?}",
        lost.len(),
        acked.len()
    );
    // Lost writes are only ever the newest ones: the restore is a prefix.
    if let Some(first_lost) = lost.iter().min() {
        assert!(
            restored.iter().all(|t| t < first_lost),
            "a hole in the restored history"
        );
    }
    assert!(
        rpo_ms <= RPO_TARGET_MS,
        "RPO {rpo_ms} ms exceeds {RPO_TARGET_MS} ms"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&root);
}
