//! Recovery time of the embedded store: build a store of a given size, back
//! it up (snapshot + journal), lose the host, then time `restore` until the
//! restored store answers a query. Prints one JSON line.
//!
//! `cargo run --release -p orinari-store --example rto -- [SIZE_MB]` (default 1024).
#![allow(clippy::print_stdout, reason = "a benchmark prints its result")]

use std::time::{Duration, Instant};

use anyhow::Context;
use orinari_store::backup::{self, BackupConfig, BackupKey, Backups};
use orinari_store::{ProbeResult, Store, now_ms};
use sqlx::Connection;

const ROWS_PER_BATCH: i64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let size_mb: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let root = std::env::temp_dir().join(format!("orinari-rto-{}", std::process::id()));
    let live = root.join("host/orinari.db");
    let store = Store::open(&format!("sqlite://{}", live.display())).await?;

    // Bulk rows straight into SQLite (outside the journal: they reach the
    // backup through the snapshot, as an old store's history would).
    let started = Instant::now();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", live.display())).await?;
    let mut next = 0i64;
    while std::fs::metadata(&live)?.len() < size_mb * 1024 * 1024 {
        sqlx::query(
            "INSERT INTO probe_results (check_id, at, up, latency_ms) \
             WITH RECURSIVE c(x) AS (SELECT $1 UNION ALL SELECT x + 1 FROM c WHERE x < $2) \
             SELECT 'check-' || (x % 50), x * 1000, x % 2, x % 997 FROM c",
        )
        .bind(next)
        .bind(next + ROWS_PER_BATCH - 1)
        .execute(&mut conn)
        .await?;
        next += ROWS_PER_BATCH;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    let build_s = started.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(&live)?.len();

    let cfg = BackupConfig {
        destinations: vec![root.join("offsite")],
        key: BackupKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .map_err(anyhow::Error::msg)?,
        retention: Duration::from_secs(86_400),
    };
    let engine = Backups::new(store.clone(), live.clone(), cfg.clone())?;
    let started = Instant::now();
    let snap = engine.snapshot().await?;
    let snapshot_s = started.elapsed().as_secs_f64();
    for i in 0..100 {
        store
            .record_probe(ProbeResult {
                check_id: "after-snapshot",
                at: now_ms() + i,
                up: true,
                latency_ms: 1,
            })
            .await?;
    }
    engine.ship().await?;
    store.close().await;
    drop(engine);
    std::fs::remove_dir_all(root.join("host")).context("losing the host")?;

    // RTO: from `restore` to a store that answers queries.
    let target = root.join("restored/orinari.db");
    let started = Instant::now();
    let r = backup::restore(&cfg, i64::MAX, &target, None).await?;
    let restored = Store::open(&format!("sqlite://{}", target.display())).await?;
    let recent = restored.probe_results("after-snapshot", 0).await?.len();
    let rto_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        recent == 100,
        "journal entries missing after restore: {recent}"
    );
    restored.close().await;
    println!(
        "{}",
        serde_json::json!({
            "db_mib": db_bytes / (1024 * 1024),
            "rows": next,
            "build_s": (build_s * 10.0).round() / 10.0,
            "snapshot_s": (snapshot_s * 100.0).round() / 100.0,
            "snapshot_sealed_mib": snap.bytes / (1024 * 1024),
            "replayed": r.replayed,
            "rto_s": (rto_s * 100.0).round() / 100.0,
        })
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
