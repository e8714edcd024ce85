//! Backups of the embedded (SQLite) store with point-in-time restore.
//!
//! Two streams go to every destination, each file sealed with AES-256-GCM
//! ([`crate::crypt`]):
//!
//! - **snapshots**: a consistent online copy (`VACUUM INTO`) on a schedule;
//! - **the journal**: every committed change (`change_log`, written in the
//!   same transaction as the change), shipped every second, so a lost host
//!   loses at most the last second or so of writes.
//!
//! `restore --at T` takes the newest snapshot whose contents are all at or
//! before T, then replays journal entries in commit order while their commit
//! time is at or before T: the result is exactly the committed state at T. A
//! restore writes a new file and never touches the live database.

mod files;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection, Row};

pub use crate::crypt::BackupKey;
pub use files::{SegmentFile, SnapshotFile};

use crate::{Backend, Store, StoreError};

/// Journal entries per shipped segment at most.
const SEGMENT_MAX: i64 = 10_000;

/// Backup settings (validated config).
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Local directories (`file://` destinations).
    pub destinations: Vec<PathBuf>,
    /// The encryption key.
    pub key: BackupKey,
    /// Snapshots older than this are deleted (the newest is always kept).
    pub retention: Duration,
}

/// Errors of backup operations.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Backups need the embedded store.
    #[error(
        "backups of the embedded store need `[storage] url = \"sqlite://…\"`; for PostgreSQL use its WAL archiving (docs/operations/postgres-pitr.md)"
    )]
    NotSqlite,
    /// A destination could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Encryption or integrity failure.
    #[error("{0}")]
    Integrity(String),
    /// Nothing to restore at that time.
    #[error("{0}")]
    NothingToRestore(String),
    /// The restore target is not acceptable.
    #[error("{0}")]
    Target(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SQL failure while reading a snapshot.
    #[error("snapshot: {0}")]
    Sql(#[from] sqlx::Error),
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(what.display().to_string(), e)
}

/// What one destination holds.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The destination.
    pub destination: PathBuf,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotFile>,
    /// Journal segments, in order.
    pub segments: Vec<SegmentFile>,
}

impl Listing {
    /// The newest commit time that can be restored from here (Unix ms).
    pub fn newest_point(&self) -> Option<i64> {
        let snap = self.snapshots.iter().map(|s| s.max_at).max();
        let seg = self.segments.iter().map(|s| s.last_at).max();
        snap.max(seg)
    }
}

/// The result of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Destination used.
    pub destination: PathBuf,
    /// Snapshot started from.
    pub snapshot: String,
    /// Journal entries replayed.
    pub replayed: u64,
    /// Journal position reached.
    pub seq: i64,
    /// Commit time of the last change restored (Unix ms).
    pub at: i64,
}

/// The backup engine for a running store.
pub struct Backups {
    store: Store,
    live: PathBuf,
    cfg: BackupConfig,
    /// Snapshots and shipments run one at a time (scheduler, admin API, CLI
    /// in this process), so they never race on files or journal positions.
    busy: tokio::sync::Mutex<()>,
}

