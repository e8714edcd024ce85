//! Every write is a [`Change`]: a value that carries all its inputs (times
//! included), applied by one function both live and when a backup is
//! replayed. On SQLite each change is recorded in `change_log` in the same
//! transaction, so the journal is exactly the committed history.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::{Backend, Store, StoreError};

/// One committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A new API key.
    CreateKey {
        /// Stable id.
        id: String,
        /// Name.
        name: String,
        /// Hex digest.
        key_hash: String,
        /// First characters.
        prefix: String,
        /// Per-key request limit.
        requests_per_minute: Option<i64>,
        /// Per-key token limit.
        tokens_per_minute: Option<i64>,
        /// Models the key may use (JSON array); `None` = all.
        #[serde(default)]
        allowed_models: Option<String>,
        /// Admission priority (higher first).
        #[serde(default)]
        priority: i64,
        /// Per-key concurrency cap.
        #[serde(default)]
        max_concurrent: Option<i64>,
        /// Per-key prompt-injection policy.
        #[serde(default)]
        prompt_injection: Option<String>,
        /// Sources the key's answers may search (JSON array); `None` = all.
        #[serde(default)]
        allowed_sources: Option<String>,
        /// Unix ms.
        created_at: i64,
    },
    /// A key revoked.
    RevokeKey {
        /// The key.
        id: String,
        /// Unix ms.
        at: i64,
    },
    /// A probe outcome.
    RecordProbe {
        /// Check id.
        check_id: String,
        /// Unix ms.
        at: i64,
        /// 1 up, 0 down.
        up: i64,
        /// Latency.
        latency_ms: i64,
    },
    /// A day's uptime set.
    UpsertDaily {
        /// Check id.
        check_id: String,
        /// Days since the epoch.
        day: i64,
        /// Observed ms.
        observed_ms: i64,
        /// Up ms.
        up_ms: i64,
    },
    /// An instance setting written (insert or replace).
    SetSetting {
        /// Name.
        key: String,
        /// Value.
        value: String,
    },
    /// A status-page component defined or its definition refreshed (status kept).
    UpsertComponent {
        /// Component id.
        id: String,
        /// Name.
        name: String,
        /// Description.
        description: Option<String>,
        /// Order.
        position: i64,
        /// Group.
        group_id: Option<String>,
        /// 1 for a group header.
        is_group: i64,
        /// 1 to show uptime bars.
        showcase: i64,
        /// Unix ms.
        at: i64,
    },
    /// A component's status changed (recorded in its history).
    SetComponentStatus {
        /// Component id.
        id: String,
        /// Effective status.
        status: String,
        /// What the probes saw, when they decided it.
        observed: Option<String>,
        /// Unix ms.
        at: i64,
    },
    /// An incident opened or a maintenance scheduled, with its first update.
    CreateIncident {
        /// Incident id.
        id: String,
        /// `incident` or `maintenance`.
        kind: String,
        /// Title.
        name: String,
        /// Status.
        status: String,
        /// Impact.
        impact: String,
        /// Unix ms.
        at: i64,
        /// Window start, Unix ms.
        scheduled_for: Option<i64>,
        /// Window end, Unix ms.
        scheduled_until: Option<i64>,
        /// Affected components and their status.
        components: Vec<(String, String)>,
        /// First update's id.
        update_id: String,
        /// First update's message.
        body: String,
        /// First update's `affected_components` JSON.
        affected: Option<String>,
    },
    /// An update added to an incident or maintenance.
    AddIncidentUpdate {
        /// Update id.
        id: String,
        /// Incident id.
        incident_id: String,
        /// Status it sets.
        status: String,
        /// Message.
        body: String,
        /// Unix ms.
        at: i64,
        /// `affected_components` JSON.
        affected: Option<String>,
        /// Component statuses it sets within the incident.
        components: Vec<(String, String)>,
    },
    /// A once-only marker claimed (a notification sent by one instance of many).
    Claim {
        /// The marker.
        key: String,
        /// What claimed it.
        value: String,
    },
    /// A visitor asked for email notifications (not yet confirmed).
    Subscribe {
        /// Subscription id.
        id: String,
        /// Address.
        email: String,
        /// Component ids, comma-separated; empty for all.
        components: String,
        /// SHA-256 (hex) of the confirmation token.
        confirm_hash: String,
        /// The unsubscribe token.
        unsubscribe_token: String,
        /// Unix ms.
        at: i64,
    },
    /// A subscription confirmed by its token's hash.
    ConfirmSubscription {
        /// SHA-256 (hex) of the token.
        confirm_hash: String,
        /// Unix ms.
        at: i64,
    },
    /// A subscription ended by its unsubscribe token.
    Unsubscribe {
        /// The token.
        token: String,
        /// Unix ms.
        at: i64,
    },
    /// A visitor's webhook subscription, verified.
    SubscribeWebhook {
        /// Subscription id.
        id: String,
        /// Where notifications are POSTed.
        url: String,
        /// Component ids, comma-separated; empty for all.
        components: String,
        /// The signing secret.
        secret: String,
        /// The unsubscribe token.
        unsubscribe_token: String,
        /// Unix ms.
        at: i64,
    },
    /// The outcome of one notification to a webhook subscriber.
    WebhookDelivery {
        /// Subscription id.
        id: String,
        /// 1 delivered, 0 not.
        ok: i64,
        /// Unix ms.
        at: i64,
        /// Consecutive failures that disable the subscription.
        max_failures: i64,
    },
    /// A webhook subscription ended by its unsubscribe token.
    UnsubscribeWebhook {
        /// The token.
        token: String,
        /// Unix ms.
        at: i64,
    },
    /// Retention applied.
    Prune {
        /// Raw results before this Unix ms are deleted.
        raw_before: i64,
        /// Daily rows before this day are deleted.
        day_before: i64,
    },
}

