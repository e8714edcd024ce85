//! The instances of a cluster sharing one store (`/admin/v1/instances`).
//!
//! Each instance writes its own row at start and then every
//! [`HEARTBEAT_EVERY`] (and at once when its leadership changes): its id,
//! region, version, configuration hash, whether it leads, its process id
//! and when it was last seen. An instance not seen for [`STALE_AFTER`] is
//! stale (killed, hung or cut off); an orderly exit marks its row stopped;
//! rows neither seen nor stopped for [`FORGET_AFTER`] are deleted.
//!
//! An instance's id is stable across a binary upgrade (the new process
//! takes over the same row), so two processes of one instance may both
//! write for a moment: a row is only ever taken over by a process that
//! started later ([`InstanceRow::started_at`]), and only the process that
//! wrote it last (by `pid`) may mark it stopped.
//!
//! Rows are liveness, not history: they are written straight to the table,
//! outside the change journal, so backups neither grow with heartbeats nor
//! bring back instances that are gone.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::watch;

use crate::{Bounded, Store, StoreError, now_ms};

/// How often an instance writes its row.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// An instance not seen for this long (three heartbeats) is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// Rows not seen for this long are deleted.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One instance's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// Stable id (host and listening port).
    pub id: String,
    /// `[server] region`.
    pub region: Option<String>,
    /// The binary's version.
    pub version: String,
    /// A hash of the configuration every instance should share.
    pub config_hash: String,
    /// Whether it ran the singleton jobs at its last heartbeat.
    pub leader: bool,
    /// The process writing the row.
    pub pid: i64,
    /// When that process started (Unix ms).
    pub started_at: i64,
    /// Its last heartbeat (Unix ms).
    pub last_seen: i64,
    /// When it exited in order, if it did (Unix ms).
    pub stopped_at: Option<i64>,
}

const COLUMNS: &str =
    "id, region, version, config_hash, leader, pid, started_at, last_seen, stopped_at";

fn row(r: &AnyRow) -> Result<InstanceRow, StoreError> {
    let leader: i64 = r.try_get("leader")?;
    Ok(InstanceRow {
        id: r.try_get("id")?,
        region: r.try_get("region")?,
        version: r.try_get("version")?,
        config_hash: r.try_get("config_hash")?,
        leader: leader != 0,
        pid: r.try_get("pid")?,
        started_at: r.try_get("started_at")?,
        last_seen: r.try_get("last_seen")?,
        stopped_at: r.try_get("stopped_at")?,
    })
}

impl Store {
    /// Write an instance's row (its heartbeat). A row written by a process
    /// that started later is left alone (it is the upgraded instance);
    /// returns whether the row is now this one.
    pub async fn heartbeat_instance(&self, me: &InstanceRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO instances (id, region, version, config_hash, leader, pid, started_at, \
             last_seen, stopped_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) \
             ON CONFLICT (id) DO UPDATE SET region = excluded.region, \
             version = excluded.version, config_hash = excluded.config_hash, \
             leader = excluded.leader, pid = excluded.pid, started_at = excluded.started_at, \
             last_seen = excluded.last_seen, stopped_at = NULL \
             WHERE instances.started_at <= excluded.started_at",
        )
        .bind(&me.id)
        .bind(&me.region)
        .bind(&me.version)
        .bind(&me.config_hash)
        .bind(i64::from(me.leader))
        .bind(me.pid)
        .bind(me.started_at)
        .bind(me.last_seen)
        .execute(self.pool())
        .bounded()
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every instance's row, by id.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM instances ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).bounded().await?;
        rows.iter().map(row).collect()
    }

    /// Mark an instance stopped at `at`, if process `pid` still owns its
    /// row (after an upgrade the new process does); returns whether it did.
    pub async fn instance_stopped(&self, id: &str, pid: i64, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE instances SET stopped_at = $1, leader = 0 WHERE id = $2 AND pid = $3",
        )
        .bind(at)
        .bind(id)
        .bind(pid)
        .execute(self.pool())
        .bounded()
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete rows last seen before `before` (Unix ms); returns how many.
    pub async fn forget_instances(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM instances WHERE last_seen < $1")
            .bind(before)
            .execute(self.pool())
            .bounded()
            .await?;
        Ok(done.rows_affected())
    }
}

