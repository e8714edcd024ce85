//! Probe history and daily uptime, with retention so neither grows without bound.

use sqlx::Row;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

const DAY_MS: i64 = 86_400_000;

/// One probe outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult<'a> {
    /// The check's stable id.
    pub check_id: &'a str,
    /// Unix ms.
    pub at: i64,
    /// Whether the check passed.
    pub up: bool,
    /// How long it took.
    pub latency_ms: i64,
}

/// Uptime of one check on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUptime {
    /// The check's id.
    pub check_id: String,
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Milliseconds with a known state.
    pub observed_ms: i64,
    /// Milliseconds up.
    pub up_ms: i64,
}

/// How long history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw probe results, in days.
    pub raw_days: i64,
    /// Daily rollups, in days (400 covers the status page's 90 days and a year).
    pub daily_days: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw_days: 14,
            daily_days: 400,
        }
    }
}

/// Rows removed by [`Store::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Raw results removed.
    pub raw: u64,
    /// Daily rollups removed.
    pub daily: u64,
}

impl Store {
    /// Record a probe outcome.
    pub async fn record_probe(&self, r: ProbeResult<'_>) -> Result<(), StoreError> {
        self.write(&Change::RecordProbe {
            check_id: r.check_id.to_string(),
            at: r.at,
            up: i64::from(r.up),
            latency_ms: r.latency_ms,
        })
        .await?;
        Ok(())
    }

    /// Results of one check at or after `since` (Unix ms), oldest first.
    pub async fn probe_results(
        &self,
        check_id: &str,
        since: i64,
    ) -> Result<Vec<(i64, bool, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, up, latency_ms FROM probe_results WHERE check_id = $1 AND at >= $2 ORDER BY at, id",
        )
        .bind(check_id)
        .bind(since)
        .fetch_all(self.pool())
        .bounded()
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    r.try_get::<i64, _>("up")? != 0,
                    r.try_get("latency_ms")?,
                ))
            })
            .collect()
    }

    /// Set (replace) one check's uptime for one day.
    pub async fn upsert_daily(&self, d: &DailyUptime) -> Result<(), StoreError> {
        if d.up_ms < 0 || d.observed_ms < d.up_ms || d.observed_ms > DAY_MS {
            return Err(StoreError::Invalid(format!(
                "daily uptime up_ms={} observed_ms={}",
                d.up_ms, d.observed_ms
            )));
        }
        self.write(&Change::UpsertDaily {
            check_id: d.check_id.clone(),
            day: d.day,
            observed_ms: d.observed_ms,
            up_ms: d.up_ms,
        })
        .await?;
        Ok(())
    }

    /// Daily uptime of one check from `first_day` on, oldest first.
    pub async fn daily_uptime(
        &self,
        check_id: &str,
        first_day: i64,
    ) -> Result<Vec<DailyUptime>, StoreError> {
        let rows = sqlx::query(
            "SELECT check_id, day, observed_ms, up_ms FROM uptime_daily WHERE check_id = $1 AND day >= $2 ORDER BY day",
        )
        .bind(check_id)
        .bind(first_day)
        .fetch_all(self.pool())
        .bounded()
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DailyUptime {
                    check_id: r.try_get("check_id")?,
                    day: r.try_get("day")?,
                    observed_ms: r.try_get("observed_ms")?,
                    up_ms: r.try_get("up_ms")?,
                })
            })
            .collect()
    }

    /// Delete history older than the retention allows, as of `now` (Unix ms).
    pub async fn prune(&self, now: i64, keep: Retention) -> Result<PruneStats, StoreError> {
        let n = self
            .write(&Change::Prune {
                raw_before: now - keep.raw_days * DAY_MS,
                day_before: now.div_euclid(DAY_MS) - keep.daily_days,
            })
            .await?;
        Ok(PruneStats {
            raw: n.first().copied().unwrap_or(0),
            daily: n.get(1).copied().unwrap_or(0),
        })
    }
}