/// Apply a change; returns the rows affected per statement.
pub(crate) async fn apply(conn: &mut AnyConnection, c: &Change) -> Result<Vec<u64>, sqlx::Error> {
    let n = match c {
        Change::CreateKey {
            id,
            name,
            key_hash,
            prefix,
            requests_per_minute,
            tokens_per_minute,
            allowed_models,
            priority,
            max_concurrent,
            prompt_injection,
            allowed_sources,
            created_at,
        } => vec![
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, prefix, requests_per_minute, tokens_per_minute, \
                 allowed_models, priority, max_concurrent, prompt_injection, allowed_sources, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(id)
            .bind(name)
            .bind(key_hash)
            .bind(prefix)
            .bind(*requests_per_minute)
            .bind(*tokens_per_minute)
            .bind(allowed_models.as_deref())
            .bind(*priority)
            .bind(*max_concurrent)
            .bind(prompt_injection.as_deref())
            .bind(allowed_sources.as_deref())
            .bind(*created_at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ],
        Change::RevokeKey { id, at } => vec![
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(*at)
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        ],
        Change::RecordProbe {
            check_id,
            at,
            up,
            latency_ms,
        } => vec![
            sqlx::query("INSERT INTO probe_results (check_id, at, up, latency_ms) VALUES ($1, $2, $3, $4)")
                .bind(check_id)
                .bind(*at)
                .bind(*up)
                .bind(*latency_ms)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        ],
        Change::UpsertDaily {
            check_id,
            day,
            observed_ms,
            up_ms,
        } => vec![
            sqlx::query(
                "INSERT INTO uptime_daily (check_id, day, observed_ms, up_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (check_id, day) DO UPDATE SET observed_ms = excluded.observed_ms, up_ms = excluded.up_ms",
            )
            .bind(check_id)
            .bind(*day)
            .bind(*observed_ms)
            .bind(*up_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ],
        Change::SetSetting { key, value } => vec![
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ],
        c @ (Change::UpsertComponent { .. }
        | Change::SetComponentStatus { .. }
        | Change::CreateIncident { .. }
        | Change::AddIncidentUpdate { .. }
        | Change::Claim { .. }
        | Change::Subscribe { .. }
        | Change::ConfirmSubscription { .. }
        | Change::Unsubscribe { .. }) => crate::status::apply(conn, c).await?,
        c @ (Change::SubscribeWebhook { .. }
        | Change::WebhookDelivery { .. }
        | Change::UnsubscribeWebhook { .. }) => crate::webhooks::apply(conn, c).await?,
        Change::Prune { raw_before, day_before } => vec![
            sqlx::query("DELETE FROM probe_results WHERE at < $1")
                .bind(*raw_before)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
            sqlx::query("DELETE FROM uptime_daily WHERE day < $1")
                .bind(*day_before)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        ],
    };
    Ok(n)
}

impl Store {
    /// Apply a change in a transaction, journaling it on SQLite.
    pub(crate) async fn write(&self, c: &Change) -> Result<Vec<u64>, StoreError> {
        // Bounded: an unanswered write fails (uncommitted or in doubt, never
        // acknowledged) instead of holding its caller forever.
        tokio::time::timeout(crate::QUERY_TIMEOUT, self.write_now(c))
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    async fn write_now(&self, c: &Change) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = apply(&mut tx, c).await?;
        if self.backend() == Backend::Sqlite {
            let body = serde_json::to_string(c).map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query("INSERT INTO change_log (at, body) VALUES ($1, $2)")
                .bind(crate::now_ms())
                .bind(body)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Re-apply a journaled change with its original sequence number and time
    /// (restore). The journal continues from there.
    pub(crate) async fn replay(&self, seq: i64, at: i64, body: &str) -> Result<(), StoreError> {
        let c: Change = serde_json::from_str(body)
            .map_err(|e| StoreError::Invalid(format!("journal entry {seq}: {e}")))?;
        let mut tx = self.pool().begin().await?;
        apply(&mut tx, &c).await?;
        sqlx::query("INSERT INTO change_log (seq, at, body) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(at)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
