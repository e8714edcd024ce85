//! Alert rules on error rate and latency: requests are counted in 10-second
//! buckets per matched route (count, 5xx count, a latency histogram), and
//! every rule is evaluated over its trailing window. A rule notifies when it
//! starts and stops firing, once across instances. Counts only: no paths
//! beyond route patterns, no callers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use orinari_config::{AlertKind, AlertSettings};

const BUCKET_MS: i64 = 10_000;
/// Latency bucket upper bounds in seconds: 1 ms doubling to ~33 s, then +Inf.
const BOUNDS: [f64; 16] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768,
];

#[derive(Debug, Default, Clone)]
struct Agg {
    count: u64,
    errors: u64,
    hist: [u64; BOUNDS.len() + 1],
}

impl Agg {
    fn add(&mut self, o: &Self) {
        self.count += o.count;
        self.errors += o.errors;
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a += b;
        }
    }

    /// Upper bound of the bucket holding the 99th percentile.
    fn p99(&self) -> f64 {
        let want = (self.count as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            }
        }
        0.0
    }
}

/// One evaluation of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Requests in the window.
    pub requests: u64,
    /// The measured value (fraction, or seconds).
    pub value: f64,
    /// Whether it is above the threshold with enough requests.
    pub firing: bool,
}

/// The request counts and the rules.
#[derive(Debug, Default)]
pub struct Alerts {
    rules: ArcSwap<Rules>,
    buckets: Mutex<VecDeque<(i64, HashMap<String, Agg>)>>,
    firing: Mutex<HashMap<String, bool>>,
}

/// The rules, and how long their counts are kept (the longest window).
#[derive(Debug, Default)]
struct Rules {
    list: Arc<Vec<AlertSettings>>,
    keep_ms: i64,
}

impl Alerts {
    /// The configured rules.
    pub fn new(rules: Vec<AlertSettings>) -> Self {
        let a = Self::default();
        a.set_rules(rules);
        a
    }

    /// Replace the rules (a configuration reload). The counts are kept, so
    /// a new or changed rule reads the requests already counted; a rule
    /// that stays (by id) keeps its firing state, so it notifies when its
    /// new threshold makes it start or stop firing; a removed rule is
    /// forgotten without a notice.
    pub fn set_rules(&self, rules: Vec<AlertSettings>) {
        let keep_ms = rules
            .iter()
            .map(|r| i64::try_from(r.window.as_millis()).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0);
        if let Ok(mut firing) = self.firing.lock() {
            firing.retain(|id, _| rules.iter().any(|r| &r.id == id));
        }
        self.rules.store(Arc::new(Rules {
            list: Arc::new(rules),
            keep_ms,
        }));
    }

    /// The rules.
    pub fn rules(&self) -> Arc<Vec<AlertSettings>> {
        self.rules.load().list.clone()
    }

    /// Count one finished request (nothing is kept without rules).
    pub fn record(&self, route: &str, status: u16, seconds: f64, now_ms: i64) {
        let keep_ms = {
            let r = self.rules.load();
            if r.list.is_empty() {
                return;
            }
            r.keep_ms
        };
        let Ok(mut b) = self.buckets.lock() else {
            return;
        };
        let start = now_ms - now_ms.rem_euclid(BUCKET_MS);
        if b.back().is_none_or(|(s, _)| *s != start) {
            b.push_back((start, HashMap::new()));
        }
        while b
            .front()
            .is_some_and(|(s, _)| *s < now_ms - keep_ms - BUCKET_MS)
        {
            b.pop_front();
        }
        if let Some((_, routes)) = b.back_mut() {
            let a = routes.entry(route.to_string()).or_default();
            a.count += 1;
            a.errors += u64::from(status >= 500);
            let i = BOUNDS
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(BOUNDS.len());
            if let Some(h) = a.hist.get_mut(i) {
                *h += 1;
            }
        }
    }