impl Backups {
    /// For an open SQLite store whose file is `live`.
    pub fn new(store: Store, live: PathBuf, cfg: BackupConfig) -> Result<Self, BackupError> {
        if store.backend() != Backend::Sqlite {
            return Err(BackupError::NotSqlite);
        }
        Ok(Self {
            store,
            live,
            cfg,
            busy: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BackupConfig {
        &self.cfg
    }

    /// Take a consistent snapshot and write it to every destination.
    pub async fn snapshot(&self) -> Result<SnapshotFile, BackupError> {
        let _one_at_a_time = self.busy.lock().await;
        self.snapshot_locked().await
    }

    async fn snapshot_locked(&self) -> Result<SnapshotFile, BackupError> {
        let dir = self.live.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".snapshot-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let target = tmp.to_string_lossy().replace('\'', "''");
        let made = sqlx::query(&format!("VACUUM INTO '{target}'"))
            .execute(self.store.pool())
            .await;
        let result = async {
            made?;
            let (seq, max_at) = journal_head(&tmp).await?;
            let bytes = std::fs::read(&tmp).map_err(io(&tmp))?;
            let name = files::snapshot_name(max_at, seq);
            let sealed = self
                .cfg
                .key
                .seal(&name, &bytes)
                .map_err(BackupError::Integrity)?;
            for dest in &self.cfg.destinations {
                let path = files::snapshot_path(dest, &name);
                files::write_atomic(&path, &sealed).map_err(io(&path))?;
            }
            Ok(SnapshotFile {
                name,
                max_at,
                seq,
                bytes: sealed.len() as u64,
            })
        }
        .await;
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Ship new journal entries to every destination; returns entries shipped
    /// (summed over destinations). A destination without a usable base gets a
    /// snapshot first.
    pub async fn ship(&self) -> Result<u64, BackupError> {
        let _one_at_a_time = self.busy.lock().await;
        let mut shipped = 0;
        let mut min_shipped = i64::MAX;
        for dest in &self.cfg.destinations {
            let mut last = shipped_up_to(dest)?;
            loop {
                let rows = sqlx::query(
                    "SELECT seq, at, body FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(last.unwrap_or(0))
                .bind(SEGMENT_MAX)
                .fetch_all(self.store.pool())
                .await
                .map_err(StoreError::from)?;
                let first = rows
                    .first()
                    .map(|r| r.try_get::<i64, _>("seq"))
                    .transpose()?;
                // No base yet, or the local journal no longer reaches back to
                // where this destination stopped: give it a snapshot.
                let gap = match (last, first) {
                    (None, _) => true,
                    (Some(l), Some(f)) => f != l + 1,
                    (Some(_), None) => false,
                };
                if gap {
                    // One snapshot serves every destination; the others
                    // simply gain a newer base.
                    let snap = self.snapshot_locked().await?;
                    last = Some(snap.seq);
                    continue;
                }
                let Some(first) = first else { break };
                let mut lines = String::new();
                let (mut end, mut end_at) = (first, 0);
                for r in &rows {
                    let (seq, at, body): (i64, i64, String) =
                        (r.try_get("seq")?, r.try_get("at")?, r.try_get("body")?);
                    let line = serde_json::json!({"seq": seq, "at": at, "body": body});
                    lines.push_str(&line.to_string());
                    lines.push('\n');
                    (end, end_at) = (seq, at);
                }
                let name = files::segment_name(first, end, end_at);
                let sealed = self
                    .cfg
                    .key
                    .seal(&name, lines.as_bytes())
                    .map_err(BackupError::Integrity)?;
                let path = files::segment_path(dest, &name);
                files::write_atomic(&path, &sealed).map_err(io(&path))?;
                shipped += rows.len() as u64;
                last = Some(end);
                if (rows.len() as i64) < SEGMENT_MAX {
                    break;
                }
            }
            min_shipped = min_shipped.min(last.unwrap_or(0));
        }
        // Entries every destination has are no longer needed locally; the
        // newest row is kept so the journal position survives restarts.
        if min_shipped != i64::MAX {
            sqlx::query("DELETE FROM change_log WHERE seq <= $1 AND seq < (SELECT MAX(seq) FROM change_log)")
                .bind(min_shipped)
                .execute(self.store.pool())
                .await
                .map_err(StoreError::from)?;
        }
        Ok(shipped)
    }

    /// Delete snapshots past the retention (always keeping the newest) and
    /// journal segments that only precede the oldest kept snapshot.
    pub fn apply_retention(&self, now_ms: i64) -> Result<(), BackupError> {
        let cutoff = now_ms - i64::try_from(self.cfg.retention.as_millis()).unwrap_or(i64::MAX);
        for dest in &self.cfg.destinations {
            let snaps = files::snapshots(dest).map_err(io(dest))?;
            let Some(newest) = snaps.last().cloned() else {
                continue;
            };
            let kept: Vec<&SnapshotFile> = snaps
                .iter()
                .filter(|s| s.max_at >= cutoff || s.name == newest.name)
                .collect();
            for s in snaps
                .iter()
                .filter(|s| !kept.iter().any(|k| k.name == s.name))
            {
                let p = files::snapshot_path(dest, &s.name);
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
            let base = kept.iter().map(|s| s.seq).min().unwrap_or(newest.seq);
            for seg in files::segments(dest).map_err(io(dest))? {
                if seg.last <= base {
                    let p = files::segment_path(dest, &seg.name);
                    std::fs::remove_file(&p).map_err(io(&p))?;
                }
            }
        }
        Ok(())
    }
}

/// Newest journal position a destination holds (snapshot or segment).
fn shipped_up_to(dest: &Path) -> Result<Option<i64>, BackupError> {
    let snap = files::snapshots(dest)
        .map_err(io(dest))?
        .iter()
        .map(|s| s.seq)
        .max();
    let seg = files::segments(dest)
        .map_err(io(dest))?
        .iter()
        .map(|s| s.last)
        .max();
    Ok(match (snap, seg) {
        (None, _) => None,
        (Some(a), b) => Some(a.max(b.unwrap_or(0))),
    })
}

/// (newest seq, its commit time) inside an SQLite file.
async fn journal_head(path: &Path) -> Result<(i64, i64), BackupError> {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    let row = sqlx::query("SELECT seq, at FROM change_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut conn)
        .await?;
    let head = match row {
        Some(r) => (r.try_get("seq")?, r.try_get("at")?),
        None => (0, 0),
    };
    conn.close().await?;
    Ok(head)
}

/// What every destination holds.
pub fn list(cfg: &BackupConfig) -> Result<Vec<Listing>, BackupError> {
    cfg.destinations
        .iter()
        .map(|d| {
            Ok(Listing {
                destination: d.clone(),
                snapshots: files::snapshots(d).map_err(io(d))?,
                segments: files::segments(d).map_err(io(d))?,
            })
        })
        .collect()
}

/// Restore the state committed at `at_ms` into a new SQLite file `to`, from
/// the first destination that can provide it. `live` is refused as a target.
pub async fn restore(
    cfg: &BackupConfig,
    at_ms: i64,
    to: &Path,
    live: Option<&Path>,
) -> Result<Restored, BackupError> {
    if to.exists() {
        return Err(BackupError::Target(format!(
            "{} already exists; a restore never overwrites a database",
            to.display()
        )));
    }
    if let (Some(live), Some(parent)) = (live, to.parent()) {
        let same_dir = std::fs::canonicalize(parent).ok()
            == live.parent().and_then(|p| std::fs::canonicalize(p).ok());
        if same_dir && to.file_name() == live.file_name() {
            return Err(BackupError::Target(
                "the target is the live database".into(),
            ));
        }
    }
    let mut errors = Vec::new();
    for dest in &cfg.destinations {
        match restore_from(cfg, dest, at_ms, to).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(destination = %dest.display(), error = %e, "restore from this destination failed");
                remove_db(to);
                errors.push(format!("{}: {e}", dest.display()));
            }
        }
    }
    Err(BackupError::NothingToRestore(format!(
        "no destination could restore the state at that time: {}",
        errors.join("; ")
    )))
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

async fn restore_from(
    cfg: &BackupConfig,
    dest: &Path,
    at_ms: i64,
    to: &Path,
) -> Result<Restored, BackupError> {
    let snaps = files::snapshots(dest).map_err(io(dest))?;
    let snap = snaps
        .iter()
        .filter(|s| s.max_at <= at_ms)
        .max_by_key(|s| s.seq)
        .ok_or_else(|| {
            BackupError::NothingToRestore(match snaps.first() {
                Some(s) => format!("the earliest restorable point is {} (Unix ms)", s.max_at),
                None => "no snapshots".into(),
            })
        })?;
    unseal_snapshot(cfg, dest, snap, to)?;
    let store = Store::open(&format!("sqlite://{}", to.display())).await?;
    let (mut seq, mut at) = (snap.seq, snap.max_at);
    let mut replayed = 0;
    'segments: for seg in files::segments(dest).map_err(io(dest))? {
        if seg.last <= seq {
            continue;
        }
        let path = files::segment_path(dest, &seg.name);
        let sealed = std::fs::read(&path).map_err(io(&path))?;
        let plain = cfg
            .key
            .open(&seg.name, &sealed)
            .map_err(BackupError::Integrity)?;
        let text = String::from_utf8(plain)
            .map_err(|_| BackupError::Integrity(format!("{}: not UTF-8", seg.name)))?;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| BackupError::Integrity(format!("{}: {e}", seg.name)))?;
            let (Some(s), Some(t), Some(body)) =
                (v["seq"].as_i64(), v["at"].as_i64(), v["body"].as_str())
            else {
                return Err(BackupError::Integrity(format!(
                    "{}: malformed entry",
                    seg.name
                )));
            };
            if s <= seq {
                continue;
            }
            if t > at_ms {
                break 'segments;
            }
            if s != seq + 1 {
                return Err(BackupError::Integrity(format!(
                    "journal gap: {} follows {seq}",
                    s
                )));
            }
            store.replay(s, t, body).await?;
            (seq, at) = (s, t);
            replayed += 1;
        }
    }
    store.close().await;
    Ok(Restored {
        destination: dest.to_path_buf(),
        snapshot: snap.name.clone(),
        replayed,
        seq,
        at,
    })
}

/// Restore the newest point (or one snapshot alone) into a temporary file and
/// check it: SQLite's integrity check, the journal position reached, and that
/// every table is readable. Returns what was restored.
pub async fn verify(cfg: &BackupConfig, snapshot: Option<&str>) -> Result<Restored, BackupError> {
    let tmp = std::env::temp_dir().join(format!(
        "orinari-verify-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    let target = tmp.join("verify.db");
    let result = async {
        let restored = match snapshot {
            None => restore(cfg, i64::MAX, &target, None).await?,
            Some(name) => {
                let dest = cfg
                    .destinations
                    .iter()
                    .find(|d| files::snapshot_path(d, name).is_file())
                    .ok_or_else(|| {
                        BackupError::NothingToRestore(format!("no snapshot named {name}"))
                    })?;
                let one = BackupConfig {
                    destinations: vec![dest.clone()],
                    ..cfg.clone()
                };
                let snap = files::snapshots(dest)
                    .map_err(io(dest))?
                    .into_iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| {
                        BackupError::NothingToRestore(format!("no snapshot named {name}"))
                    })?;
                restore_snapshot_only(&one, &snap, &target).await?
            }
        };
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", target.display()))
                .await?;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await?;
        if check != "ok" {
            return Err(BackupError::Integrity(format!("integrity check: {check}")));
        }
        for table in [
            "api_keys",
            "probe_results",
            "uptime_daily",
            "settings",
            "change_log",
        ] {
            sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut conn)
                .await?;
        }
        let (head, _) = journal_head(&target).await?;
        if head != restored.seq {
            return Err(BackupError::Integrity(format!(
                "restored journal position {head} differs from {}",
                restored.seq
            )));
        }
        conn.close().await?;
        Ok(restored)
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Decrypt one snapshot into a new database file `to`.
fn unseal_snapshot(
    cfg: &BackupConfig,
    dest: &Path,
    snap: &SnapshotFile,
    to: &Path,
) -> Result<(), BackupError> {
    let path = files::snapshot_path(dest, &snap.name);
    let sealed = std::fs::read(&path).map_err(io(&path))?;
    let plain = cfg
        .key
        .open(&snap.name, &sealed)
        .map_err(BackupError::Integrity)?;
    files::write_atomic(to, &plain).map_err(io(to))
}

async fn restore_snapshot_only(
    cfg: &BackupConfig,
    snap: &SnapshotFile,
    to: &Path,
) -> Result<Restored, BackupError> {
    let dest = &cfg.destinations[0];
    unseal_snapshot(cfg, dest, snap, to)?;
    Ok(Restored {
        destination: dest.clone(),
        snapshot: snap.name.clone(),
        replayed: 0,
        seq: snap.seq,
        at: snap.max_at,
    })
}

/// How often the journal is shipped: the bound on writes lost with the host.
pub const SHIP_EVERY: Duration = Duration::from_secs(1);

/// When the scheduled jobs run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Full snapshot interval.
    pub snapshot_every: Duration,
    /// Restore-and-check interval.
    pub verify_every: Duration,
    /// Alert (an ERROR log with `alert = "backup_rpo_exceeded"`) when no
    /// shipment has succeeded for this long.
    pub alert_after: Duration,
}

/// What the scheduler last achieved, for metrics and alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Unix ms of the last fully successful ship to every destination.
    pub last_success_ms: i64,
    /// Unix ms of the last successful verification.
    pub last_verified_ms: i64,
    /// No shipment has succeeded within `Schedule::alert_after`.
    pub rpo_exceeded: bool,
}

impl Backups {
    /// Run the schedule until `stop` turns true: ship every second, snapshot
    /// (then apply retention) every `snapshot_every`, verify every
    /// `verify_every`; a last ship runs on the way out. Failures are logged
    /// and retried at the next tick, never fatal. `health` gets each success.
    pub async fn run(
        self: std::sync::Arc<Self>,
        schedule: Schedule,
        health: tokio::sync::watch::Sender<Health>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ship = tokio::time::interval(SHIP_EVERY);
        let mut snap = tokio::time::interval(schedule.snapshot_every);
        let mut verify_tick = tokio::time::interval(schedule.verify_every);
        ship.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        verify_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        verify_tick.tick().await; // the first verification waits one period
        if *stop.borrow() {
            return;
        }
        let mut alerting = false;
        health.send_modify(|h| {
            if h.last_success_ms == 0 {
                h.last_success_ms = crate::now_ms();
            }
        });
        loop {
            tokio::select! {
                _ = ship.tick() => {
                    self.ship_logged(&health).await;
                    alerting = self.check_rpo(&health, schedule.alert_after, alerting);
                }
                _ = snap.tick() => {
                    match self.snapshot().await {
                        Ok(s) => tracing::info!(snapshot = %s.name, bytes = s.bytes, "backup snapshot written"),
                        Err(e) => tracing::error!(error = %e, "backup snapshot failed"),
                    }
                    if let Err(e) = self.apply_retention(crate::now_ms()) {
                        tracing::error!(error = %e, "backup retention failed");
                    }
                }
                _ = verify_tick.tick() => match verify(&self.cfg, None).await {
                    Ok(r) => {
                        health.send_modify(|h| h.last_verified_ms = crate::now_ms());
                        tracing::info!(seq = r.seq, destination = %r.destination.display(), "backup verified");
                    }
                    Err(e) => tracing::error!(error = %e, "backup verification failed"),
                },
                // Only `true` is ever sent; a dropped sender also means stop.
                _ = stop.changed() => break,
            }
        }
        self.ship_logged(&health).await;
    }

    /// Log the alert once when the last success gets too old, and once when
    /// it recovers; records it in `Health` and returns whether it is alerting.
    fn check_rpo(
        &self,
        health: &tokio::sync::watch::Sender<Health>,
        after: Duration,
        was: bool,
    ) -> bool {
        let age = crate::now_ms() - health.borrow().last_success_ms;
        let stale = age > i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        if stale && !was {
            tracing::error!(
                alert = "backup_rpo_exceeded",
                age_ms = age,
                "no backup has succeeded within the recovery point objective"
            );
        } else if !stale && was {
            tracing::info!(
                alert = "backup_rpo_exceeded",
                "backups are succeeding again"
            );
        }
        health.send_modify(|h| h.rpo_exceeded = stale);
        stale
    }

    async fn ship_logged(&self, health: &tokio::sync::watch::Sender<Health>) {
        match self.ship().await {
            Ok(n) => {
                health.send_modify(|h| h.last_success_ms = crate::now_ms());
                if n > 0 {
                    tracing::debug!(entries = n, "journal shipped");
                }
            }
            Err(e) => tracing::error!(error = %e, "journal shipping failed"),
        }
    }
}
