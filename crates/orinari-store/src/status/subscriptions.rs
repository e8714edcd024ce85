//! Email subscriptions: stored unconfirmed with the SHA-256 of their
//! confirmation token, confirmed by that token, ended by their unsubscribe
//! token; the confirmed ones are the subscribers notifications go to.

use sqlx::Row;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

/// A new email subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// Id.
    pub id: String,
    /// Address.
    pub email: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// SHA-256 (hex) of the confirmation token.
    pub confirm_hash: String,
    /// Unsubscribe token.
    pub unsubscribe_token: String,
    /// Unix ms.
    pub at: i64,
}

/// A confirmed subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Address.
    pub email: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// For the unsubscribe link.
    pub unsubscribe_token: String,
}

impl Store {
    /// Record a new, unconfirmed email subscription.
    pub async fn subscribe(&self, s: &NewSubscription) -> Result<(), StoreError> {
        self.write(&Change::Subscribe {
            id: s.id.clone(),
            email: s.email.clone(),
            components: s.components.join(","),
            confirm_hash: s.confirm_hash.clone(),
            unsubscribe_token: s.unsubscribe_token.clone(),
            at: s.at,
        })
        .await?;
        Ok(())
    }

    /// Confirm the subscription whose token hashes to `confirm_hash`; false
    /// when there is none pending.
    pub async fn confirm_subscription(
        &self,
        confirm_hash: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::ConfirmSubscription {
                confirm_hash: confirm_hash.into(),
                at,
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// End the subscription with this unsubscribe token; false when none is active.
    pub async fn unsubscribe(&self, token: &str, at: i64) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::Unsubscribe {
                token: token.into(),
                at,
            })
            .await?;
        Ok(n.first().copied().unwrap_or(0) == 1)
    }

    /// Confirmed, active subscriptions.
    pub async fn subscribers(&self) -> Result<Vec<Subscriber>, StoreError> {
        let rows = sqlx::query(
            "SELECT email, components, unsubscribe_token FROM status_subscriptions \
             WHERE confirmed_at IS NOT NULL AND unsubscribed_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .bounded()
        .await?;
        rows.iter()
            .map(|r| {
                let comps: String = r.try_get("components")?;
                Ok(Subscriber {
                    email: r.try_get("email")?,
                    components: comps
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    unsubscribe_token: r.try_get("unsubscribe_token")?,
                })
            })
            .collect()
    }

    /// When the newest unconfirmed subscription of `email` was made, if any.
    pub async fn pending_since(&self, email: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(created_at) AS at FROM status_subscriptions \
             WHERE email = $1 AND confirmed_at IS NULL AND unsubscribed_at IS NULL",
        )
        .bind(email)
        .fetch_one(self.pool())
        .bounded()
        .await?;
        Ok(row.try_get("at")?)
    }
}

/// Apply a subscription change.
pub(super) async fn apply(
    conn: &mut sqlx::AnyConnection,
    c: &Change,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut n = Vec::new();
    match c {
        Change::Subscribe {
            id,
            email,
            components,
            confirm_hash,
            unsubscribe_token,
            at,
        } => n.push(
            sqlx::query(
                "INSERT INTO status_subscriptions (id, email, components, confirm_hash, unsubscribe_token, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(email)
            .bind(components)
            .bind(confirm_hash)
            .bind(unsubscribe_token)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        Change::ConfirmSubscription { confirm_hash, at } => n.push(
            sqlx::query(
                "UPDATE status_subscriptions SET confirmed_at = $2 \
                 WHERE confirm_hash = $1 AND confirmed_at IS NULL AND unsubscribed_at IS NULL",
            )
            .bind(confirm_hash)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        Change::Unsubscribe { token, at } => n.push(
            sqlx::query(
                "UPDATE status_subscriptions SET unsubscribed_at = $2 \
                 WHERE unsubscribe_token = $1 AND unsubscribed_at IS NULL",
            )
            .bind(token)
            .bind(*at)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        ),
        _ => {}
    }
    Ok(n)
}