    /// Evaluate one rule at `now_ms`.
    pub fn read(&self, rule: &AlertSettings, now_ms: i64) -> Reading {
        let from = now_ms - i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
        let mut sum = Agg::default();
        if let Ok(b) = self.buckets.lock() {
            for (_, routes) in b.iter().filter(|(s, _)| *s + BUCKET_MS > from) {
                for (route, a) in routes {
                    if rule.route.as_deref().is_none_or(|r| r == route) {
                        sum.add(a);
                    }
                }
            }
        }
        let value = match rule.kind {
            AlertKind::ErrorRate if sum.count > 0 => sum.errors as f64 / sum.count as f64,
            AlertKind::ErrorRate => 0.0,
            AlertKind::LatencyP99 => sum.p99(),
        };
        Reading {
            requests: sum.count,
            value,
            firing: sum.count >= rule.min_requests && value > rule.threshold,
        }
    }

    /// Rules whose state changed since the last call: `(rule, reading)`.
    pub fn changes(&self, now_ms: i64) -> Vec<(AlertSettings, Reading)> {
        let Ok(mut state) = self.firing.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for rule in self.rules().iter() {
            let r = self.read(rule, now_ms);
            let was = state.insert(rule.id.clone(), r.firing).unwrap_or(false);
            if was != r.firing {
                out.push((rule.clone(), r));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(kind: AlertKind, threshold: f64) -> AlertSettings {
        AlertSettings {
            id: format!("{kind:?}"),
            name: "r".into(),
            kind,
            route: Some("/v1/chat/completions".into()),
            threshold,
            window: Duration::from_secs(60),
            min_requests: 10,
        }
    }

    #[test]
    fn error_rate_and_latency_over_the_window() {
        let err = rule(AlertKind::ErrorRate, 0.1);
        let lat = rule(AlertKind::LatencyP99, 0.5);
        let a = Alerts::new(vec![err.clone(), lat.clone()]);
        let t = 1_000_000;
        for i in 0..100 {
            a.record(
                "/v1/chat/completions",
                if i < 20 { 503 } else { 200 },
                0.01,
                t,
            );
            a.record("/status", 500, 0.01, t);
        }
        let r = a.read(&err, t);
        assert_eq!(r.requests, 100, "other routes are not counted");
        assert!((r.value - 0.2).abs() < 1e-9 && r.firing);
        assert!(!a.read(&lat, t).firing);
        for _ in 0..5 {
            a.record("/v1/chat/completions", 200, 3.0, t);
        }
        assert_eq!(a.read(&lat, t).value, 4.096);
        assert_eq!(a.changes(t).len(), 2, "both start firing");
        assert!(a.changes(t).is_empty(), "no change, no notice");
        // Two minutes later the window is empty: both stop.
        let later = t + 120_000;
        a.record("/v1/chat/completions", 200, 0.01, later);
        assert_eq!(a.changes(later).len(), 2);
        assert!(!a.read(&err, later).firing, "too few requests never fire");
    }

    #[test]
    fn new_rules_read_the_counts_already_kept() {
        let err = rule(AlertKind::ErrorRate, 0.5);
        let a = Alerts::new(vec![err.clone()]);
        let t = 1_000_000;
        for i in 0..20 {
            a.record(
                "/v1/chat/completions",
                if i < 4 { 503 } else { 200 },
                0.01,
                t,
            );
        }
        assert!(a.changes(t).is_empty(), "20% errors: under 50%");
        // The same rule with a lower threshold fires on the same counts.
        a.set_rules(vec![AlertSettings {
            threshold: 0.1,
            ..err.clone()
        }]);
        let fired = a.changes(t);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].1.firing && fired[0].0.threshold == 0.1);
        // Back to 50%: it resolves.
        a.set_rules(vec![err]);
        let resolved = a.changes(t);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].1.firing);
        // Without rules nothing is counted or read.
        a.set_rules(Vec::new());
        assert!(a.changes(t).is_empty());
        assert!(a.rules().is_empty());
    }
}
