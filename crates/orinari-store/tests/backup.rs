//! Backups of the embedded store: point-in-time restore is exact, any one
//! surviving destination suffices, files are sealed, restores never overwrite.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use orinari_store::backup::{self, BackupConfig, BackupError, BackupKey, Backups};
use orinari_store::{NewApiKey, Store, now_ms};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Fixture {
    root: PathBuf,
    live: PathBuf,
    store: Store,
    backups: Backups,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn cfg(root: &Path) -> BackupConfig {
    BackupConfig {
        destinations: vec![root.join("dest-a"), root.join("dest-b")],
        key: BackupKey::from_base64(KEY).unwrap(),
        retention: Duration::from_secs(3600),
    }
}

async fn fixture() -> Fixture {
    let root =
        std::env::temp_dir().join(format!("orinari-backup-{}", uuid::Uuid::new_v4().simple()));
    let live = root.join("data/orinari.db");
    let store = Store::open(&format!("sqlite://{}", live.display()))
        .await
        .unwrap();
    let backups = Backups::new(store.clone(), live.clone(), cfg(&root)).unwrap();
    Fixture {
        root,
        live,
        store,
        backups,
    }
}

fn key(id: &str) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        name: format!("secret-name-{id}"),
        key_hash: format!("hash-{id}"),
        prefix: "ork_".into(),
        requests_per_minute: None,
        tokens_per_minute: None,
        allowed_models: None,
        priority: 0,
        max_concurrent: None,
        prompt_injection: None,
        allowed_sources: Some(vec![format!("source-of-{id}")]),
    }
}

async fn tick() -> i64 {
    tokio::time::sleep(Duration::from_millis(15)).await;
    let t = now_ms();
    tokio::time::sleep(Duration::from_millis(15)).await;
    t
}

async fn keys_at(cfg: &BackupConfig, at: i64, to: &Path) -> Vec<(String, bool)> {
    backup::restore(cfg, at, to, None).await.unwrap();
    let s = Store::open(&format!("sqlite://{}", to.display()))
        .await
        .unwrap();
    let mut v: Vec<(String, bool)> = s
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.revoked_at.is_some()))
        .collect();
    v.sort();
    s.close().await;
    v
}

#[tokio::test]
async fn restore_at_a_time_is_exact() {
    let f = fixture().await;
    f.store.create_key(key("k1")).await.unwrap();
    f.backups.ship().await.unwrap(); // first ship takes a base snapshot
    let t1 = tick().await;
    f.store.create_key(key("k2")).await.unwrap();
    f.backups.ship().await.unwrap();
    f.backups.snapshot().await.unwrap();
    let t2 = tick().await;
    f.store.create_key(key("k3")).await.unwrap();
    assert!(f.store.revoke_key("k1").await.unwrap());
    f.backups.ship().await.unwrap();
    let cfg = f.backups.config().clone();

    let at = |n: &str| f.root.join(format!("restored-{n}.db"));
    assert_eq!(
        keys_at(&cfg, t1, &at("t1")).await,
        vec![("k1".into(), false)]
    );
    assert_eq!(
        keys_at(&cfg, t2, &at("t2")).await,
        vec![("k1".into(), false), ("k2".into(), false)]
    );
    assert_eq!(
        keys_at(&cfg, i64::MAX, &at("latest")).await,
        vec![
            ("k1".into(), true),
            ("k2".into(), false),
            ("k3".into(), false)
        ]
    );
    // A key's policy survives the journal's replay (k3 came after the
    // last snapshot).
    let s = Store::open(&format!("sqlite://{}", at("latest").display()))
        .await
        .unwrap();
    let k3 = s
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == "k3");
    assert_eq!(
        k3.and_then(|k| k.allowed_sources),
        Some(vec!["source-of-k3".to_string()])
    );
    s.close().await;
    // Before the first backed-up write there is nothing to restore.
    let early = backup::restore(&cfg, 1, &at("early"), None).await;
    assert!(
        matches!(early, Err(BackupError::NothingToRestore(_))),
        "{early:?}"
    );
    // The restored store keeps journaling from where it left off.
    let s = Store::open(&format!("sqlite://{}", at("t2").display()))
        .await
        .unwrap();
    s.create_key(key("k9")).await.unwrap();
    s.close().await;
}

#[tokio::test]
async fn any_one_surviving_destination_is_enough() {
    let f = fixture().await;
    for i in 0..5 {
        f.store.create_key(key(&format!("k{i}"))).await.unwrap();
        f.backups.ship().await.unwrap();
    }
    let cfg = f.backups.config().clone();
    // Destination A is lost entirely; B still restores everything.
    std::fs::remove_dir_all(&cfg.destinations[0]).unwrap();
    let all = keys_at(&cfg, i64::MAX, &f.root.join("r1.db")).await;
    assert_eq!(all.len(), 5);
    // The next ship rebuilds A from a fresh snapshot.
    f.store.create_key(key("k5")).await.unwrap();
    f.backups.ship().await.unwrap();
    let a_only = BackupConfig {
        destinations: vec![cfg.destinations[0].clone()],
        ..cfg.clone()
    };
    assert_eq!(
        keys_at(&a_only, i64::MAX, &f.root.join("r2.db"))
            .await
            .len(),
        6
    );
    // A corrupted file in B: the restore falls back to A.
    let listing = backup::list(&cfg).unwrap();
    let snap = &listing[1].snapshots.last().unwrap().name;
    let p = cfg.destinations[1].join("snapshots").join(snap);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let b_first = BackupConfig {
        destinations: vec![cfg.destinations[1].clone(), cfg.destinations[0].clone()],
        ..cfg.clone()
    };
    let r = backup::restore(&b_first, i64::MAX, &f.root.join("r3.db"), None)
        .await
        .unwrap();
    assert_eq!(r.destination, cfg.destinations[0]);
}

