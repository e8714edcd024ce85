//! Error tracking: failed requests grouped by kind (the error envelope's
//! `code`, or `http_<status>`) and matched route, with a count and the first
//! and last time seen. In memory, per instance; bounded, so a flood of new
//! groups cannot grow it without limit. Nothing about the caller is kept.

use std::collections::HashMap;
use std::sync::Mutex;

/// Groups kept at most (routes and kinds are both small, closed sets).
const MAX_GROUPS: usize = 1024;

/// One group of errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// The error's kind.
    pub kind: String,
    /// The matched route.
    pub route: String,
    /// The last status code seen.
    pub status: u16,
    /// How many.
    pub count: u64,
    /// Unix ms.
    pub first_seen_ms: i64,
    /// Unix ms.
    pub last_seen_ms: i64,
}

/// The error log.
#[derive(Debug, Default)]
pub struct ErrorLog {
    groups: Mutex<HashMap<(String, String), ErrorGroup>>,
}

impl ErrorLog {
    /// Count one error.
    pub fn record(&self, kind: &str, route: &str, status: u16, now_ms: i64) {
        let Ok(mut g) = self.groups.lock() else {
            return;
        };
        let key = (kind.to_string(), route.to_string());
        if let Some(e) = g.get_mut(&key) {
            e.count += 1;
            e.status = status;
            e.last_seen_ms = now_ms;
            return;
        }
        if g.len() >= MAX_GROUPS {
            return;
        }
        g.insert(
            key,
            ErrorGroup {
                kind: kind.into(),
                route: route.into(),
                status,
                count: 1,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
            },
        );
    }

    /// Every group, most recent first.
    pub fn groups(&self) -> Vec<ErrorGroup> {
        let mut v: Vec<ErrorGroup> = self
            .groups
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then(b.count.cmp(&a.count))
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_kind_and_route() {
        let log = ErrorLog::default();
        log.record("upstream_timeout", "/v1/chat/completions", 504, 10);
        log.record("upstream_timeout", "/v1/chat/completions", 504, 20);
        log.record("http_404", "unmatched", 404, 15);
        let g = log.groups();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].count, g[0].first_seen_ms, g[0].last_seen_ms),
            (2, 10, 20)
        );
        assert_eq!(g[1].kind, "http_404");
    }
}
