//! Privacy-first analytics: aggregate counts only — requests per route,
//! chat requests per model and page views per page, per UTC day — with no cookies, no IP addresses, no
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
    /// Chat requests per served model.
    pub models: BTreeMap<String, u64>,
    /// Web vitals from the pages' beacons: `(page, metric)` → counts of
    /// good, needs-improvement and poor readings (web.dev thresholds).
    pub vitals: BTreeMap<(String, String), [u64; 3]>,
}

/// web.dev's "good" and "poor" thresholds: (metric, good at most, poor above).
pub const VITALS: [(&str, f64, f64); 4] = [
    ("ttfb_ms", 800.0, 1800.0),
    ("fcp_ms", 1800.0, 3000.0),
    ("lcp_ms", 2500.0, 4000.0),
    ("cls", 0.1, 0.25),
];

/// The counters.
#[derive(Debug, Default)]
pub struct Analytics {
    days: Mutex<BTreeMap<i64, Day>>,
    region: std::sync::OnceLock<String>,
}

/// Count one for `key`, allocating only the first time it is seen.
fn bump(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

impl Analytics {
    /// Count a request (and a page view, when it was one).
    pub fn record(&self, route: &str, page_view: bool, now_ms: i64) {
        let Ok(mut days) = self.days.lock() else {
            return;
        };
        let today = now_ms.div_euclid(DAY_MS);
        let d = days.entry(today).or_default();
        bump(&mut d.requests, route);
        if page_view {
            bump(&mut d.page_views, route);
        }
        days.retain(|day, _| *day > today - DAYS);
    }

    /// Count a chat request for `model` (a served model's name, so the set
    /// of keys stays bounded).
    pub fn model_request(&self, model: &str, now_ms: i64) {
        let Ok(mut days) = self.days.lock() else {
            return;
        };
        let today = now_ms.div_euclid(DAY_MS);
        bump(&mut days.entry(today).or_default().models, model);
    }

    /// Label these counts with the instance's region (`server.region`), once.
    pub fn set_region(&self, region: &str) {
        let _ = self.region.set(region.to_string());
    }

    /// The instance's region, if set.
    pub fn region(&self) -> Option<&str> {
        self.region.get().map(String::as_str)
    }

    /// Count one web-vitals reading of `page` (unknown metrics are ignored).
    pub fn vital(&self, page: &str, metric: &str, value: f64, now_ms: i64) {
        let Some((name, good, poor)) = VITALS.iter().find(|(m, _, _)| *m == metric) else {
            return;
        };
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let Ok(mut days) = self.days.lock() else {
            return;
        };
        let d = days.entry(now_ms.div_euclid(DAY_MS)).or_default();
        let slot = if value <= *good {
            0
        } else if value <= *poor {
            1
        } else {
            2
        };
        if let Some(n) = d
            .vitals
            .entry((page.to_string(), (*name).to_string()))
            .or_default()
            .get_mut(slot)
        {
            *n += 1;
        }
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
    fn counts_chat_requests_per_model() {
        let a = Analytics::default();
        a.model_request("orinari-small", 0);
        a.model_request("orinari-small", 1);
        a.model_request("gpt-4o-mini", DAY_MS);
        let days = a.days();
        assert_eq!(days[0].1.models["orinari-small"], 2);
        assert_eq!(days[1].1.models["gpt-4o-mini"], 1);
    }

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

    #[test]
    fn region_is_set_once() {
        let a = Analytics::default();
        assert_eq!(a.region(), None);
        a.set_region("eu-west");
        a.set_region("us-east");
        assert_eq!(a.region(), Some("eu-west"));
    }

    #[test]
    fn vitals_are_bucketed() {
        let a = Analytics::default();
        a.vital("/status", "lcp_ms", 1200.0, 0);
        a.vital("/status", "lcp_ms", 3000.0, 0);
        a.vital("/status", "lcp_ms", 9000.0, 0);
        a.vital("/status", "cls", f64::NAN, 0);
        a.vital("/status", "anything", 1.0, 0);
        let d = &a.days()[0].1;
        assert_eq!(
            d.vitals[&("/status".to_string(), "lcp_ms".to_string())],
            [1, 1, 1]
        );
        assert_eq!(d.vitals.len(), 1);
    }
}
