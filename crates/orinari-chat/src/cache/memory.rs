//! The in-memory store: least recently used entries go first once the
//! model's bound in bytes is reached, and an entry older than its TTL is
//! never served (it is dropped when found, or when evicted in its turn).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use orinari_telemetry::models::Gauge;

use super::entry::Entry;

/// One model's entries.
pub(crate) struct Memory {
    inner: Mutex<Inner>,
    max_bytes: usize,
    bytes_gauge: Gauge,
}

struct Inner {
    entries: LruCache<[u8; 32], (Entry, Instant)>,
    bytes: usize,
}

impl Memory {
    pub(crate) fn new(max_bytes: usize, bytes_gauge: Gauge) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            bytes_gauge,
        }
    }

    /// The entry under `key`, unless it expired.
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Entry> {
        let mut inner = self.lock();
        let now = Instant::now();
        let expired = match inner.entries.get(key) {
            Some((entry, expires)) if *expires > now => return Some(entry.clone()),
            Some(_) => true,
            None => false,
        };
        if expired && let Some((entry, _)) = inner.entries.pop(key) {
            inner.bytes = inner.bytes.saturating_sub(entry.size());
            self.publish(&inner);
        }
        None
    }

    /// Keep `entry` under `key` for `ttl`, evicting the least recently
    /// used entries until it fits (an entry over the whole bound is not
    /// kept).
    pub(crate) fn put(&self, key: [u8; 32], entry: Entry, ttl: Duration) {
        let size = entry.size();
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if let Some((old, _)) = inner.entries.pop(&key) {
            inner.bytes = inner.bytes.saturating_sub(old.size());
        }
        while inner.bytes + size > self.max_bytes {
            let Some((_, (old, _))) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes = inner.bytes.saturating_sub(old.size());
        }
        inner.entries.put(key, (entry, Instant::now() + ttl));
        inner.bytes += size;
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        self.bytes_gauge
            .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent
        // with `bytes` beyond one entry's size: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use orinari_models::{Event, FinishReason, Usage};

    fn entry(text: &str) -> Entry {
        Entry {
            prompt_tokens: 1,
            events: vec![
                Event::Delta(text.into()),
                Event::Done {
                    finish_reason: FinishReason::Stop,
                    usage: Usage::default(),
                },
            ],
        }
    }

    #[test]
    fn least_recently_used_entries_go_first_and_expired_ones_are_never_served() {
        let one = entry(&"x".repeat(1000)).size();
        let m = Memory::new(one * 2, Gauge::default());
        m.put([1; 32], entry(&"x".repeat(1000)), Duration::from_secs(60));
        m.put([2; 32], entry(&"y".repeat(1000)), Duration::from_secs(60));
        assert!(m.get(&[1; 32]).is_some()); // 1 is now the most recent
        m.put([3; 32], entry(&"z".repeat(1000)), Duration::from_secs(60));
        assert!(m.get(&[2; 32]).is_none(), "the least recent went");
        assert!(m.get(&[1; 32]).is_some());
        assert!(m.get(&[3; 32]).is_some());
        assert_eq!(m.bytes_gauge.get(), i64::try_from(one * 2).unwrap());

        m.put([4; 32], entry("short"), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.get(&[4; 32]).is_none(), "expired");
        // An entry larger than the whole bound is not kept.
        m.put(
            [5; 32],
            entry(&"w".repeat(one * 3)),
            Duration::from_secs(60),
        );
        assert!(m.get(&[5; 32]).is_none());
    }
}
