//! HTTP metrics, recorded by the server's `http_metrics` layer: requests by
//! matched route (never the raw path, so ids in URLs do not explode the label
//! set), method and status, and their duration by route.
//!
//! Route patterns are interned (each distinct pattern is stored once for the
//! life of the process; the set is the server's routes, so it is bounded),
//! which lets a request be counted without allocating its labels.

use std::collections::BTreeSet;
use std::sync::{PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{route, method, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern (`/v1/models/{id}`), or `unmatched`.
    pub route: &'static str,
    /// The method.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

/// `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route pattern.
    pub route: &'static str,
}

/// Route patterns seen so far.
static ROUTES: RwLock<BTreeSet<&'static str>> = RwLock::new(BTreeSet::new());

/// `route` as a `'static` string: the stored copy, made on first sight.
fn intern(route: &str) -> &'static str {
    if let Some(r) = ROUTES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
    {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = routes.get(route) {
        return r;
    }
    let r: &'static str = Box::leak(route.into());
    routes.insert(r);
    r
}

/// 0.5 ms … ~33 s: page and API latencies at the low end, whole model
/// answers at the top.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_5, 2.0, 17,
    ))
}

/// The HTTP metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// `orinari_http_requests_total{route,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `orinari_http_request_duration_seconds{route}`.
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    /// Create and register.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        registry.register(
            "orinari_http_requests",
            "HTTP requests by matched route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "orinari_http_request_duration_seconds",
            "Time from the request's arrival to its response head, by matched route",
            m.duration.clone(),
        );
        m
    }

    /// Record one finished request. `route` must come from a bounded set
    /// (route patterns, never raw paths): each distinct one is kept forever.
    pub fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let route = intern(route);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }
}
