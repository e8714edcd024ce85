//! Selection among the backends that can take a request now: round-robin,
//! weighted random, and power of two choices on peak-EWMA latency.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Strategy;

/// Decay time of the peak EWMA.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Peak-EWMA latency (Finagle/Linkerd): a slower sample is taken at once, a
/// faster one is blended in with a weight that grows with the time since the
/// last sample. A new backend starts at zero, so it is tried early.
#[derive(Debug)]
pub struct PeakEwma {
    inner: Mutex<(f64, Option<Instant>)>,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            inner: Mutex::new((0.0, None)),
        }
    }
}

impl PeakEwma {
    /// Record a latency sample at `now`.
    pub fn observe(&self, sample: Duration, now: Instant) {
        let Ok(mut g) = self.inner.lock() else { return };
        let s = sample.as_secs_f64();
        let (cost, last) = *g;
        let next = if s > cost {
            s
        } else {
            let dt = last.map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
            let w = (-dt / EWMA_DECAY.as_secs_f64()).exp();
            cost * w + s * (1.0 - w)
        };
        *g = (next, Some(now));
    }

    /// The current estimate at `now`, in seconds. Without new samples it
    /// decays toward zero, so a penalized backend is tried again in time.
    pub fn get(&self, now: Instant) -> f64 {
        self.inner.lock().map_or(0.0, |g| match g.1 {
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                g.0 * (-dt / EWMA_DECAY.as_secs_f64()).exp()
            }
            None => g.0,
        })
    }

    /// Forget every sample (a backend that has just recovered starts fresh).
    pub fn reset(&self) {
        if let Ok(mut g) = self.inner.lock() {
            *g = (0.0, None);
        }
    }
}

/// What the selector needs to know about one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Index in the pool.
    pub index: usize,
    /// Effective weight (backend weight × group weight), > 0.
    pub weight: u64,
    /// Peak-EWMA latency in seconds.
    pub latency: f64,
    /// Requests in flight.
    pub in_flight: u32,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9E37_79B9_7F4A_7C15);
    h.finish() | 1
}

/// A fast thread-local xorshift64* in `0..n` (selection needs no crypto).
pub fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    })
}

fn weighted(c: &[Candidate]) -> usize {
    let total: u64 = c.iter().map(|c| c.weight).sum();
    let mut r = random_below(total);
    for (i, cand) in c.iter().enumerate() {
        if r < cand.weight {
            return i;
        }
        r -= cand.weight;
    }
    c.len() - 1
}

fn cost(c: &Candidate) -> f64 {
    // A backend never measured still costs a little per request in flight,
    // so concurrent first requests spread out.
    (c.latency.max(1e-6)) * f64::from(c.in_flight + 1) / c.weight as f64
}

/// Picks one candidate.
#[derive(Debug, Default)]
pub struct Selector {
    next: AtomicUsize,
}

impl Selector {
    /// The chosen position in `candidates` (non-empty).
    pub fn pick(&self, strategy: Strategy, candidates: &[Candidate]) -> usize {
        if candidates.len() <= 1 {
            return 0;
        }
        match strategy {
            Strategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % candidates.len(),
            Strategy::Weighted => weighted(candidates),
            Strategy::P2cEwma => {
                let a = weighted(candidates);
                let mut b = weighted(candidates);
                if a == b {
                    b = (a + 1 + random_below(candidates.len() as u64 - 1) as usize)
                        % candidates.len();
                }
                if cost(&candidates[b]) < cost(&candidates[a]) {
                    b
                } else {
                    a
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(index: usize, weight: u64, latency: f64, in_flight: u32) -> Candidate {
        Candidate {
            index,
            weight,
            latency,
            in_flight,
        }
    }

    #[test]
    fn round_robin_cycles() {
        let s = Selector::default();
        let c = [cand(0, 1, 0.0, 0), cand(1, 1, 0.0, 0), cand(2, 1, 0.0, 0)];
        let picks: Vec<usize> = (0..6).map(|_| s.pick(Strategy::RoundRobin, &c)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_follows_weights() {
        let s = Selector::default();
        let c = [cand(0, 90, 0.0, 0), cand(1, 10, 0.0, 0)];
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| s.pick(Strategy::Weighted, &c) == 1)
            .count();
        let share = ones as f64 / n as f64;
        assert!((0.08..0.12).contains(&share), "share {share}");
    }

    #[test]
    fn p2c_prefers_the_fast_and_idle() {
        let s = Selector::default();
        let c = [cand(0, 1, 0.200, 0), cand(1, 1, 0.010, 0)];
        assert!((0..100).all(|_| s.pick(Strategy::P2cEwma, &c) == 1));
        let busy = [cand(0, 1, 0.010, 50), cand(1, 1, 0.010, 0)];
        assert!((0..100).all(|_| s.pick(Strategy::P2cEwma, &busy) == 1));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let e = PeakEwma::default();
        let t = Instant::now();
        e.observe(Duration::from_millis(100), t);
        assert!((e.get(t) - 0.1).abs() < 1e-9);
        e.observe(Duration::from_millis(10), t + Duration::from_secs(10));
        let v = e.get(t + Duration::from_secs(10));
        assert!(v < 0.1 && v > 0.01, "{v}");
        let t2 = t + Duration::from_secs(11);
        e.observe(Duration::from_millis(500), t2);
        assert!((e.get(t2) - 0.5).abs() < 1e-9);
        assert!(e.get(t2 + Duration::from_secs(30)) < 0.05);
        e.reset();
        assert_eq!(e.get(t2), 0.0);
    }
}
