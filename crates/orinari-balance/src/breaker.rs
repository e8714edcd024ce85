//! A circuit breaker per backend: closed → open (after consecutive failures
//! or a high error rate) → half-open (one trial request after a cool-down)
//! → closed on success, open again on failure. A recovered backend gets its
//! traffic back by itself.

use std::sync::Mutex;
use std::time::Instant;

use crate::config::BreakerConfig;

/// The state as exported (`orinari_circuit_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// No traffic until the cool-down ends.
    Open,
    /// One trial request is allowed.
    HalfOpen,
}

impl CircuitState {
    /// The gauge value.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        consecutive: u32,
        /// Last outcomes, newest in bit 0; 1 = failure.
        window: u64,
        seen: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        trial_running: bool,
    },
}

/// One backend's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

const CLOSED: Inner = Inner::Closed {
    consecutive: 0,
    window: 0,
    seen: 0,
};

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(CLOSED),
        }
    }

    /// The current state (an expired open state reads as half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.inner.lock().as_deref() {
            Ok(Inner::Closed { .. }) | Err(_) => CircuitState::Closed,
            Ok(Inner::Open { until }) if now < *until => CircuitState::Open,
            Ok(Inner::Open { .. } | Inner::HalfOpen { .. }) => CircuitState::HalfOpen,
        }
    }

    /// Whether a request could be sent now (does not take the trial slot).
    pub fn available(&self, now: Instant) -> bool {
        match self.inner.lock().as_deref() {
            Ok(Inner::Closed { .. }) | Err(_) => true,
            Ok(Inner::Open { until }) => now >= *until,
            Ok(Inner::HalfOpen { trial_running }) => !trial_running,
        }
    }

    /// Take permission to send one request; `false` when the circuit is open
    /// or its one trial is already running.
    pub fn acquire(&self, now: Instant) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return true;
        };
        match &mut *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now < *until => false,
            Inner::Open { .. } => {
                *inner = Inner::HalfOpen {
                    trial_running: true,
                };
                true
            }
            Inner::HalfOpen { trial_running } if *trial_running => false,
            Inner::HalfOpen { trial_running } => {
                *trial_running = true;
                true
            }
        }
    }

    /// Give back permission taken by [`Breaker::acquire`] without an outcome
    /// (the request never reached the backend's judgement, e.g. the client left).
    pub fn release(&self) {
        if let Ok(mut inner) = self.inner.lock()
            && let Inner::HalfOpen { trial_running } = &mut *inner
        {
            *trial_running = false;
        }
    }

    /// Record a success. Returns the new state if it changed.
    pub fn success(&self) -> Option<CircuitState> {
        let mut inner = self.inner.lock().ok()?;
        match &mut *inner {
            Inner::Closed {
                consecutive,
                window,
                seen,
            } => {
                *consecutive = 0;
                *window <<= 1;
                *seen = (*seen + 1).min(self.config.window);
                None
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => {
                *inner = CLOSED;
                Some(CircuitState::Closed)
            }
        }
    }

    /// Record a failure at `now`. Returns the new state if it changed.
    pub fn failure(&self, now: Instant) -> Option<CircuitState> {
        let mut inner = self.inner.lock().ok()?;
        let open = Inner::Open {
            until: now + self.config.open_for,
        };
        match &mut *inner {
            Inner::Closed {
                consecutive,
                window,
                seen,
            } => {
                *consecutive += 1;
                *window = (*window << 1) | 1;
                *seen = (*seen + 1).min(self.config.window);
                let mask = if self.config.window >= 64 {
                    u64::MAX
                } else {
                    (1u64 << self.config.window) - 1
                };
                let failures = (*window & mask).count_ones();
                let rate_tripped = *seen >= self.config.window
                    && f64::from(failures) >= self.config.error_rate * f64::from(*seen);
                if *consecutive >= self.config.consecutive_failures || rate_tripped {
                    *inner = open;
                    return Some(CircuitState::Open);
                }
                None
            }
            Inner::HalfOpen { .. } => {
                *inner = open;
                Some(CircuitState::Open)
            }
            Inner::Open { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker(consecutive: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive_failures: consecutive,
            error_rate: 0.5,
            window: 10,
            open_for: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_half_open() {
        let b = breaker(3);
        let t = Instant::now();
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t), Some(CircuitState::Open));
        assert!(!b.acquire(t + Duration::from_secs(1)));
        assert_eq!(b.state(t + Duration::from_secs(1)), CircuitState::Open);
        // Cool-down over: exactly one trial.
        let later = t + Duration::from_secs(6);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        assert!(b.acquire(later));
        assert!(!b.acquire(later));
        assert_eq!(b.success(), Some(CircuitState::Closed));
        assert!(b.acquire(later));
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let b = breaker(1);
        let t = Instant::now();
        assert_eq!(b.failure(t), Some(CircuitState::Open));
        let later = t + Duration::from_secs(6);
        assert!(b.acquire(later));
        assert_eq!(b.failure(later), Some(CircuitState::Open));
        assert!(!b.available(later + Duration::from_secs(1)));
    }

    #[test]
    fn a_high_error_rate_opens_without_a_streak() {
        let b = breaker(100);
        let t = Instant::now();
        let mut opened = None;
        for i in 0..10 {
            let r = if i % 2 == 0 {
                b.success()
            } else {
                b.failure(t)
            };
            opened = opened.or(r);
        }
        assert_eq!(opened, Some(CircuitState::Open));
    }

    #[test]
    fn successes_reset_the_streak() {
        let b = breaker(3);
        let t = Instant::now();
        for _ in 0..10 {
            b.failure(t);
            b.failure(t);
            b.success();
            b.success();
            b.success();
        }
        assert_eq!(b.state(t), CircuitState::Closed);
    }
}