#[tokio::test]
async fn files_are_sealed_and_verified() {
    let f = fixture().await;
    f.store.create_key(key("visible-marker")).await.unwrap();
    f.backups.ship().await.unwrap();
    f.store.create_key(key("visible-marker-2")).await.unwrap();
    f.backups.ship().await.unwrap();
    f.backups.snapshot().await.unwrap();
    let cfg = f.backups.config().clone();
    for dest in &cfg.destinations {
        for sub in ["snapshots", "journal"] {
            let Ok(entries) = std::fs::read_dir(dest.join(sub)) else {
                continue;
            };
            for e in entries {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                assert!(
                    !bytes.windows(14).any(|w| w == b"visible-marker"),
                    "plaintext in a backup file"
                );
            }
        }
    }
    let ok = backup::verify(&cfg, None).await.unwrap();
    assert!(ok.seq >= 1);
    let name = backup::list(&cfg).unwrap()[0].snapshots[0].name.clone();
    backup::verify(&cfg, Some(&name)).await.unwrap();
    // A wrong key fails verification instead of restoring garbage.
    let wrong = BackupConfig {
        key: BackupKey::from_base64("HxwdHhscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=").unwrap(),
        ..cfg.clone()
    };
    assert!(backup::verify(&wrong, None).await.is_err());
}

#[tokio::test]
async fn restore_never_overwrites() {
    let f = fixture().await;
    f.store.create_key(key("k1")).await.unwrap();
    f.backups.ship().await.unwrap();
    let cfg = f.backups.config().clone();
    let e = backup::restore(&cfg, i64::MAX, &f.live, Some(&f.live)).await;
    assert!(matches!(e, Err(BackupError::Target(_))), "{e:?}");
    let existing = f.root.join("exists.db");
    std::fs::write(&existing, b"precious").unwrap();
    let e = backup::restore(&cfg, i64::MAX, &existing, None).await;
    assert!(matches!(e, Err(BackupError::Target(_))));
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
}

#[tokio::test]
async fn retention_keeps_the_newest_snapshot_and_prunes_old_journal() {
    let f = fixture().await;
    f.store.create_key(key("k1")).await.unwrap();
    f.backups.ship().await.unwrap();
    f.store.create_key(key("k2")).await.unwrap();
    f.backups.ship().await.unwrap();
    f.backups.snapshot().await.unwrap();
    let cfg = f.backups.config().clone();
    let before = backup::list(&cfg).unwrap();
    assert_eq!(before[0].snapshots.len(), 2);
    // Far in the future every snapshot is past retention: only the newest stays,
    // and segments it already contains go.
    f.backups
        .apply_retention(now_ms() + 10 * 3_600_000)
        .unwrap();
    let after = backup::list(&cfg).unwrap();
    assert_eq!(after[0].snapshots.len(), 1);
    assert_eq!(after[0].snapshots[0], *before[0].snapshots.last().unwrap());
    assert!(after[0].segments.is_empty());
    assert_eq!(keys_at(&cfg, i64::MAX, &f.root.join("r.db")).await.len(), 2);
}

#[tokio::test]
async fn postgres_stores_have_no_embedded_backups() {
    use sqlx::Connection;
    let admin = std::env::var("ORINARI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("orinari_b_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let s = Store::open(&format!("{base}/{name}")).await.unwrap();
    let root = std::env::temp_dir();
    assert!(matches!(
        Backups::new(s.clone(), root.join("x.db"), cfg(&root)),
        Err(BackupError::NotSqlite)
    ));
    s.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn scheduler_reports_success_and_raises_the_rpo_alert_when_shipping_fails() {
    use orinari_store::backup::{Health, Schedule};
    let schedule = Schedule {
        snapshot_every: Duration::from_secs(3600),
        verify_every: Duration::from_secs(3600),
        alert_after: Duration::from_secs(1),
    };
    let run = |engine: Backups| async move {
        let (health, rx) = tokio::sync::watch::channel(Health::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(std::sync::Arc::new(engine).run(schedule, health, stopped));
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let seen = *rx.borrow();
        stop.send(true).unwrap();
        task.await.unwrap();
        seen
    };

    // Healthy destinations: successes are recent, no alert.
    let f = fixture().await;
    f.store.create_key(key("k1")).await.unwrap();
    let engine = Backups::new(f.store.clone(), f.live.clone(), cfg(&f.root)).unwrap();
    let h = run(engine).await;
    assert!(now_ms() - h.last_success_ms < 2_500, "{h:?}");
    assert!(!h.rpo_exceeded);

    // A destination that cannot be written (a file where a directory should
    // be): no success is recorded and the alert is raised after 1 s.
    let blocked = f.root.join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let broken = BackupConfig {
        destinations: vec![blocked],
        ..cfg(&f.root)
    };
    let started = now_ms();
    let engine = Backups::new(f.store.clone(), f.live.clone(), broken).unwrap();
    let h = run(engine).await;
    assert!(h.last_success_ms <= started + 100, "{h:?}");
    assert!(h.rpo_exceeded, "{h:?}");
}
