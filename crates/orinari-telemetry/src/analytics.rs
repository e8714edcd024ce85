//! Privacy-first analytics: aggregate counts only — requests per route and
//! page views per page, per UTC day — with no cookies, no IP addresses, no
//! user or key ids, and no paths beyond the matched route pattern. In memory,
//! per instance, for the last 30 days.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Days kept.
const DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

/// Counts for one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    /// Requests per matched route.
    pub requests: BTreeMap<String, u64>,
    /// Successful page loads per page.
    pub page_views: BTreeMap<String, u64>,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Analytics {
    days: Mutex<BTreeMap<i64, Day>>,
}

impl Analytics {
    /// Count a request (and a page view, when it was one).
    pub fn record(&self, route: &str, page_view: bool, now_ms: i64) {
        let Ok(mut days) = self.days.lock() else {
            return;
        };
        let today = now_ms.div_euclid(DAY_MS);
        let d = days.entry(today).or_default();
        *d.requests.entry(route.to_string()).or_insert(0) += 1;
        if page_view {
            *d.page_views.entry(route.to_string()).or_insert(0) += 1;
        }
        days.retain(|day, _| *day > today - DAYS);
    }

    /// `(days since the epoch, counts)`, oldest first.
    pub fn days(&self) -> Vec<(i64, Day)> {
        self.days
            .lock()
            .map(|d| d.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_day_and_forgets_after_30() {
        let a = Analytics::default();
        a.record("/status", true, 0);
        a.record("/status", true, 1);
        a.record("/v1/models", false, DAY_MS);
        let d = a.days();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].1.page_views["/status"], 2);
        assert_eq!(d[1].1.requests["/v1/models"], 1);
        a.record("/", true, 40 * DAY_MS);
        assert_eq!(a.days().len(), 1);
    }
}
