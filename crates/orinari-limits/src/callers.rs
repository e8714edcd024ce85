//! Callers and their policy: who is calling (an API key, or a client IP
//! when keys are optional), what that caller may do (limits, models,
//! priority, prompt-injection policy), and API keys themselves — created
//! here, stored by `orinari-store` only as SHA-256 digests.

use std::sync::Arc;

use orinari_config::PromptInjection;
use orinari_store::{ApiKey, NewApiKey, Store, StoreError};
use sha2::{Digest, Sha256};

use crate::Policy;
use crate::queue::Ticket;

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "ork_";

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Rate-limit subject: `key:<id>` or `ip:<address>`.
    pub subject: String,
    /// Limits for this caller.
    pub policy: Policy,
    /// Queue priority (higher first).
    pub priority: i32,
    /// Requests of this caller running at once.
    pub max_concurrent: usize,
    /// Models it may use; `None` = all.
    pub allowed_models: Option<Arc<[String]>>,
    /// Its prompt-injection policy; `None` = the instance's `[guard]`.
    pub prompt_injection: Option<PromptInjection>,
    /// Data sources its grounded answers may search; `None` = all of a
    /// model's. Enforced by the chat domain's retrieval step, never by
    /// the prompt.
    pub allowed_sources: Option<Arc<[String]>>,
}

impl Caller {
    /// Whether this caller may use `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == model))
    }

    /// Whether this caller's answers may search the source `name`.
    pub fn may_search(&self, name: &str) -> bool {
        self.allowed_sources
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == name))
    }

    /// Its ticket for an admission queue.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            subject: self.subject.clone(),
            priority: self.priority,
            max_concurrent: self.max_concurrent,
        }
    }

    /// A caller with the instance's default limits (an anonymous client,
    /// by IP, or a caller of in-process tests).
    pub fn anonymous(subject: String, limits: &orinari_config::admission::LimitsConfig) -> Self {
        Self {
            subject,
            policy: Policy {
                requests_per_minute: limits.requests_per_minute,
                tokens_per_minute: limits.tokens_per_minute,
            },
            priority: 0,
            max_concurrent: limits.max_concurrent_per_key,
            allowed_models: None,
            prompt_injection: None,
            allowed_sources: None,
        }
    }

    /// The caller an API key stands for.
    pub fn of_key(key: &ApiKey, limits: &orinari_config::admission::LimitsConfig) -> Self {
        Self {
            subject: format!("key:{}", key.id),
            policy: Policy {
                requests_per_minute: key
                    .requests_per_minute
                    .unwrap_or(limits.requests_per_minute),
                tokens_per_minute: key.tokens_per_minute.unwrap_or(limits.tokens_per_minute),
            },
            priority: key.priority,
            max_concurrent: key
                .max_concurrent
                .map_or(limits.max_concurrent_per_key, |n| n as usize),
            allowed_models: key.allowed_models.clone().map(Arc::from),
            prompt_injection: key.prompt_injection.as_deref().and_then(policy),
            allowed_sources: key.allowed_sources.clone().map(Arc::from),
        }
    }
}

/// SHA-256 of a token, as kept in memory and in the store (API keys, the
/// admin token).
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What `orinari keys create` and `POST /admin/v1/keys` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// Operator-chosen name.
    pub name: String,
    /// Per-key request limit (default: `[limits] requests_per_minute`).
    pub requests_per_minute: Option<u32>,
    /// Per-key token limit (default: `[limits] tokens_per_minute`).
    pub tokens_per_minute: Option<u32>,
    /// Models the key may use (default: all).
    pub allowed_models: Option<Vec<String>>,
    /// Queue priority (default 0; higher first).
    pub priority: i32,
    /// Requests running at once (default: `[limits] max_concurrent_per_key`).
    pub max_concurrent: Option<u32>,
    /// Prompt-injection policy (default: `[guard] prompt_injection`).
    pub prompt_injection: Option<PromptInjection>,
    /// Data sources its grounded answers may search (default: every
    /// source of the model asked for).
    pub allowed_sources: Option<Vec<String>>,
}

/// `block`, `flag` or `off`.
pub fn policy(s: &str) -> Option<PromptInjection> {
    match s {
        "block" => Some(PromptInjection::Block),
        "flag" => Some(PromptInjection::Flag),
        "off" => Some(PromptInjection::Off),
        _ => None,
    }
}

fn policy_name(p: PromptInjection) -> &'static str {
    match p {
        PromptInjection::Block => "block",
        PromptInjection::Flag => "flag",
        PromptInjection::Off => "off",
    }
}

impl KeySpec {
    /// Check the fields; the error names the field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err((
                "name",
                "must be at most 100 characters, without control characters".into(),
            ));
        }
        for (field, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent", self.max_concurrent),
        ] {
            if v == Some(0) {
                return Err((field, "must be at least 1".into()));
            }
        }
        for (field, names, what) in [
            ("allowed_models", &self.allowed_models, "model"),
            ("allowed_sources", &self.allowed_sources, "source"),
        ] {
            if let Some(names) = names
                && (names.is_empty() || names.iter().any(|m| m.trim().is_empty()))
            {
                return Err((
                    field,
                    format!(
                        "must list at least one {what} name, none empty (leave it out to allow every {what})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A key just created: the stored record and the key itself, to show once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// As stored (hash only).
    pub record: ApiKey,
    /// The key; never stored, never logged.
    pub secret: String,
}

/// Create an API key: generate it, store only its hash.
pub async fn create_key(store: &Store, spec: KeySpec) -> Result<CreatedKey, StoreError> {
    let secret = format!(
        "{KEY_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let record = store
        .create_key(NewApiKey {
            id: format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            name: spec.name.trim().to_string(),
            key_hash: hex(&hash_token(&secret)),
            prefix: secret.chars().take(KEY_PREFIX.len() + 6).collect(),
            requests_per_minute: spec.requests_per_minute,
            tokens_per_minute: spec.tokens_per_minute,
            allowed_models: spec.allowed_models,
            priority: spec.priority,
            max_concurrent: spec.max_concurrent,
            prompt_injection: spec.prompt_injection.map(|p| policy_name(p).to_string()),
            allowed_sources: spec.allowed_sources,
        })
        .await?;
    Ok(CreatedKey { record, secret })
}

/// Lower-case hex, as the store keeps key digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
