//! The exact response cache (step 4 of [`crate::Chat::answer`], after
//! retrieval): a deterministic request to a model that opted in
//! (`[[models]] cache`) is answered from a stored answer to the same
//! request, replayed event by event — a stream in the same chunks, a whole
//! answer alike — for every backend, the embedded model and upstream pools.
//!
//! - **Which requests** ([`key::cacheable`]): temperature 0 (or `top_p`
//!   0) or a `seed`; no `tools` offered; not opted out with
//!   `"orinari": {"cache": false}`.
//! - **The key** ([`key::key`]): a keyed SHA-256 of the normalised
//!   request after retrieval — model, stream or whole, messages (retrieved
//!   passages included), every sampling and format parameter; never the
//!   caller.
//! - **What is stored**: only an answer that ended with its last event
//!   (`Done`, any finish reason the backend gave, `length` at `max_tokens`
//!   included); never one that failed, was cut by an error or a timeout,
//!   or was cancelled (the client went away), and never one with a tool
//!   call.
//! - **Where**: in memory, a bound in MiB per model with least recently
//!   used entries evicted ([`memory`]); with `[cluster] redis_url`, in
//!   Redis, sealed with a key held in memory, expired by Redis
//!   ([`redis`]). A Redis failure is a miss, never an error.
//! - **Limits**: a hit takes no queue slot and starts no backend, but its
//!   recorded usage (prompt + completion tokens) is charged to the
//!   caller's token budget like a generated answer, so `tokens_per_minute`
//!   bounds what a key reads, cached or not (a hit over the budget is a
//!   429); the request rate is counted at the edge as for any request.
//! - **Metrics**: `orinari_response_cache_hits_total{model}`,
//!   `orinari_response_cache_misses_total{model}`,
//!   `orinari_response_cache_bytes{model}` (in-memory store).

pub(crate) mod entry;
pub(crate) mod key;
mod memory;
mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{KeyInit, OsRng};
use orinari_config::ResponseCacheConfig;
use orinari_models::Event;
use orinari_telemetry::models::{ModelMetrics, ResponseCacheMeter};

use entry::Entry;

/// The largest answer stored in Redis (the in-memory store takes up to
/// its whole bound).
const MAX_REDIS_ENTRY: usize = 4 << 20;

/// The response caches of every model that opted in, built once at start
/// (the in-memory entries and the Redis key live as long as the process).
pub struct ResponseCache {
    secret: [u8; 32],
    models: HashMap<String, Arc<ModelCache>>,
}

/// Where a model's entries live.
enum Store {
    Memory(memory::Memory),
    Redis(Arc<redis::RedisStore>),
}

/// One model's cache.
pub(crate) struct ModelCache {
    model: String,
    ttl: Duration,
    max_entry: usize,
    store: Store,
    meter: ResponseCacheMeter,
}

impl ResponseCache {
    /// Caches for `models` (name, settings): in Redis when `redis_url` is
    /// set, else in memory.
    pub fn new<'a>(
        models: impl IntoIterator<Item = (&'a str, ResponseCacheConfig)>,
        redis_url: Option<&str>,
        metrics: &ModelMetrics,
    ) -> Result<Self, String> {
        let redis = redis_url
            .map(|url| redis::RedisStore::new(url, "orinari:rc").map(Arc::new))
            .transpose()?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&aes_gcm::Aes256Gcm::generate_key(OsRng));
        let models = models
            .into_iter()
            .map(|(name, settings)| {
                let meter = metrics.response_cache(name);
                let (store, max_entry) = match &redis {
                    Some(r) => (Store::Redis(r.clone()), MAX_REDIS_ENTRY),
                    None => (
                        Store::Memory(memory::Memory::new(settings.max_bytes, meter.bytes.clone())),
                        settings.max_bytes,
                    ),
                };
                let cache = ModelCache {
                    model: name.to_string(),
                    ttl: settings.ttl,
                    max_entry,
                    store,
                    meter,
                };
                (name.to_string(), Arc::new(cache))
            })
            .collect();
        Ok(Self { secret, models })
    }

    /// The cache of `model`, when it opted in.
    pub(crate) fn model(&self, model: &str) -> Option<&Arc<ModelCache>> {
        self.models.get(model)
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl ModelCache {
    /// The stored answer under `key`, counted as a hit or a miss.
    pub(crate) async fn lookup(&self, key: &[u8; 32]) -> Option<Entry> {
        let found = match &self.store {
            Store::Memory(m) => m.get(key),
            Store::Redis(r) => r.get(&self.model, key).await,
        };
        match found {
            Some(_) => self.meter.hits.inc(),
            None => self.meter.misses.inc(),
        };
        found
    }

    /// A recorder for the answer to the request under `key`.
    pub(crate) fn recorder(self: &Arc<Self>, key: [u8; 32], prompt_tokens: u32) -> Recorder {
        Recorder {
            cache: self.clone(),
            key,
            entry: Entry {
                prompt_tokens,
                events: Vec::new(),
            },
            bytes: 0,
        }
    }

    fn store(&self, key: [u8; 32], entry: Entry) {
        match &self.store {
            Store::Memory(m) => m.put(key, entry, self.ttl),
            Store::Redis(r) => {
                // Storing must not hold the answer's last event: a task of
                // its own, bounded by the command timeout.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (r, model, ttl) = (r.clone(), self.model.clone(), self.ttl);
                #[expect(
                    clippy::disallowed_methods,
                    reason = "bounded: one Redis SET under the store's own timeout; a lost store is only a later miss"
                )]
                runtime.spawn(async move {
                    r.put(&model, &key, &entry, ttl).await;
                });
            }
        }
    }
}

/// The events of an answer being generated, kept until its last event
/// arrives; stored then, dropped with the answer otherwise.
pub(crate) struct Recorder {
    cache: Arc<ModelCache>,
    key: [u8; 32],
    entry: Entry,
    bytes: usize,
}

impl Recorder {
    /// Observe one event from the backend. `false`: stop recording (the
    /// answer was stored, failed, or is not storable).
    pub(crate) fn observe(&mut self, event: Option<&orinari_models::EventResult>) -> bool {
        let event = match event {
            Some(Ok(e)) => e,
            // Failed, or ended without its last event: nothing is stored.
            Some(Err(_)) | None => return false,
        };
        if matches!(event, Event::ToolCall(_)) {
            return false;
        }
        self.bytes += entry::event_size(event);
        if self.bytes > self.cache.max_entry {
            return false;
        }
        self.entry.events.push(event.clone());
        if matches!(event, Event::Done { .. }) {
            let entry = std::mem::replace(
                &mut self.entry,
                Entry {
                    prompt_tokens: 0,
                    events: Vec::new(),
                },
            );
            self.cache.store(self.key, entry);
            return false;
        }
        true
    }
}