/// Whether an instance is serving, by its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Seen within [`STALE_AFTER`].
    Up,
    /// Not seen for [`STALE_AFTER`] and not stopped: killed, hung or cut off.
    Stale,
    /// Exited in order.
    Stopped,
}

impl InstanceState {
    /// `up`, `stale` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Stale => "stale",
            Self::Stopped => "stopped",
        }
    }
}

/// One instance as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Its row.
    pub row: InstanceRow,
    /// Whether it serves.
    pub state: InstanceState,
    /// An up instance whose version differs from the other up instances'
    /// (from the most common one; every one of them when no version is the
    /// most common alone).
    pub version_differs: bool,
    /// The same for the configuration hash.
    pub config_differs: bool,
}

/// The cluster as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Every known instance, by id.
    pub instances: Vec<InstanceView>,
    /// Whether every up instance runs the same version and configuration.
    pub agree: bool,
    /// How many up instances lead (1 in a healthy cluster; briefly 0 while
    /// leadership moves).
    pub leaders: usize,
}

/// The cluster seen at `now` (Unix ms) from its rows: which instances are
/// up, stale or stopped, and which up ones disagree with the others.
pub fn cluster_view(rows: Vec<InstanceRow>, now: i64) -> ClusterView {
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let state = |r: &InstanceRow| match r.stopped_at {
        Some(_) => InstanceState::Stopped,
        None if now.saturating_sub(r.last_seen) > stale_ms => InstanceState::Stale,
        None => InstanceState::Up,
    };
    let up: Vec<&InstanceRow> = rows
        .iter()
        .filter(|r| state(r) == InstanceState::Up)
        .collect();
    let version = reference(up.iter().map(|r| r.version.as_str()));
    let config = reference(up.iter().map(|r| r.config_hash.as_str()));
    let leaders = up.iter().filter(|r| r.leader).count();
    let instances: Vec<InstanceView> = rows
        .iter()
        .map(|r| {
            let st = state(r);
            let up = st == InstanceState::Up;
            InstanceView {
                row: r.clone(),
                state: st,
                version_differs: up && version.is_some_and(|v| v != r.version),
                config_differs: up && config.is_some_and(|c| c != r.config_hash),
            }
        })
        .collect();
    let agree = !instances
        .iter()
        .any(|i| i.version_differs || i.config_differs);
    ClusterView {
        instances,
        agree,
        leaders,
    }
}

/// The value instances should agree on: `Some("")` (matching none) when
/// they disagree with no value more common than every other, `None` when
/// all agree or there are none.
fn reference<'a>(values: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    if counts.len() <= 1 {
        return None;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    let mut most = counts.iter().filter(|(_, n)| **n == top).map(|(v, _)| *v);
    match (most.next(), most.next()) {
        (Some(v), None) => Some(v),
        _ => Some(""),
    }
}

/// This instance's registration: writes its row until stopped.
#[derive(Debug, Clone)]
pub struct Registration {
    store: Store,
    me: InstanceRow,
}

impl Registration {
    /// This process as instance `id`.
    pub fn new(
        store: Store,
        id: String,
        region: Option<String>,
        version: String,
        config_hash: String,
    ) -> Self {
        let now = now_ms();
        Self {
            store,
            me: InstanceRow {
                id,
                region,
                version,
                config_hash,
                leader: false,
                pid: i64::from(std::process::id()),
                started_at: now,
                last_seen: now,
                stopped_at: None,
            },
        }
    }

    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// Write the row now (at start, so the instance is listed before it
    /// serves); a failure is logged and retried by [`Registration::run`].
    pub async fn register(&mut self) {
        self.beat().await;
    }

