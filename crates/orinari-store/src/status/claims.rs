//! Once-only markers shared by every instance on one store: the first
//! caller to claim a key wins, so a reminder or an alert is sent once.

use crate::journal::Change;
use crate::{Store, StoreError};

impl Store {
    /// Claim a once-only marker: true for the first caller, on any instance
    /// sharing this store, false for every later one.
    pub async fn claim(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::Claim {
                key: key.into(),
                value: value.into(),
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }
}

/// Apply a `Claim`: the marker is inserted unless it exists (then 0 rows).
pub(super) async fn apply(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    value: &str,
) -> Result<Vec<u64>, sqlx::Error> {
    Ok(vec![
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    ])
}
