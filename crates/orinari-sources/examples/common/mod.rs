//! What the two sources benchmarks (`bench_sources`, `bench_dense`) share:
//! a deterministic random generator, percentiles of sorted timings, and
//! durations in milliseconds.
#![allow(dead_code, reason = "each benchmark uses its own part of this module")]

use std::time::Duration;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1), from 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-0.5, 0.5), from 24 bits (a vector component).
    pub fn centered(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

/// The `p` quantile (0..=1) of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
