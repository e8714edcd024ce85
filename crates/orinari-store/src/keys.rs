//! API keys (only a hash is stored; the key itself is shown once by the
//! caller) and instance settings such as the admin token's hash.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::journal::Change;
use crate::{Bounded, Store, StoreError};

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Stable id (`key_…`).
    pub id: String,
    /// Operator-chosen name.
    pub name: String,
    /// Hex digest of the key.
    pub key_hash: String,
    /// The key's first characters, to recognise it in a list.
    pub prefix: String,
    /// Per-key request limit, if set.
    pub requests_per_minute: Option<u32>,
    /// Per-key token limit, if set.
    pub tokens_per_minute: Option<u32>,
    /// Models the key may use; `None` = every model.
    pub allowed_models: Option<Vec<String>>,
    /// Admission priority: higher is served first when requests queue.
    pub priority: i32,
    /// Per-key concurrency cap, if set.
    pub max_concurrent: Option<u32>,
    /// Per-key prompt-injection policy (`block`, `flag`, `off`), if set.
    pub prompt_injection: Option<String>,
    /// Data sources the key's grounded answers may search; `None` = every
    /// source of the model.
    pub allowed_sources: Option<Vec<String>>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, once revoked.
    pub revoked_at: Option<i64>,
}

/// What is needed to create a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Hex digest of the key.
    pub key_hash: String,
    /// First characters of the key.
    pub prefix: String,
    /// Per-key request limit.
    pub requests_per_minute: Option<u32>,
    /// Per-key token limit.
    pub tokens_per_minute: Option<u32>,
    /// Models the key may use; `None` = every model.
    pub allowed_models: Option<Vec<String>>,
    /// Admission priority (higher first; default 0).
    pub priority: i32,
    /// Per-key concurrency cap.
    pub max_concurrent: Option<u32>,
    /// Per-key prompt-injection policy (`block`, `flag`, `off`).
    pub prompt_injection: Option<String>,
    /// Data sources the key's grounded answers may search; `None` = all.
    pub allowed_sources: Option<Vec<String>>,
}

const COLUMNS: &str = "id, name, key_hash, prefix, requests_per_minute, tokens_per_minute, \
     allowed_models, priority, max_concurrent, prompt_injection, allowed_sources, created_at, revoked_at";

fn limit(v: Option<i64>, what: &str) -> Result<Option<u32>, StoreError> {
    v.map(|n| u32::try_from(n).map_err(|_| StoreError::Invalid(format!("{what} = {n}"))))
        .transpose()
}

/// A JSON array of names (`allowed_models`, `allowed_sources`).
fn names(v: Option<String>, what: &str) -> Result<Option<Vec<String>>, StoreError> {
    v.map(|json| {
        serde_json::from_str(&json).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))
    })
    .transpose()
}

fn names_json(v: Option<&Vec<String>>) -> Option<String> {
    v.map(|m| serde_json::to_string(m).unwrap_or_default())
}

fn row(r: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        key_hash: r.try_get("key_hash")?,
        prefix: r.try_get("prefix")?,
        requests_per_minute: limit(r.try_get("requests_per_minute")?, "requests_per_minute")?,
        tokens_per_minute: limit(r.try_get("tokens_per_minute")?, "tokens_per_minute")?,
        allowed_models: names(r.try_get("allowed_models")?, "allowed_models")?,
        priority: i32::try_from(r.try_get::<i64, _>("priority")?)
            .map_err(|_| StoreError::Invalid("priority out of range".into()))?,
        max_concurrent: limit(r.try_get("max_concurrent")?, "max_concurrent")?,
        prompt_injection: r.try_get("prompt_injection")?,
        allowed_sources: names(r.try_get("allowed_sources")?, "allowed_sources")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Insert a key; returns it as stored.
    pub async fn create_key(&self, k: NewApiKey) -> Result<ApiKey, StoreError> {
        let created_at = crate::now_ms();
        self.write(&Change::CreateKey {
            id: k.id.clone(),
            name: k.name.clone(),
            key_hash: k.key_hash.clone(),
            prefix: k.prefix.clone(),
            requests_per_minute: k.requests_per_minute.map(i64::from),
            tokens_per_minute: k.tokens_per_minute.map(i64::from),
            allowed_models: names_json(k.allowed_models.as_ref()),
            priority: i64::from(k.priority),
            max_concurrent: k.max_concurrent.map(i64::from),
            prompt_injection: k.prompt_injection.clone(),
            allowed_sources: names_json(k.allowed_sources.as_ref()),
            created_at,
        })
        .await?;
        Ok(ApiKey {
            id: k.id,
            name: k.name,
            key_hash: k.key_hash,
            prefix: k.prefix,
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
            allowed_models: k.allowed_models,
            priority: k.priority,
            max_concurrent: k.max_concurrent,
            prompt_injection: k.prompt_injection,
            allowed_sources: k.allowed_sources,
            created_at,
            revoked_at: None,
        })
    }

    /// All keys, newest first (revoked ones included).
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).bounded().await?;
        rows.iter().map(row).collect()
    }

    /// The active key with this hash, if any.
    pub async fn find_active_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL");
        let r = sqlx::query(&sql)
            .bind(key_hash)
            .fetch_optional(self.pool())
            .bounded()
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Revoke a key; false when no active key has this id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .write(&Change::RevokeKey {
                id: id.to_string(),
                at: crate::now_ms(),
            })
            .await?;
        Ok(n.first() == Some(&1))
    }

    /// An instance setting, if set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .bounded()
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Set an instance setting.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(&Change::SetSetting {
            key: key.to_string(),
            value: value.to_string(),
        })
        .await?;
        Ok(())
    }
}
