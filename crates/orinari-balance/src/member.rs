//! One backend inside a pool: its adapter and everything the pool learns
//! about it (health, circuit, latency, load, counts), plus its metric handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orinari_models::{ModelBackend, Outcome};
use orinari_telemetry::models::{BackendLabels, BackendMeter, Gauge, ModelMetrics};

use crate::breaker::{Breaker, CircuitState};
use crate::config::{BackendSpec, BreakerConfig};
use crate::select::PeakEwma;

/// Latency charged to the EWMA for a failed attempt, so P2C avoids a failing backend.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Metric handles, resolved once per backend.
#[derive(Debug)]
pub struct Handles {
    meter: BackendMeter,
    up: Gauge,
    circuit: Gauge,
}

impl Handles {
    fn new(m: &ModelMetrics, model: &str, backend: &str) -> Self {
        let b = BackendLabels {
            model: model.into(),
            backend: backend.into(),
        };
        Self {
            meter: BackendMeter::new(m, model, backend),
            up: m.backend_up.get_or_create(&b).clone(),
            circuit: m.circuit_state.get_or_create(&b).clone(),
        }
    }
}

/// One backend and its live state.
pub struct Member {
    /// Name, provider, group, region, adapter.
    pub spec: BackendSpec,
    /// Weight within the group (admin-settable).
    pub weight: AtomicU32,
    /// Weight × group weight, recomputed when either changes.
    pub effective: AtomicU64,
    /// Drained by an operator: no new requests.
    pub drained: AtomicBool,
    /// Last active health check passed (starts true).
    pub up: AtomicBool,
    /// Passive health.
    pub breaker: Breaker,
    /// Time-to-first-token estimate.
    pub latency: PeakEwma,
    /// Requests in flight.
    pub in_flight: AtomicU32,
    /// Requests finished (any outcome but cancelled).
    pub requests: AtomicU64,
    /// Of which failed or timed out.
    pub failures: AtomicU64,
    handles: Handles,
}

impl Member {
    /// A fresh member: up, closed, undrained.
    pub fn new(
        spec: BackendSpec,
        breaker: BreakerConfig,
        metrics: &ModelMetrics,
        model: &str,
    ) -> Self {
        let handles = Handles::new(metrics, model, &spec.name);
        handles.up.set(1);
        handles.circuit.set(0);
        Self {
            weight: AtomicU32::new(spec.weight),
            effective: AtomicU64::new(u64::from(spec.weight)),
            drained: AtomicBool::new(false),
            up: AtomicBool::new(true),
            breaker: Breaker::new(breaker),
            latency: PeakEwma::default(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            handles,
            spec,
        }
    }

    /// The adapter.
    pub fn backend(&self) -> &Arc<dyn ModelBackend> {
        &self.spec.backend
    }

    /// Whether new requests may go here now.
    pub fn available(&self, now: Instant) -> bool {
        self.up.load(Ordering::Relaxed) && self.routable(now)
    }

    /// Whether requests may go here with its active health check set aside
    /// (the pool's panic routing): not drained, weighted, and its circuit
    /// letting requests through.
    pub fn routable(&self, now: Instant) -> bool {
        !self.drained.load(Ordering::Relaxed)
            && self.effective.load(Ordering::Relaxed) > 0
            && self.breaker.available(now)
    }

    /// Record the first token's latency.
    pub fn first_token(&self, ttft: Duration, now: Instant) {
        self.latency.observe(ttft, now);
        self.handles.meter.first_token(ttft);
    }

    /// Record how a request ended (passive health, metrics, counters).
    pub fn finish(&self, outcome: Outcome, now: Instant) {
        self.handles.meter.finish(outcome);
        let change = match outcome {
            Outcome::Success | Outcome::Rejected => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.breaker.success()
            }
            Outcome::Error | Outcome::Timeout => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.latency.observe(FAILURE_PENALTY, now);
                self.breaker.failure(now)
            }
            Outcome::Cancelled => {
                self.breaker.release();
                None
            }
        };
        if let Some(state) = change {
            if state == CircuitState::Closed {
                self.latency.reset();
            }
            self.circuit_changed(state);
        }
    }

    /// Export a circuit state change.
    pub fn circuit_changed(&self, state: CircuitState) {
        self.handles.circuit.set(state.as_gauge());
        tracing::warn!(backend = %self.spec.name, circuit = ?state, "circuit state changed");
    }

    /// Refresh the exported circuit gauge (an open circuit turns half-open by time alone).
    pub fn export_circuit(&self, now: Instant) {
        self.handles.circuit.set(self.breaker.state(now).as_gauge());
    }

    /// Record token counts.
    pub fn tokens(&self, prompt: u32, completion: u32) {
        self.handles.meter.tokens(prompt, completion);
    }

    /// Set the active health result; returns whether it changed.
    pub fn set_up(&self, up: bool) -> bool {
        self.handles.up.set(i64::from(up));
        let changed = self.up.swap(up, Ordering::Relaxed) != up;
        if changed && up {
            self.latency.reset();
        }
        changed
    }
}

/// Counts a request in flight for as long as it lives.
pub struct InFlight(pub Arc<Member>);

impl InFlight {
    /// Count one more request on `m`.
    pub fn new(m: Arc<Member>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
