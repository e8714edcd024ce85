//! ACME state shared by the instances of a cluster (PostgreSQL): sealed
//! secrets (the account credentials, the certificate chain with its key —
//! sealed by the caller with [`crate::AcmeKey`]) with a version that goes up
//! on every write, and the HTTP-01 key authorizations of the order in flight.
//!
//! Like instance rows these are written straight to their tables, outside
//! the change journal: a certificate is re-issued, not restored.

use sqlx::Row;

use crate::{Bounded, Store, StoreError, now_ms};

/// A sealed secret and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Sealed bytes ([`crate::AcmeKey::seal`]).
    pub sealed: Vec<u8>,
    /// Goes up by one on every write.
    pub version: i64,
}

impl Store {
    /// The secret called `name`, when stored.
    pub async fn acme_secret(&self, name: &str) -> Result<Option<SealedSecret>, StoreError> {
        let row = sqlx::query("SELECT sealed, version FROM acme_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .bounded()
            .await?;
        row.map(|r| {
            Ok(SealedSecret {
                sealed: r.try_get(0)?,
                version: r.try_get(1)?,
            })
        })
        .transpose()
    }

    /// The version of the secret called `name`, when stored (a cheap poll).
    pub async fn acme_secret_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM acme_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .bounded()
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Store `sealed` as the secret called `name`; returns its new version.
    pub async fn put_acme_secret(&self, name: &str, sealed: &[u8]) -> Result<i64, StoreError> {
        let row: (i64,) = sqlx::query_as(
            "INSERT INTO acme_secrets (name, sealed, version, updated_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, \
             version = acme_secrets.version + 1, updated_at = excluded.updated_at \
             RETURNING version",
        )
        .bind(name)
        .bind(sealed)
        .bind(now_ms())
        .fetch_one(self.pool())
        .bounded()
        .await?;
        Ok(row.0)
    }

    /// Publish an HTTP-01 key authorization until `expires_at` (Unix ms).
    pub async fn put_acme_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO acme_challenges (token, key_authorization, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT (token) DO UPDATE SET \
             key_authorization = excluded.key_authorization, expires_at = excluded.expires_at",
        )
        .bind(token)
        .bind(key_authorization)
        .bind(expires_at)
        .execute(self.pool())
        .bounded()
        .await?;
        Ok(())
    }

    /// The key authorization for `token`, while published and not expired.
    pub async fn acme_challenge(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT key_authorization FROM acme_challenges WHERE token = $1 AND expires_at > $2",
        )
        .bind(token)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .bounded()
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Withdraw these tokens, and any that expired.
    pub async fn delete_acme_challenges(&self, tokens: &[String]) -> Result<(), StoreError> {
        for token in tokens {
            sqlx::query("DELETE FROM acme_challenges WHERE token = $1")
                .bind(token)
                .execute(self.pool())
                .bounded()
                .await?;
        }
        sqlx::query("DELETE FROM acme_challenges WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(self.pool())
            .bounded()
            .await?;
        Ok(())
    }
}
