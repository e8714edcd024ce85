//! Training the classifier (used by `examples/guard-train.rs`; pure
//! computation, deterministic for a given input order and seed):
//! logistic regression by AdaGrad SGD with L2, then a threshold picked on
//! held-out data for a target false-positive rate.

use crate::features::{self, Sparse};
use crate::model::Model;

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// log2 of the hash bucket count.
    pub log2_buckets: u32,
    /// Passes over the data.
    pub epochs: usize,
    /// AdaGrad base learning rate.
    pub learning_rate: f32,
    /// L2 penalty per example.
    pub l2: f32,
    /// Shuffle seed.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log2_buckets: 18,
            epochs: 2,
            learning_rate: 0.5,
            l2: 1e-6,
            seed: 0x6f72_696e_6172_6921,
        }
    }
}

/// Fit a model to (normalized text, is attack) pairs. The threshold is 0.5
/// until [`pick_threshold`] sets it.
pub fn fit(examples: &[(String, bool)], s: Settings) -> Model {
    let buckets = 1usize << s.log2_buckets;
    let xs: Vec<(Sparse, f32)> = examples
        .iter()
        .map(|(t, y)| {
            (
                features::extract(t, 1 << s.log2_buckets),
                f32::from(u8::from(*y)),
            )
        })
        .collect();
    let mut w = vec![0.0f32; buckets];
    let mut g2 = vec![1e-8f32; buckets];
    let (mut bias, mut bias_g2) = (0.0f32, 1e-8f32);
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = s.seed | 1;
    for _ in 0..s.epochs {
        // Fisher–Yates with xorshift64: reproducible without a dependency.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let (x, y) = &xs[i];
            let z = bias + x.iter().map(|&(b, v)| w[b as usize] * v).sum::<f32>();
            let p = 1.0 / (1.0 + (-z).exp());
            let err = p - y;
            for &(b, v) in x {
                let b = b as usize;
                let g = err * v + s.l2 * w[b];
                g2[b] += g * g;
                w[b] -= s.learning_rate * g / g2[b].sqrt();
            }
            bias_g2 += err * err;
            bias -= s.learning_rate * err / bias_g2.sqrt();
        }
    }
    Model {
        log2_buckets: s.log2_buckets,
        bias,
        weights: w,
        threshold: 0.5,
    }
}

/// The lowest threshold whose false-positive rate on every benign set is at
/// most `max_fpr` (each set: the probabilities of its benign texts).
pub fn pick_threshold(benign_sets: &[Vec<f32>], max_fpr: f64) -> f32 {
    let mut threshold = 0.0f32;
    for set in benign_sets {
        let mut scores = set.clone();
        scores.sort_by(|a, b| b.total_cmp(a));
        let allowed = (max_fpr * scores.len() as f64).floor() as usize;
        // Flag strictly above the (allowed+1)-th highest benign score.
        if let Some(&s) = scores.get(allowed) {
            threshold = threshold.max(next_up(s));
        }
    }
    threshold
}

fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}