    /// Heartbeat every [`HEARTBEAT_EVERY`] and whenever `leader` changes,
    /// until `stop` turns true (the instance drains: an upgraded process
    /// writes the row from then on); then mark the row stopped if this
    /// process still owns it.
    pub async fn run(mut self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now() + HEARTBEAT_EVERY;
        let mut tick = tokio::time::interval_at(start, HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_open = true;
        loop {
            self.me.leader = *leader.borrow_and_update();
            self.beat().await;
            tokio::select! {
                _ = tick.tick() => {}
                changed = leader.changed(), if leader_open => leader_open = changed.is_ok(),
                // Told to stop, or its owner is gone.
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        if let Err(e) = self
            .store
            .instance_stopped(&self.me.id, self.me.pid, now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not mark this instance stopped");
        }
    }

    async fn beat(&mut self) {
        self.me.last_seen = now_ms();
        match self.store.heartbeat_instance(&self.me).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("a newer process of this instance writes its row"),
            Err(e) => tracing::warn!(error = %e, "instance heartbeat failed"),
        }
        let forget = i64::try_from(FORGET_AFTER.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = self
            .store
            .forget_instances(self.me.last_seen.saturating_sub(forget))
            .await
        {
            tracing::warn!(error = %e, "could not forget old instances");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn r(id: &str, version: &str, hash: &str, last_seen: i64) -> InstanceRow {
        InstanceRow {
            id: id.into(),
            region: Some("local".into()),
            version: version.into(),
            config_hash: hash.into(),
            leader: false,
            pid: 1,
            started_at: 0,
            last_seen,
            stopped_at: None,
        }
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn agreeing_instances_are_not_marked() {
        let v = cluster_view(
            vec![r("a", "1", "h", NOW), r("b", "1", "h", NOW - 1_000)],
            NOW,
        );
        assert!(v.agree);
        assert!(
            v.instances
                .iter()
                .all(|i| i.state == InstanceState::Up && !i.version_differs && !i.config_differs)
        );
    }

    #[test]
    fn the_odd_one_out_is_marked() {
        let v = cluster_view(
            vec![
                r("a", "1", "h", NOW),
                r("b", "2", "h", NOW),
                r("c", "1", "x", NOW),
            ],
            NOW,
        );
        assert!(!v.agree);
        let marks: Vec<(bool, bool)> = v
            .instances
            .iter()
            .map(|i| (i.version_differs, i.config_differs))
            .collect();
        assert_eq!(marks, [(false, false), (true, false), (false, true)]);
    }

    #[test]
    fn without_a_majority_every_up_instance_is_marked() {
        let v = cluster_view(vec![r("a", "1", "h", NOW), r("b", "1", "x", NOW)], NOW);
        assert!(v.instances.iter().all(|i| i.config_differs));
        assert!(!v.agree);
    }

    #[test]
    fn stale_and_stopped_instances_are_shown_but_not_compared() {
        let mut stopped = r("c", "0", "old", NOW - 100);
        stopped.stopped_at = Some(NOW - 50);
        let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap();
        let mut leader = r("a", "1", "h", NOW);
        leader.leader = true;
        let v = cluster_view(
            vec![leader, r("b", "9", "y", NOW - stale_ms - 1), stopped],
            NOW,
        );
        let states: Vec<InstanceState> = v.instances.iter().map(|i| i.state).collect();
        assert_eq!(
            states,
            [
                InstanceState::Up,
                InstanceState::Stale,
                InstanceState::Stopped
            ]
        );
        assert!(v.agree);
        assert_eq!(v.leaders, 1);
    }

    /// The row's lifecycle on SQLite (PostgreSQL runs the same statements
    /// in `crates/orinari/tests/instances.rs`): an older process cannot
    /// take a row back from the newer one, and only the owner stops it.
    #[tokio::test]
    async fn a_newer_process_owns_the_row() {
        let dir = std::env::temp_dir().join(format!("orinari-inst-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/o.db", dir.display());
        let store = Store::open(&url).await.unwrap();
        let mut old = r("host:1", "1", "h", 10);
        old.pid = 100;
        old.started_at = 5;
        assert!(store.heartbeat_instance(&old).await.unwrap());
        let mut new = r("host:1", "2", "h", 20);
        new.pid = 200;
        new.started_at = 15;
        new.leader = true;
        assert!(store.heartbeat_instance(&new).await.unwrap());
        old.last_seen = 30;
        assert!(!store.heartbeat_instance(&old).await.unwrap());
        assert!(!store.instance_stopped("host:1", 100, 40).await.unwrap());
        assert_eq!(store.instances().await.unwrap(), vec![new.clone()]);
        assert!(store.instance_stopped("host:1", 200, 50).await.unwrap());
        let rows = store.instances().await.unwrap();
        assert_eq!(rows[0].stopped_at, Some(50));
        assert!(!rows[0].leader);
        assert_eq!(store.forget_instances(21).await.unwrap(), 1);
        assert!(store.instances().await.unwrap().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
