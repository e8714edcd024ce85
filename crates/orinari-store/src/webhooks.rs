//! Visitors' webhook subscriptions to the status page: stored once the
//! endpoint has answered a verification challenge, listed for delivery, and
//! disabled after too many consecutive failed deliveries.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

/// A new, already verified webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// Id.
    pub id: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// The HMAC-SHA256 signing secret.
    pub secret: String,
    /// The unsubscribe token.
    pub unsubscribe_token: String,
    /// Unix ms.
    pub at: i64,
}

/// A stored webhook subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// Id.
    pub id: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// The signing secret.
    pub secret: String,
    /// The unsubscribe token.
    pub unsubscribe_token: String,
    /// Unix ms.
    pub created_at: i64,
    /// Consecutive notifications not delivered.
    pub failures: i64,
    /// When the last one failed.
    pub last_failure_at: Option<i64>,
    /// When it was disabled for failing, if it was.
    pub disabled_at: Option<i64>,
    /// When the subscriber left, if it did.
    pub unsubscribed_at: Option<i64>,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the token stay out of logs.
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("components", &self.components)
            .field("failures", &self.failures)
            .field("disabled_at", &self.disabled_at)
            .field("unsubscribed_at", &self.unsubscribed_at)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, url, components, secret, unsubscribe_token, created_at, failures, \
     last_failure_at, disabled_at, unsubscribed_at";

fn row(r: &AnyRow) -> Result<WebhookRow, StoreError> {
    let comps: String = r.try_get("components")?;
    Ok(WebhookRow {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        components: comps
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
        secret: r.try_get("secret")?,
        unsubscribe_token: r.try_get("unsubscribe_token")?,
        created_at: r.try_get("created_at")?,
        failures: r.try_get("failures")?,
        last_failure_at: r.try_get("last_failure_at")?,
        disabled_at: r.try_get("disabled_at")?,
        unsubscribed_at: r.try_get("unsubscribed_at")?,
    })
}

impl Store {
    /// Record a verified webhook subscription.
    pub async fn subscribe_webhook(&self, w: &NewWebhook) -> Result<(), StoreError> {
        self.write(&Change::SubscribeWebhook {
            id: w.id.clone(),
            url: w.url.clone(),
            components: w.components.join(","),
            secret: w.secret.clone(),
            unsubscribe_token: w.unsubscribe_token.clone(),
            at: w.at,
        })
        .await?;
        Ok(())
    }

    /// Subscriptions that receive notifications (neither disabled nor ended).
    pub async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM status_webhooks \
             WHERE disabled_at IS NULL AND unsubscribed_at IS NULL ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).bounded().await?;
        rows.iter().map(row).collect()
    }

    /// One subscription, whatever its state.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM status_webhooks WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .bounded()
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Record the outcome of one notification to `id`: a success clears the
    /// failure count; a failure adds one and disables the subscription when
    /// the count reaches `max_failures`. Returns true when this call disabled it.
    pub async fn webhook_delivered(
        &self,
        id: &str,
        ok: bool,
        at: i64,
        max_failures: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::WebhookDelivery {
                id: id.into(),
                ok: i64::from(ok),
                at,
                max_failures,
            })
            .await?;
        Ok(!ok && n.get(1).copied().unwrap_or(0) == 1)
    }

    /// End the webhook subscription with this unsubscribe token; false when
    /// none is active.
    pub async fn unsubscribe_webhook(&self, token: &str, at: i64) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::UnsubscribeWebhook {
                token: token.into(),
                at,
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// Subscriptions that receive notifications, counted.
    pub async fn webhook_count(&self) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM status_webhooks \
             WHERE disabled_at IS NULL AND unsubscribed_at IS NULL",
        )
        .fetch_one(self.pool())
        .bounded()
        .await?;
        Ok(r.try_get("n")?)
    }
}

/// Apply one webhook-subscription change (called by the journal's `apply`).
pub(crate) async fn apply(
    conn: &mut sqlx::AnyConnection,
    c: &Change,
) -> Result<Vec<u64>, sqlx::Error> {
    let n = match c {
        Change::SubscribeWebhook {
            id,
            url,
            components,
            secret,
            unsubscribe_token,
            at,
        } => vec![
            sqlx::query(
                "INSERT INTO status_webhooks (id, url, components, secret, unsubscribe_token, \
                 created_at, failures) VALUES ($1, $2, $3, $4, $5, $6, 0)",
            )
            .bind(id)
            .bind(url)
            .bind(components)
            .bind(secret)
            .bind(unsubscribe_token)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ],
        Change::WebhookDelivery { id, ok, .. } if *ok != 0 => vec![
            sqlx::query("UPDATE status_webhooks SET failures = 0 WHERE id = $1 AND failures <> 0")
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        ],
        Change::WebhookDelivery {
            id,
            at,
            max_failures,
            ..
        } => {
            let counted = sqlx::query(
                "UPDATE status_webhooks SET failures = failures + 1, last_failure_at = $2 \
                 WHERE id = $1 AND disabled_at IS NULL AND unsubscribed_at IS NULL",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let disabled = sqlx::query(
                "UPDATE status_webhooks SET disabled_at = $2 \
                 WHERE id = $1 AND disabled_at IS NULL AND failures >= $3",
            )
            .bind(id)
            .bind(*at)
            .bind(*max_failures)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            vec![counted, disabled]
        }
        Change::UnsubscribeWebhook { token, at } => vec![
            sqlx::query(
                "UPDATE status_webhooks SET unsubscribed_at = $1 \
                 WHERE unsubscribe_token = $2 AND unsubscribed_at IS NULL",
            )
            .bind(*at)
            .bind(token)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ],
        _ => Vec::new(),
    };
    Ok(n)
}
