//! The Redis store: each entry sealed with AES-256-GCM under a key made in
//! memory at start (a fresh nonce per value, the entry's key as associated
//! data, so a value cannot be moved to another key), kept with Redis's own
//! expiry (`SET … PX ttl`). Redis holds only ciphertext under opaque keys;
//! the key dies with the process, so what an instance stored is readable
//! only by itself and expires unread after a restart.
//!
//! Redis never fails a request: a command slower than
//! [`orinari_limits::lazy_redis::TIMEOUT`], a lost connection or a value
//! that does not open is a miss (or a store that did not happen), logged
//! once per outage; the connection ([`LazyRedis`], the one the shared
//! limiter uses too) is retried at most once per
//! [`orinari_limits::lazy_redis::RETRY_EVERY`].

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use orinari_limits::lazy_redis::{LazyRedis, Taken};

use super::entry::Entry;

const NONCE_LEN: usize = 12;

/// Entries in Redis, sealed.
pub(crate) struct RedisStore {
    redis: LazyRedis,
    cipher: Aes256Gcm,
    prefix: String,
}

impl RedisStore {
    /// A store on `url` (connects lazily), with a fresh key.
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let redis = LazyRedis::new(
            url,
            "Redis unreachable; the response cache misses until it is back",
            "Redis reachable again; the response cache is back",
        )
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Self {
            redis,
            cipher: Aes256Gcm::new(&Aes256Gcm::generate_key(OsRng)),
            prefix: prefix.to_string(),
        })
    }

    /// The Redis key of an entry: the prefix and the hex of its hash.
    pub(crate) fn redis_key(&self, model: &str, key: &[u8; 32]) -> String {
        let mut out = String::with_capacity(self.prefix.len() + model.len() + 66);
        out.push_str(&self.prefix);
        out.push(':');
        out.push_str(model);
        out.push(':');
        for b in key {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    pub(crate) async fn get(&self, model: &str, key: &[u8; 32]) -> Option<Entry> {
        let Taken { mut conn, epoch } = self.redis.connection().await?;
        let rkey = self.redis_key(model, key);
        let reply: Result<Option<Vec<u8>>, _> =
            redis::cmd("GET").arg(&rkey).query_async(&mut conn).await;
        let sealed = match reply {
            Ok(v) => {
                self.redis.mark_up(epoch);
                v?
            }
            Err(e) => {
                self.redis.mark_down(&e);
                return None;
            }
        };
        let plain = self.open(key, &sealed)?;
        Entry::decode(&plain)
    }

    pub(crate) async fn put(&self, model: &str, key: &[u8; 32], entry: &Entry, ttl: Duration) {
        let Some(sealed) = self.seal(key, &entry.encode()) else {
            return;
        };
        let Some(Taken { mut conn, epoch }) = self.redis.connection().await else {
            return;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Result<(), _> = redis::cmd("SET")
            .arg(self.redis_key(model, key))
            .arg(sealed)
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(()) => self.redis.mark_up(epoch),
            Err(e) => self.redis.mark_down(&e),
        }
    }

    fn seal(&self, key: &[u8; 32], plain: &[u8]) -> Option<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: key,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// `None` for a value this process did not seal for `key`.
    fn open(&self, key: &[u8; 32], data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_own_key_and_process() {
        let store = RedisStore::new("redis://127.0.0.1:1", "t").unwrap();
        let sealed = store.seal(&[1; 32], b"the answer").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the answer"));
        assert_eq!(store.open(&[1; 32], &sealed).unwrap(), b"the answer");
        assert!(
            store.open(&[2; 32], &sealed).is_none(),
            "moved to another key"
        );
        let other = RedisStore::new("redis://127.0.0.1:1", "t").unwrap();
        assert!(
            other.open(&[1; 32], &sealed).is_none(),
            "another process's key"
        );
        assert_eq!(
            store.redis_key("m", &[0xab; 32]),
            format!("t:m:{}", "ab".repeat(32))
        );
    }
}
